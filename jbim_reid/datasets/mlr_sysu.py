"""MLR-SYSU: SYSU-ReID with one camera downsampled."""
import os
import os.path as osp
import re
from typing import List

from jbim_reid.datasets.mlr_builder import MLRDataset, layout_error
from jbim_reid.datasets.splits import Record

__all__ = ["MLRSYSU"]

_FLAT = re.compile(r"^(\d+)_(\d+)\.(jpe?g|png|bmp)$", re.IGNORECASE)
_IMAGE = re.compile(r"\.(jpe?g|png|bmp)$", re.IGNORECASE)
_CAMS = ("cam_a", "cam_b")


class MLRSYSU(MLRDataset):
    """MLR-SYSU (SYSU-ReID, simulated multiple low resolutions).

    Reference:
        Chen et al. Mirror Representation for Modeling View-Specific Transform in Person
        Re-Identification. IJCAI 2015 (SYSU-ReID). MLR protocol: Jiao et al. AAAI 2018.

    Disk layout accepted (one folder per camera; either form, or both mixed)::

        <root>/sysu/SYSU-ReID/cam_a/PPPP_NN.jpg          camid 0   (flat: id PPPP, image NN)
        <root>/sysu/SYSU-ReID/cam_b/PPPP_NN.jpg          camid 1
        <root>/sysu/SYSU-ReID/cam_a/PPPP/<any>.jpg       camid 0   (one sub-folder per id PPPP)
        <root>/sysu/SYSU-ReID/cam_b/PPPP/<any>.jpg       camid 1

    ``PPPP`` is an integer id shared by both cameras; ``.jpg``, ``.png`` and ``.bmp`` are read.

    Protocol (Jiao et al.): 3 random images per person per camera (``images_per_camera=3``) and
    one random LR camera per split (``lr_mode='random_camera'``), both drawn from the split's seed
    and recorded in its JSON (the drawn camera under ``drawn.lr_camid``); ids seen by both cameras
    (502) split 251 / 251; probe = the 3 LR images of each test id, gallery = one random image of
    the other camera per test id. 10 splits. ``lr_mode='camera'`` with ``lr_camid`` fixes the LR
    camera instead; ``images_per_camera=0`` keeps every image.

    Dataset statistics:
        - identities: 502; images: 502 x 2 cameras x 3 = 3,012; cameras: 2.
    """

    name = "mlr_sysu"
    required = ("sysu/SYSU-ReID/cam_a", "sysu/SYSU-ReID/cam_b")
    layout = ("  sysu/SYSU-ReID/cam_a/PPPP_NN.jpg  or  sysu/SYSU-ReID/cam_a/PPPP/<any>.jpg\n"
              "  sysu/SYSU-ReID/cam_b/PPPP_NN.jpg  or  sysu/SYSU-ReID/cam_b/PPPP/<any>.jpg")
    homepage = ("the authors of Chen et al., Mirror Representation for Modeling View-Specific "
                "Transform in Person Re-Identification, IJCAI 2015 (SYSU-ReID, on request)")
    default_lr_mode = "random_camera"
    default_images_per_camera = 3

    def collect(self) -> List[Record]:
        records = []
        base = "sysu/SYSU-ReID"
        for camid, cam in enumerate(_CAMS):
            folder = osp.join(self.root, base, cam)
            for entry in sorted(os.listdir(folder)):
                path = osp.join(folder, entry)
                if osp.isdir(path):
                    if not entry.isdigit():
                        raise ValueError(f"mlr_sysu: id folder '{path}' is not an integer id")
                    for fname in sorted(os.listdir(path)):
                        if _IMAGE.search(fname):
                            records.append(Record(f"{base}/{cam}/{entry}/{fname}", str(int(entry)), camid))
                elif _IMAGE.search(entry):
                    match = _FLAT.match(entry)
                    if match is None:
                        raise ValueError(f"mlr_sysu: unexpected file name '{path}'; expected PPPP_NN.<ext>")
                    records.append(Record(f"{base}/{cam}/{entry}", str(int(match.group(1))), camid))
        if not records:
            raise layout_error("MLRSYSU", osp.join(self.root, base, "cam_a", "*"), self.root, self.layout)
        return records
