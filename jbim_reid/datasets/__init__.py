"""Cross-resolution datasets for torchreid (registered on ``import jbim_reid``).

``DATASETS`` maps each registry name to its class; see ``docs/DATASETS.md`` for layouts and options.
"""
from jbim_reid.datasets.base import CrossResolutionDataset, genuine_size
from jbim_reid.datasets.caviar import CAVIAR
from jbim_reid.datasets.folder import CrossResolutionFolder, FolderOptions, folder_overrides
from jbim_reid.datasets.imagecheck import image_check_options
from jbim_reid.datasets.mlr_builder import MLRDataset, make_mlr_dataset
from jbim_reid.datasets.mlr_cuhk03 import MLRCUHK03
from jbim_reid.datasets.mlr_market1501 import MLRMarket1501
from jbim_reid.datasets.mlr_prid import MLRPRID
from jbim_reid.datasets.mlr_sysu import MLRSYSU
from jbim_reid.datasets.mlr_viper import MLRVIPeR
from jbim_reid.datasets.protocol import MLRProtocol, protocol_overrides

__all__ = [
    "DATASETS", "CrossResolutionDataset", "MLRDataset", "MLRProtocol", "protocol_overrides",
    "make_mlr_dataset", "genuine_size", "CAVIAR", "MLRVIPeR", "MLRCUHK03", "MLRMarket1501",
    "MLRSYSU", "MLRPRID", "image_check_options", "CrossResolutionFolder", "FolderOptions",
    "folder_overrides",
]

DATASETS = {  # torchreid registry name -> dataset class
    "caviar": CAVIAR,
    "mlr_viper": MLRVIPeR,
    "mlr_cuhk03": MLRCUHK03,
    "mlr_market1501": MLRMarket1501,
    "mlr_sysu": MLRSYSU,
    "mlr_prid": MLRPRID,
    "crossres_folder": CrossResolutionFolder,
}
