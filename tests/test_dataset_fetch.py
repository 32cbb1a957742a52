"""Datasets that fetch themselves (torchreid's dataset_url convention) from a local HTTP server."""
import io
import os
import time
import zipfile
from pathlib import Path

import pytest
from http_server import LocalServer, refused_url
from synthetic import make_caviar, make_viper

from jbim_reid.cli import main
from jbim_reid.datasets import CAVIAR, MLRMarket1501, MLRVIPeR
from jbim_reid.datasets.fetch import DatasetUnavailableError
from jbim_reid.models import imagenet

MAIN_JOB_CONFIG = str(Path(__file__).parent.parent / "configs" / "caviar" / "jbim_mobilenetv2_cpu.yaml")


def zip_folder(folder: Path) -> bytes:
    """A zip of everything under ``folder``, paths relative to it (the official archives' layout)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def caviar_zip(tmp_path_factory) -> bytes:
    """CAVIAR4REID.zip as its authors lay it out: ``CAVIAR4REID/cropped_images/PPPPNNN.jpg``."""
    src = make_caviar(tmp_path_factory.mktemp("caviar_src"), num_two_cam=6, num_one_cam=2)
    return zip_folder(src / "caviar")


def leftovers(root: Path):
    """Anything under ``root`` but the dataset folders, the split cache and the download lock."""
    return sorted(p.name for p in root.iterdir()
                  if p.name not in ("caviar", "viper", "jbim_cache") and not p.name.endswith(".lock"))


def test_missing_dataset_is_downloaded_unpacked_and_split(caviar_zip, tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    with LocalServer({"/CAVIAR4REID.zip": caviar_zip}) as server:
        monkeypatch.setattr(CAVIAR, "dataset_url", server.url("/CAVIAR4REID.zip"))
        dataset = CAVIAR(root=str(root), split_id=0)
        assert server.requests == ["/CAVIAR4REID.zip"]
        assert len(list((root / "caviar" / "CAVIAR4REID" / "cropped_images").glob("*.jpg"))) == 6 * 20 + 2 * 10
        assert dataset.num_train_pids == 3 and len(dataset.train) == 3 * 20
        assert len(dataset.query) == 3 * 10 and len(dataset.gallery) == 3
        assert not leftovers(root)
        mask = os.umask(0)
        os.umask(mask)
        assert (root / "caviar").stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's 0700
        CAVIAR(root=str(root), split_id=1)
        assert len(server.requests) == 1  # present now: not fetched again
    assert "downloading" in capsys.readouterr().out


def test_interrupted_download_leaves_nothing_and_the_next_run_retries(caviar_zip, tmp_path, monkeypatch):
    root = tmp_path / "data"
    with LocalServer({"/CAVIAR4REID.zip": caviar_zip}) as server:
        server.truncate["/CAVIAR4REID.zip"] = 1  # the server closes the connection mid-file once
        monkeypatch.setattr(CAVIAR, "dataset_url", server.url("/CAVIAR4REID.zip"))
        with pytest.raises(DatasetUnavailableError) as info:
            CAVIAR(root=str(root))
        assert "data.root" in str(info.value) and "cropped_images" in str(info.value)
        assert not (root / "caviar").exists() and not leftovers(root)
        dataset = CAVIAR(root=str(root))
        assert len(server.requests) == 2 and len(dataset.train) == 3 * 20
        assert not leftovers(root)


def test_a_page_instead_of_an_archive_names_the_homepage_and_layout(tmp_path, monkeypatch):
    root = tmp_path / "data"
    page = b"<!DOCTYPE html><html><body>CAVIAR4REID: download the zip here</body></html>"
    with LocalServer({"/caviar4reid.html": page}) as server:
        monkeypatch.setattr(CAVIAR, "dataset_url", server.url("/caviar4reid.html"))
        with pytest.raises(DatasetUnavailableError, match="HTML page") as info:
            CAVIAR(root=str(root))
    assert CAVIAR.homepage in str(info.value) and "caviar/CAVIAR4REID/cropped_images" in str(info.value)
    assert not (root / "caviar").exists() and not leftovers(root)


def test_archive_without_the_expected_layout_is_refused(tmp_path, monkeypatch):
    src = make_caviar(tmp_path / "src", num_two_cam=2, num_one_cam=0)
    flat = zip_folder(src / "caviar" / "CAVIAR4REID")  # cropped_images/ at the top: one level short
    root = tmp_path / "data"
    with LocalServer({"/c.zip": flat}) as server:
        monkeypatch.setattr(CAVIAR, "dataset_url", server.url("/c.zip"))
        with pytest.raises(DatasetUnavailableError, match="lacks 'caviar/CAVIAR4REID/cropped_images'"):
            CAVIAR(root=str(root))
    assert not (root / "caviar").exists() and not leftovers(root)


def test_mlr_viper_fetches_torchreids_viper_zip(tmp_path, monkeypatch):
    src = make_viper(tmp_path / "src", num_ids=12)
    root = tmp_path / "data"
    with LocalServer({"/VIPeR.v1.0.zip": zip_folder(src / "viper")}) as server:
        monkeypatch.setattr(MLRVIPeR, "dataset_url", server.url("/VIPeR.v1.0.zip"))
        dataset = MLRVIPeR(root=str(root), split_id=0)
    assert (root / "viper" / "VIPeR" / "cam_a").is_dir() and dataset.num_train_pids == 6
    assert not leftovers(root)


def test_dataset_without_public_download_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        MLRMarket1501(root=str(tmp_path))
    message = str(info.value)
    assert "liangzheng.org" in message and "bounding_box_train" in message and "data.root" in message


def test_main_job_offline_stops_in_seconds_naming_data_root(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(CAVIAR, "dataset_url", refused_url())
    start = time.monotonic()
    code = main(["train", "--config-file", MAIN_JOB_CONFIG, "data.root", str(tmp_path / "data"),
                 "data.save_dir", str(tmp_path / "log")])
    assert code == 2 and time.monotonic() - start < 10
    assert "data.root" in capsys.readouterr().err


def test_main_job_offline_with_data_stops_in_seconds_naming_pretrained_path(tmp_path, monkeypatch,
                                                                           capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setitem(imagenet.URL_OVERRIDES, "mobilenetv2_x1_0", refused_url())
    root = make_caviar(tmp_path / "data", num_two_cam=16, num_one_cam=0)  # 8 train ids: one batch
    start = time.monotonic()
    code = main(["train", "--config-file", MAIN_JOB_CONFIG, "data.root", str(root),
                 "data.save_dir", str(tmp_path / "log"), "data.workers", "0"])
    assert code == 2 and time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert "model.pretrained_path" in err and "mobilenetv2_x1_0" in err
