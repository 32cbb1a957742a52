"""MLR-PRID: PRID 2011 single-shot with one camera downsampled."""
import torchreid

from jbim_reid.datasets.mlr_builder import make_mlr_dataset

__all__ = ["MLRPRID"]

MLRPRID = make_mlr_dataset(
    "prid", torchreid.data.datasets.image.PRID,
    default_lr_mode="camera",
    required=("prid2011/prid_2011/single_shot/cam_a", "prid2011/prid_2011/single_shot/cam_b"),
    layout="  prid2011/prid_2011/single_shot/cam_a/person_NNNN.png\n"
           "  prid2011/prid_2011/single_shot/cam_b/person_NNNN.png\n"
           "  (torchreid's prid layout; ids 1-200 appear in both cameras)",
    dataset_url=torchreid.data.datasets.image.PRID.dataset_url,  # None in torchreid 0.2.5
    homepage="https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/PRID11/",
    doc="""MLR-PRID (PRID 2011 single-shot, simulated multiple low resolutions).

    Reference:
        Hirzer et al. Person Re-Identification by Descriptive and Discriminative Classification. SCIA 2011.

    Disk layout (torchreid's ``prid``)::

        <root>/prid2011/prid_2011/single_shot/cam_a/person_NNNN.png    camid 0 (385 ids)
        <root>/prid2011/prid_2011/single_shot/cam_b/person_NNNN.png    camid 1 (749 ids)

    Protocol: only the 200 ids seen by both cameras are kept (one-camera ids are dropped, as for
    every MLR dataset), split 100 / 100. Default ``lr_mode='camera'``, ``lr_camid=1``: cam_b images
    are downsampled; probe = the LR cam_b image of each test id (100), gallery = its cam_a image
    (100). Training: 200 images of 100 ids. 10 splits.
    """,
)
