"""Bad input of ``jbim-reid index build / search`` is one line naming the file, exit code 2: checkpoints that
are not JBIM checkpoints or give NaN features, an --out that is a file, damaged index files, image bombs."""
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchreid
from PIL import Image
from synthetic import person_image

from jbim_reid import CrossResolutionMatcher
from jbim_reid.cli import main
from jbim_reid.deploy.index import build_index, list_gallery
from jbim_reid.models import JBIM

pytest.importorskip("faiss")


def save_checkpoint(folder: Path, seed: int = 0, nan: bool = False) -> Path:
    """A tiny JBIM checkpoint; ``nan`` fills every weight with NaN."""
    torch.manual_seed(seed)
    model = JBIM(num_classes=3, backbone="osnet_x0_25", sr="espcn", ratio=0.5, height=64, width=32).eval()
    if nan:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(math.nan)
    torchreid.utils.save_checkpoint({"state_dict": model.state_dict(), "epoch": 1,
                                     "jbim_kwargs": model.jbim_kwargs}, str(folder))
    return folder / "model.pth.tar-1"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A gallery of 4 images, a probe, a checkpoint and the index built from them."""
    tmp = tmp_path_factory.mktemp("built")
    (tmp / "gallery").mkdir()
    for pid in range(4):
        person_image(pid, (96, 40), seed=pid).save(tmp / "gallery" / f"{pid}.png")
    person_image(1, (24, 12), seed=9).save(tmp / "probe.png")
    ckpt = save_checkpoint(tmp / "ckpt")
    build_index([str(ckpt)], list_gallery(str(tmp / "gallery")), str(tmp / "index"), progress=False)
    return tmp


@pytest.fixture
def index(built, tmp_path):
    shutil.copytree(built / "index", tmp_path / "index")
    return tmp_path / "index"


def assert_one_line(code, capsys, *named):
    assert code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]  # besides the progress bar
    assert "Traceback" not in err and len(errors) == 1, err
    for text in named:
        assert text in errors[0], err


def with_nan(array):
    array = array.copy()
    array[1, 0] = np.nan
    return array


DAMAGE = {  # kind -> (index file, damage, what the error says)
    "garbage index.json": ("index.json", lambda p: p.write_text("{garbage"), "not valid JSON"),
    "empty index.json": ("index.json", lambda p: p.write_text(""), "not valid JSON"),
    "index.json without its keys": ("index.json", lambda p: p.write_text('{"format": 1}'), "not a complete"),
    "garbage gallery_paths.json": ("gallery_paths.json", lambda p: p.write_text("[1,"), "not valid JSON"),
    "truncated features": ("features_0.npy", lambda p: p.write_bytes(p.read_bytes()[:-40]), "damaged"),
    "empty hw": ("hw.npy", lambda p: p.write_bytes(b""), "damaged"),
    "features of too few images": ("features_0.npy", lambda p: np.save(p, np.load(p)[:-1]), "shape"),
    "1-d features": ("features_0.npy", lambda p: np.save(p, np.load(p)[:, 0]), "shape"),
    "hw of the wrong shape": ("hw.npy", lambda p: np.save(p, np.load(p)[:, :1]), "shape"),
    "NaN features": ("features_0.npy", lambda p: np.save(p, with_nan(np.load(p))), "NaN or infinite"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_index_file_is_named(kind, index, built, capsys):
    name, damage, named = DAMAGE[kind]
    damage(index / name)
    code = main(["index", "search", str(index), str(built / "probe.png")])
    assert_one_line(code, capsys, f"'{index / name}'", named)


def test_decompression_bomb_probe_is_named(index, built, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the 24 x 12 probe is then a bomb
    code = main(["index", "search", str(index), str(built / "probe.png")])
    assert_one_line(code, capsys, str(built / "probe.png"), "decompression bomb")


def build(built, tmp_path, checkpoint, out=None):
    out = out or tmp_path / "new_index"
    return main(["index", "build", "--checkpoints", str(checkpoint), "--gallery", str(built / "gallery"),
                 "--out", str(out)])


def test_plain_state_dict_is_refused_and_leaves_no_out_folder(built, tmp_path, capsys):
    plain = tmp_path / "plain.pth"
    torch.save(JBIM(num_classes=3, backbone="osnet_x0_25", height=64, width=32).state_dict(), plain)
    assert_one_line(build(built, tmp_path, plain), capsys, f"'{plain}'", "not a JBIM checkpoint")
    assert not (tmp_path / "new_index").exists()


def test_checkpoint_with_nan_weights_is_refused_and_leaves_no_out_folder(built, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "nan", nan=True)
    assert_one_line(build(built, tmp_path, ckpt), capsys, f"'{ckpt}'", "NaN or infinite")
    assert not (tmp_path / "new_index").exists()


def test_nan_features_of_one_image_name_the_image(built, tmp_path, capsys, monkeypatch):
    original = CrossResolutionMatcher._features

    def one_nan(self, model, images, role):
        feats = original(self, model, images, role).clone()
        feats[1] = math.nan
        return feats

    monkeypatch.setattr(CrossResolutionMatcher, "_features", one_nan)
    code = build(built, tmp_path, built / "ckpt" / "model.pth.tar-1")
    assert_one_line(code, capsys, f"gallery[1] '{built / 'gallery' / '1.png'}'", "NaN or infinite")


def test_out_naming_a_file_is_one_line(built, tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    assert_one_line(build(built, tmp_path, built / "ckpt" / "model.pth.tar-1", out=target), capsys,
                    f"--out '{target}' is a file")
    assert target.read_text() == "keep me"
