"""Tiny synthetic datasets in the official on-disk layouts, for unit tests.

Each person gets its own colour so that a model can, in principle, tell ids apart; images are a few
pixels large so that building a fixture takes milliseconds.
"""
import os
from pathlib import Path
from typing import Tuple

import numpy as np
from PIL import Image


# the OSNet-x0.25 CPU config and options that make its whole staged recipe train in seconds on the
# synthetic trees below (32x16 input, one epoch per stage)
CPU_CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "caviar" / "jbim_osnet_x0_25_cpu.yaml")
TINY_OPTIONS = ["data.height", "32", "data.width", "16", "train.max_epoch", "1", "train.batch_size", "8",
                "sampler.num_instances", "2", "data.workers", "0", "train.print_freq", "100",
                "test.batch_size", "16", "jbim.sr_max_epoch", "1"]


def person_image(pid: int, size: Tuple[int, int], seed: int = 0) -> Image.Image:
    """An RGB image of ``size`` (h, w): a per-id colour plus a little noise."""
    h, w = size
    rng = np.random.default_rng(pid * 1000 + seed)
    base = np.array([(pid * 37) % 256, (pid * 91) % 256, (pid * 53) % 256], dtype=np.float64)
    img = base + rng.normal(0, 12, size=(h, w, 3))
    img[: h // 2] *= 0.6  # a darker "upper body" so images are not flat
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def make_caviar(root: os.PathLike, num_two_cam: int = 6, num_one_cam: int = 2,
                hr_size=(96, 40), lr_size=(40, 16), underscore: bool = False) -> Path:
    """CAVIAR4REID: ``caviar/CAVIAR4REID/cropped_images/PPPPNNN.jpg`` (or ``PPPP_NNN.jpg``).

    Two-camera ids have 20 images (001-010 HR camera, 011-020 LR camera); one-camera ids have 10.
    """
    folder = Path(root) / "caviar" / "CAVIAR4REID" / "cropped_images"
    sep = "_" if underscore else ""
    for pid in range(1, num_two_cam + num_one_cam + 1):
        count = 20 if pid <= num_two_cam else 10
        for n in range(1, count + 1):
            size = hr_size if n <= 10 else lr_size
            _save(person_image(pid, size, seed=n), folder / f"{pid:04d}{sep}{n:03d}.jpg")
    return Path(root)


def make_viper(root: os.PathLike, num_ids: int = 12, size=(128, 48)) -> Path:
    """VIPeR: ``viper/VIPeR/cam_{a,b}/NNN_ANGLE.bmp``, one image per id per camera."""
    base = Path(root) / "viper" / "VIPeR"
    for pid in range(num_ids):
        _save(person_image(pid, size, seed=0), base / "cam_a" / f"{pid:03d}_0.bmp")
        _save(person_image(pid, size, seed=1), base / "cam_b" / f"{pid:03d}_90.bmp")
    return Path(root)


def make_prid(root: os.PathLike, num_shared: int = 10, extra_a: int = 3, extra_b: int = 5,
              size=(128, 64)) -> Path:
    """PRID 2011 single-shot: ``prid2011/prid_2011/single_shot/cam_{a,b}/person_NNNN.png``.

    Ids 1..num_shared appear in both cameras; the rest in one camera only.
    """
    base = Path(root) / "prid2011" / "prid_2011" / "single_shot"
    for pid in range(1, num_shared + extra_a + 1):
        _save(person_image(pid, size, seed=0), base / "cam_a" / f"person_{pid:04d}.png")
    for pid in range(1, num_shared + extra_b + 1):
        _save(person_image(pid, size, seed=1), base / "cam_b" / f"person_{pid:04d}.png")
    return Path(root)


def make_market1501(root: os.PathLike, num_ids: int = 8, cams: int = 3, per_cam: int = 2,
                    size=(128, 64)) -> Path:
    """Market-1501: ``market1501/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}``.

    File names follow ``PPPP_cCsS_FFFFFF_NN.jpg``; the first half of the ids are training ids.
    """
    base = Path(root) / "market1501" / "Market-1501-v15.09.15"
    for pid in range(1, num_ids + 1):
        train = pid <= num_ids // 2
        for c in range(1, cams + 1):
            for k in range(per_cam):
                name = f"{pid:04d}_c{c}s1_{k:06d}_00.jpg"
                img = person_image(pid, size, seed=c * 10 + k)
                if train:
                    _save(img, base / "bounding_box_train" / name)
                elif c == 1 and k == 0:
                    _save(img, base / "query" / name)
                else:
                    _save(img, base / "bounding_box_test" / name)
    return Path(root)


def make_cuhk03(root: os.PathLike, num_pairs: int = 2, ids_per_pair: int = 53, per_view: int = 2,
                size=(16, 8)) -> Path:
    """CUHK03 as torchreid's processing leaves it: ``cuhk03/images_{labeled,detected}/P_III_V_NN.png``.

    Also writes small ``splits_new_{labeled,detected}.json`` files like torchreid's (unused by
    ``mlr_cuhk03``) so the tree has the processed layout without any ``.mat`` file.
    """
    import json

    base = Path(root) / "cuhk03"
    for kind in ("labeled", "detected"):
        items = []
        for pair in range(1, num_pairs + 1):
            for pid in range(1, ids_per_pair + 1):
                for view in (1, 2):
                    for k in range(per_view):
                        index = (view - 1) * 5 + k + 1
                        name = f"{pair}_{pid:03d}_{view}_{index:02d}.png"
                        path = base / f"images_{kind}" / name
                        _save(person_image(pair * 1000 + pid, size, seed=index), path)
                        items.append([str(path), pair * 1000 + pid, view - 1])
        split = [{"train": items, "query": items[:1], "gallery": items[1:2]}]
        (base / f"splits_new_{kind}.json").write_text(json.dumps(split))
    return Path(root)


def make_sysu(root: os.PathLike, num_ids: int = 8, per_cam: int = 3, size=(64, 32),
              per_id_folders: bool = False) -> Path:
    """SYSU-ReID as ``mlr_sysu`` accepts it: ``sysu/SYSU-ReID/cam_{a,b}/PPPP_NN.jpg``.

    With ``per_id_folders`` the images are ``cam_{a,b}/PPPP/NN.jpg`` instead.
    """
    base = Path(root) / "sysu" / "SYSU-ReID"
    for pid in range(1, num_ids + 1):
        for c, cam in enumerate(("cam_a", "cam_b")):
            for k in range(1, per_cam + 1):
                rel = f"{pid:04d}/{k:02d}.jpg" if per_id_folders else f"{pid:04d}_{k:02d}.jpg"
                _save(person_image(pid, size, seed=c * 10 + k), base / cam / rel)
    return Path(root)
