"""Stage sr: PSNR / SSIM, held-out split, SREngine's early stopping, checkpoint -> stage him, CLI."""
import json
import math
from pathlib import Path

import pytest
import torch
from synthetic import make_caviar

from jbim_reid.cli import main
from jbim_reid.engines import SREngine, distributed, sr_checkpoint_path
from jbim_reid.engines.sr_engine import split_holdout, sr_progress_path
from jbim_reid.metrics import psnr, ssim
from jbim_reid.models import PixelSpaceSR, build_sr
from jbim_reid.training.checks import ConfigError, load_config
from jbim_reid.training.runner import build_datamanager, build_model, run_stage
from jbim_reid.transforms import RandomResolution

CPU_CONFIG = str(Path(__file__).parent.parent / "configs" / "caviar" / "jbim_osnet_x0_25_cpu.yaml")
TINY = ["data.height", "32", "data.width", "16", "train.batch_size", "8", "sampler.num_instances", "2",
        "data.workers", "0", "train.print_freq", "100", "test.batch_size", "16"]


def test_psnr_and_ssim_known_values():
    a = torch.rand(2, 3, 16, 12)
    assert torch.allclose(psnr(a, a), torch.full((2,), 100.0))
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-6)
    grey, darker = torch.full((1, 3, 16, 16), 0.6), torch.full((1, 3, 16, 16), 0.5)
    assert psnr(grey, darker).item() == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    c1 = 0.01 ** 2  # flat images: only the luminance term (2 ab + C1) / (a^2 + b^2 + C1) is left
    assert ssim(grey, darker).item() == pytest.approx((2 * 0.3 + c1) / (0.36 + 0.25 + c1), rel=1e-5)
    noisy = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    assert (ssim(a, noisy) < 1).all() and (ssim(a, noisy) > ssim(a, torch.rand_like(a))).all()
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_split_holdout_is_deterministic_disjoint_and_sorted():
    paths = [f"img_{i:03d}.jpg" for i in range(50)]
    train, held = split_holdout(paths[::-1], 0.1)
    assert (train, held) == split_holdout(paths, 0.1)
    assert len(held) == 5 and not set(train) & set(held) and sorted(train + held) == paths
    assert held != paths[:5]  # a shuffled choice, not the first names
    assert len(split_holdout(paths[:3], 0.01)[1]) == 1  # at least one image held out
    with pytest.raises(ValueError, match="sr_holdout"):
        split_holdout(paths, 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        split_holdout(paths[:1], 0.1)


@pytest.fixture(scope="module")
def caviar_root(tmp_path_factory):
    return make_caviar(tmp_path_factory.mktemp("data"), num_two_cam=8, num_one_cam=1)


def config(caviar_root, save_dir, *opts):
    return load_config(CPU_CONFIG, ["data.root", str(caviar_root), "data.save_dir", str(save_dir),
                                    *TINY, *opts])


def test_sr_engine_stops_after_patience_and_keeps_the_best_weights(caviar_root, tmp_path, monkeypatch):
    cfg = config(caviar_root, tmp_path)
    dm = build_datamanager(cfg)
    torch.manual_seed(0)
    model = PixelSpaceSR(build_sr("srcnn_915"))
    engine = SREngine(dm, model, torch.optim.Adam(model.parameters(), lr=1e-2), batch_size=8)
    hr_paths = {p for p, *_ in dm.train_loader.dataset.train} - dm.train_loader.dataset.lr_paths
    assert set(engine.holdout_loader.dataset.paths) | set(engine.train_loader.dataset.paths) == hr_paths
    scores = iter([20.0, 21.0, 20.5, 20.9, 20.0, 25.0])  # epoch 0, 1 (best), then 3 without a gain
    weights = []
    evaluate = engine.evaluate

    def fake_evaluate():
        weights.append(model.sr.body[0].weight.detach().clone())
        return {**evaluate(), "psnr_sr": next(scores, 0.0)}

    monkeypatch.setattr(engine, "evaluate", fake_evaluate)
    results = engine.run(save_dir=str(tmp_path), max_epoch=10, patience=3)
    assert results["epochs"] == 4 and results["best_epoch"] == 1 and results["stopped_early"]
    assert [h["epoch"] for h in results["history"]] == [0, 1, 2, 3, 4]
    assert torch.equal(model.sr.body[0].weight, weights[1])  # back to epoch 1's weights
    saved = torch.load(sr_checkpoint_path(str(tmp_path)), weights_only=True)
    assert saved["epoch"] == 1 and saved["stage"] == "sr"
    assert torch.equal(saved["state_dict"]["sr.body.0.weight"], weights[1])


@pytest.mark.slow
def test_stage_sr_writes_psnr_and_its_checkpoint_initialises_stage_him(caviar_root, tmp_path):
    cfg = config(caviar_root, tmp_path, "jbim.sr", "srcnn_915", "jbim.sr_max_epoch", "2",
                 "jbim.train_ratios", "[0.5, 0.25]")
    dm = build_datamanager(cfg)
    engine, checkpoint = run_stage(cfg, dm, "sr", str(tmp_path / "stage_sr"))
    assert checkpoint == sr_checkpoint_path(str(tmp_path / "stage_sr"))
    results = json.loads((tmp_path / "stage_sr" / "results.json").read_text())
    assert results["stage"] == "sr" and results["sr"] == "srcnn_915" and results["trained"]
    assert set(results["ratios"]) == {"1/2", "1/4"}
    assert results["ratios"]["1/4"]["psnr_bicubic"] < results["ratios"]["1/2"]["psnr_bicubic"]
    assert results["psnr_sr"] >= results["history"][0]["psnr_sr"] - 1e-4  # best epoch, maybe 0
    assert results["psnr_gain"] == pytest.approx(results["psnr_sr"] - results["psnr_bicubic"])
    assert 0 < results["ssim_bicubic"] <= 1 and math.isfinite(results["seconds_per_epoch"])
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["sr"] == "srcnn_915" and saved["ratios"] == [0.5, 0.25]
    assert set(saved["state_dict"]) == {f"sr.{k}" for k in build_sr("srcnn_915").state_dict()}
    model = build_model(cfg, dm.num_train_pids, "him", sr_checkpoint=checkpoint)
    assert torch.equal(model.sr.body[0].weight, saved["state_dict"]["sr.body.0.weight"])
    assert torch.equal(model.sr.body[0].weight, engine.model.sr.body[0].weight)


def test_stage_sr_with_bicubic_only_evaluates(caviar_root, tmp_path):
    assert main(["train", "--config-file", CPU_CONFIG, "data.root", str(caviar_root), "data.save_dir",
                 str(tmp_path), *TINY, "jbim.sr", "bicubic", "jbim.stage", "sr"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["trained"] is False and results["checkpoint"] == "" and results["epochs"] == 0
    assert results["psnr_sr"] == pytest.approx(results["psnr_bicubic"])
    assert not Path(sr_checkpoint_path(str(tmp_path))).exists()


def test_sr_targets_are_never_resolution_augmented(caviar_root, tmp_path):
    """With ``random_resolution`` in ``data.transforms`` the re-id streams get it, SR's HR targets not."""
    cfg = config(caviar_root, tmp_path, "data.transforms", "['random_flip', 'random_resolution']")
    dm = build_datamanager(cfg)
    steps = dm.transform_tr.transforms
    assert isinstance(steps[0], RandomResolution)
    model = PixelSpaceSR(build_sr("srcnn_915"))
    engine = SREngine(dm, model, torch.optim.Adam(model.parameters()), batch_size=8)
    sr_steps = engine.train_loader.dataset.transform.transforms
    assert not any(isinstance(t, RandomResolution) for t in sr_steps)
    assert [type(t) for t in sr_steps] == [type(t) for t in steps[1:]]
    assert dm.transform_tr.transforms is steps and isinstance(steps[0], RandomResolution)  # left as it was


def test_stage_sr_under_torchrun_writes_on_rank_0_only_and_waits_for_it(caviar_root, tmp_path, monkeypatch):
    """Ranks other than 0 train but write nothing, and every rank leaves through the barrier."""
    barriers = []
    monkeypatch.setattr(distributed, "barrier", lambda: barriers.append(distributed.get_rank()))
    cfg = config(caviar_root, tmp_path, "jbim.sr", "srcnn_915", "jbim.sr_max_epoch", "1")
    dm = build_datamanager(cfg)
    monkeypatch.setattr(distributed, "get_rank", lambda: 1)
    _, checkpoint = run_stage(cfg, dm, "sr", str(tmp_path / "rank1"))
    assert checkpoint == sr_checkpoint_path(str(tmp_path / "rank1")) and barriers == [1]
    assert not (tmp_path / "rank1").exists()  # neither the checkpoint, the progress file nor results.json
    monkeypatch.setattr(distributed, "get_rank", lambda: 0)
    _, checkpoint = run_stage(cfg, dm, "sr", str(tmp_path / "rank0"))
    assert barriers == [1, 0] and Path(checkpoint).is_file()
    assert Path(sr_progress_path(str(tmp_path / "rank0"))).is_file()
    assert (tmp_path / "rank0" / "results.json").is_file()


@pytest.mark.parametrize("opts,match", [
    (["jbim.stage", "sr", "jbim.variant", "lim"], "has no|does not have"),
    (["jbim.train_ratios", "[0.5, 1.5]"], "train_ratios"),
    (["jbim.sr_patience", "0"], "sr_patience"),
    (["jbim.sr_holdout", "1.0"], "sr_holdout"),
])
def test_stage_sr_config_errors(opts, match):
    with pytest.raises(ConfigError, match=match):
        load_config("", opts)


def test_stage_sr_is_a_valid_stage_and_train_ratios_reach_the_model():
    cfg = load_config("", ["model.pretrained", "False", "jbim.stage", "sr", "jbim.train_ratios", "[0.5, 0.25]",
                           "data.height", "32",
                           "data.width", "16", "model.name", "osnet_x0_25",
                           "data.norm_mean", "[0.5, 0.5, 0.5]"])
    model = build_model(cfg, 3)
    assert model.train_ratios == [0.5, 0.25] and model.jbim_kwargs["norm_mean"] == [0.5, 0.5, 0.5]
    assert build_model(load_config("", ["model.name", "osnet_x0_25", "model.pretrained", "False"]),
                       3).train_ratios == [0.5]


def test_interrupted_stage_sr_continues_from_its_last_epoch(caviar_root, tmp_path, capsys):
    """A stage sr stopped after epoch 1 of 3 continues at epoch 2 and ends like an uninterrupted run."""
    opts = ("jbim.sr", "srcnn_915", "jbim.sr_patience", "5", "model.pretrained", "False")
    whole = config(caviar_root, tmp_path / "whole", "jbim.sr_max_epoch", "3", *opts)
    _, reference = run_stage(whole, build_datamanager(whole), "sr", str(tmp_path / "whole"))
    cut = config(caviar_root, tmp_path / "cut", "jbim.sr_max_epoch", "1", *opts)
    run_stage(cut, build_datamanager(cut), "sr", str(tmp_path / "cut"))
    assert torch.load(sr_progress_path(str(tmp_path / "cut")), weights_only=True)["epoch"] == 1
    rest = config(caviar_root, tmp_path / "cut", "jbim.sr_max_epoch", "3", *opts)
    capsys.readouterr()
    _, resumed = run_stage(rest, build_datamanager(rest), "sr", str(tmp_path / "cut"))
    assert "continuing after epoch 1" in capsys.readouterr().out
    results = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [0, 1, 2, 3]  # epoch 1 was not trained again
    expected = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert results["psnr_sr"] == pytest.approx(expected["psnr_sr"], abs=1e-4)
    ours, theirs = torch.load(resumed, weights_only=True), torch.load(reference, weights_only=True)
    for key, value in theirs["state_dict"].items():
        assert torch.allclose(ours["state_dict"][key], value, atol=1e-6), key
