"""MLR-Market: Market-1501 with half of each person's images downsampled."""
import torchreid

from jbim_reid.datasets.mlr_builder import make_mlr_dataset

__all__ = ["MLRMarket1501"]

MLRMarket1501 = make_mlr_dataset(
    "market1501", torchreid.data.datasets.image.Market1501,
    default_lr_mode="half_images",
    official_split=True,
    required=("market1501",),
    layout="  market1501/Market-1501-v15.09.15/bounding_box_train/PPPP_cCsS_FFFFFF_NN.jpg\n"
           "  market1501/Market-1501-v15.09.15/query/...\n"
           "  market1501/Market-1501-v15.09.15/bounding_box_test/...\n"
           "  (torchreid's market1501 layout)",
    dataset_url=None,  # torchreid's Market1501.dataset_url is a raw IP address that no longer serves it
    homepage="http://www.liangzheng.org/Project/project_reid.html (Market-1501-v15.09.15.zip)",
    doc="""MLR-Market (Market-1501, simulated multiple low resolutions).

    Reference:
        Zheng et al. Scalable Person Re-identification: A Benchmark. ICCV 2015.
        MLR protocol: Zheng et al. (JBIM) IJCV 2021.

    Disk layout (torchreid's ``market1501``)::

        <root>/market1501/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/
            PPPP_cCsS_FFFFFF_NN.jpg     (PPPP: id, C: camera 1-6)

    Protocol: all images of the three folders are pooled (junk ids 0 and -1 dropped); 1,501 ids
    split 751 / 750 at random per split, or as published (``id_split='official'``: the ids of
    ``bounding_box_train`` train, those of ``query`` / ``bounding_box_test`` test; the splits then
    differ only in their LR images and gallery draws). Default ``lr_mode='half_images'``: a random half (rounded down) of each id's
    images is downsampled. Probe = the LR images of each test id whose camera differs from the
    gallery image's; gallery = one random HR image per test id, drawn preferably from a camera
    holding no probe (LR images on the gallery image's camera are left out of the query and
    counted in the split's ``dropped_probes``). 10 splits.

    Dataset statistics:
        - identities: 1,501; images: 12,936 train + 3,368 query + 15,913 gallery (junk dropped); cameras: 6.
    """,
)
