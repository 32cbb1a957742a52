"""CMC plots are written as non-empty PNG files (jbim_reid.evaluation.plots)."""
import numpy as np
import pytest
from PIL import Image

from jbim_reid.evaluation.plots import plot_cmc, plot_cmc_comparison

CMC = np.linspace(0.4, 1.0, 25).astype(np.float32)


def _assert_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("L"))
    assert pixels.min() < 128  # something dark was drawn on the white canvas


def test_plot_cmc_writes_png(tmp_path):
    path = plot_cmc(CMC, tmp_path / "run" / "cmc.png", label="JBIM 1/2")
    assert path == tmp_path / "run" / "cmc.png"
    _assert_png(path)


def test_plot_cmc_comparison_writes_png(tmp_path):
    curves = {"1/2": CMC, "1/3": CMC * 0.9, "all": np.ones(5)}  # a short CMC is fine
    path = plot_cmc_comparison(curves, tmp_path / "cmc_anchors.png", max_rank=10)
    _assert_png(path)


def test_plot_errors(tmp_path):
    with pytest.raises(ValueError, match="curves is empty"):
        plot_cmc_comparison({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"CMC of 'pct' must hold fractions in \[0, 1\]"):
        plot_cmc(CMC * 100, tmp_path / "x.png", label="pct")
    with pytest.raises(ValueError, match="max_rank must be >= 1"):
        plot_cmc(CMC, tmp_path / "x.png", max_rank=0)
    assert not (tmp_path / "x.png").exists()
