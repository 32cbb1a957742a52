"""CAVIAR4REID: genuine cross-resolution re-id."""
import os
import os.path as osp
import re
from typing import List

from jbim_reid.datasets.mlr_builder import MLRDataset, layout_error
from jbim_reid.datasets.protocol import MLRProtocol
from jbim_reid.datasets.splits import Record

__all__ = ["CAVIAR"]

_NAME = re.compile(r"^(\d{4})_?(\d{3})\.jpe?g$", re.IGNORECASE)


class CAVIAR(MLRDataset):
    """CAVIAR4REID (genuine low resolution).

    Reference:
        Cheng et al. Custom Pictorial Structures for Re-identification. BMVC 2011.
        Cross-resolution protocol: Jiao et al. AAAI 2018; Zheng et al. (JBIM) IJCV 2021.

    URL: `<https://lorisbaz.github.io/caviar4reid.html>`_ (``dataset_url``: a missing
    ``<root>/caviar`` is fetched from it and unpacked; the authors distribute the images as a zip
    holding ``CAVIAR4REID/cropped_images/``. Set ``CAVIAR.dataset_url`` to that zip's address or a
    mirror; a page that is not an archive stops with instructions to lay the folder out by hand.)

    Disk layout::

        <root>/caviar/CAVIAR4REID/cropped_images/PPPPNNN.jpg   (also PPPP_NNN.jpg)

    ``PPPP`` is the person id, ``NNN`` the image index: 001-010 come from the close (HR) camera
    (camid 0), 011-020 from the distant (LR) camera (camid 1).

    Protocol: the 22 one-camera ids are discarded; the 50 two-camera ids are split 25 / 25. The
    LR side is genuine (no downsampling): probe = the 10 camera-1 images of each test id; gallery =
    one random camera-0 image per test id (``gallery='one_random'``) or all 10 (``'all'``). Training
    uses all 20 images of each training id. Only ``lr_mode='camera'`` with ``lr_camid=1`` applies;
    ``ratios``, ``ratio_per``, ``interpolation`` and ``train_lr`` are recorded but unused.

    Dataset statistics:
        - identities: 72 (50 seen by both cameras).
        - images: 1,220 (50 x 20 + 22 x 10); heights 39-150 px.
        - split: 25 train ids (500 images), 250 probes, 25 gallery images; 10 splits.

    Examples::

        ds = CAVIAR(root='data', split_id=0)           # or ImageDataManager(sources='caviar')
        ds[0]['hw'], ds[0]['is_lr']                    # genuine (h, w) on disk, LR side or not
    """

    name = "caviar"
    required = ("caviar/CAVIAR4REID/cropped_images",)
    layout = ("  caviar/CAVIAR4REID/cropped_images/PPPPNNN.jpg  (or PPPP_NNN.jpg)\n"
              "  PPPP: person id; NNN: 001-010 close (HR) camera, 011-020 distant (LR) camera")
    dataset_url = "https://lorisbaz.github.io/caviar4reid.html"
    homepage = "https://lorisbaz.github.io/caviar4reid.html"
    default_lr_mode = "camera"
    lr_modes = ("camera",)
    simulate = False

    @classmethod
    def check_protocol(cls, protocol: MLRProtocol) -> None:
        super().check_protocol(protocol)
        if protocol.lr_camid != 1:
            raise ValueError(f"caviar: lr_camid {protocol.lr_camid} is not supported; the genuine LR "
                             "camera is camid 1 (images 011-020)")

    def collect(self) -> List[Record]:
        folder = osp.join(self.root, self.required[0])
        records, seen = [], {}  # seen: (pid, index) -> file name
        for fname in sorted(os.listdir(folder)):
            if not fname.lower().endswith((".jpg", ".jpeg")):
                continue
            match = _NAME.match(fname)
            if match is None:
                raise ValueError(f"caviar: unexpected file name '{osp.join(folder, fname)}'; "
                                 "expected PPPPNNN.jpg or PPPP_NNN.jpg")
            pid, idx = int(match.group(1)), int(match.group(2))
            if not 1 <= idx <= 20:
                raise ValueError(f"caviar: image index {idx} of '{osp.join(folder, fname)}' is outside 001-020")
            if (pid, idx) in seen:
                raise ValueError(f"caviar: '{seen[pid, idx]}' and '{fname}' in '{folder}' are the same image "
                                 f"(person {pid:04d}, index {idx:03d}) under two names; delete one of them")
            seen[pid, idx] = fname
            records.append(Record(osp.join(self.required[0], fname), f"{pid:04d}", 0 if idx <= 10 else 1))
        if not records:
            raise layout_error("CAVIAR", osp.join(folder, "*.jpg"), self.root, self.layout)
        return records
