"""MLR-VIPeR: VIPeR with one camera downsampled."""
import torchreid

from jbim_reid.datasets.mlr_builder import make_mlr_dataset

__all__ = ["MLRVIPeR"]

MLRVIPeR = make_mlr_dataset(
    "viper", torchreid.data.datasets.image.VIPeR,
    default_lr_mode="camera",
    required=("viper/VIPeR/cam_a", "viper/VIPeR/cam_b"),
    layout="  viper/VIPeR/cam_a/NNN_ANGLE.bmp\n  viper/VIPeR/cam_b/NNN_ANGLE.bmp\n"
           "  (torchreid's viper layout: one image per id per camera)",
    dataset_url=torchreid.data.datasets.image.VIPeR.dataset_url,  # torchreid's zip, unpacked into viper/
    homepage="https://vision.soe.ucsc.edu/node/178",
    doc="""MLR-VIPeR (simulated multiple low resolutions).

    Reference:
        Gray et al. Evaluating appearance models for recognition, reacquisition, and tracking. PETS 2007.
        MLR protocol: Jiao et al. AAAI 2018; Zheng et al. (JBIM) IJCV 2021.

    A missing ``<root>/viper`` is downloaded from torchreid's ``VIPeR.dataset_url`` and unpacked.

    Disk layout (torchreid's ``viper``)::

        <root>/viper/VIPeR/cam_a/NNN_ANGLE.bmp    camid 0
        <root>/viper/VIPeR/cam_b/NNN_ANGLE.bmp    camid 1

    Protocol: 632 ids split 316 / 316. Default ``lr_mode='camera'`` with ``lr_camid=1``: cam_b
    images are downsampled by a ratio from ``ratios`` (cached PNGs); probe = the LR cam_b image of
    each test id, gallery = its cam_a image. 10 splits.

    Dataset statistics:
        - identities: 632; images: 1,264 (128x48); cameras: 2.
    """,
)
