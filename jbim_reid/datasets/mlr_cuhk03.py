"""MLR-CUHK03: CUHK03 (labeled + detected) with one camera of each pair downsampled."""
import glob
import json
import os.path as osp
import re
from typing import List, Sequence, Set

from jbim_reid.datasets.mlr_builder import MLRDataset, layout_error
from jbim_reid.datasets.splits import Record

__all__ = ["MLRCUHK03"]

# torchreid's CUHK03 extraction names images {pair}_{pid:03d}_{view}_{index:02d}.png
_NAME = re.compile(r"^(\d)_(\d{3})_([12])_(\d{2})\.png$")
_FOLDERS = ("cuhk03/images_labeled", "cuhk03/images_detected")
# torchreid's 20 classic splits (Li et al. CVPR 2014, the .mat file's testsets), labeled first
_CLASSIC = ("cuhk03/splits_classic_labeled.json", "cuhk03/splits_classic_detected.json")


class MLRCUHK03(MLRDataset):
    """MLR-CUHK03 (simulated multiple low resolutions), on torchreid's processed CUHK03.

    Reference:
        Li et al. DeepReID: Deep Filter Pairing Neural Network for Person Re-identification. CVPR 2014.
        MLR protocol: Jiao et al. AAAI 2018; Zheng et al. (JBIM) IJCV 2021.

    Disk layout: the output of torchreid's ``CUHK03`` processing (run
    ``torchreid.data.datasets.image.CUHK03(root=R)`` once on the raw ``cuhk03_release/cuhk-03.mat``
    to create it)::

        <root>/cuhk03/images_labeled/P_III_V_NN.png
        <root>/cuhk03/images_detected/P_III_V_NN.png

    ``P``: camera pair 1-5, ``III``: person index within the pair, ``V``: view 1-2, ``NN``: image.
    A person is ``(P, III)``; its labeled and detected images are pooled. camid = ``2 * (P - 1) + (V - 1)``
    (10 cameras). The split JSONs torchreid writes next to the folders are used only by
    ``id_split='official'``.

    Protocol: 1,467 ids split 1,367 / 100, at random per split or as published
    (``id_split='official'``: split k's 100 test ids are those of CUHK03's k-th classic split, read
    from torchreid's ``cuhk03/splits_classic_labeled.json``, else ``..._detected.json``). Default
    ``lr_mode='camera_pair'``: for each camera pair one of its two cameras (drawn per split) is
    downsampled; probe = the LR images of each test id, gallery = one random HR image per test id
    (other camera of its pair). 10 splits. torchreid's
    ``cuhk03_labeled`` / ``cuhk03_classic_split`` arguments are ignored.

    Dataset statistics:
        - identities: 1,467; images: 14,097 labeled + 14,097 detected (approx.); cameras: 10 (5 pairs).
    """

    name = "mlr_cuhk03"
    required = _FOLDERS
    layout = ("  cuhk03/images_labeled/P_III_V_NN.png\n  cuhk03/images_detected/P_III_V_NN.png\n"
              "  (torchreid's processed CUHK03: run torchreid.data.datasets.image.CUHK03(root=<root>) once)")
    homepage = ("http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html (cuhk03_release.zip; "
                "unpack it to <root>/cuhk03/cuhk03_release/cuhk-03.mat, then run torchreid's CUHK03 once)")
    default_lr_mode = "camera_pair"
    lr_modes = ("camera_pair", "camera", "per_id", "half_images")
    num_test_ids = 100
    camera_pairs = {c: c // 2 for c in range(10)}
    official_split = True

    def official_test_persons(self, records: Sequence[Record]) -> Set[str]:
        """Persons ``P_III`` of the test ids of classic split ``split_id`` (torchreid's split JSON)."""
        found = [osp.join(self.root, p) for p in _CLASSIC if osp.isfile(osp.join(self.root, p))]
        if not found:
            raise FileNotFoundError(f"mlr_cuhk03: id_split 'official' needs torchreid's classic splits "
                                    f"'{osp.join(self.root, _CLASSIC[0])}' (its CUHK03 processing "
                                    "writes them)")
        path = found[0]
        try:
            with open(path, encoding="utf-8") as f:
                splits = json.load(f)
            test = splits[self.split_id]["query"] + splits[self.split_id]["gallery"]
            names = [osp.basename(item[0]) for item in test]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            raise ValueError(f"mlr_cuhk03: '{path}' is not torchreid's list of classic splits with a "
                             f"split {self.split_id} holding 'query' / 'gallery' [path, pid, camid] items "
                             f"({e})") from None
        persons = set()
        for name in names:
            match = _NAME.match(name)
            if match is None:
                raise ValueError(f"mlr_cuhk03: '{path}' lists '{name}'; expected P_III_V_NN.png names")
            persons.add(f"{match.group(1)}_{match.group(2)}")
        return persons

    def collect(self) -> List[Record]:
        records = []
        for folder in _FOLDERS:
            for path in sorted(glob.glob(osp.join(self.root, folder, "*.png"))):
                fname = osp.basename(path)
                match = _NAME.match(fname)
                if match is None:
                    raise ValueError(f"mlr_cuhk03: unexpected file name '{path}'; expected P_III_V_NN.png")
                pair, pid, view = int(match.group(1)), int(match.group(2)), int(match.group(3))
                if not 1 <= pair <= 5:
                    raise ValueError(f"mlr_cuhk03: camera pair {pair} of '{path}' is outside 1-5")
                records.append(Record(f"{folder}/{fname}", f"{pair}_{pid:03d}", 2 * (pair - 1) + view - 1))
        if not records:
            raise layout_error("MLRCUHK03", osp.join(self.root, _FOLDERS[0], "*.png"), self.root, self.layout)
        return records
