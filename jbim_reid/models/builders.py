"""The torchreid model-factory builders ``jbim_<backbone>`` (``jbim_resnet50``, ``jbim_osnet_x1_0``, ...).

torchreid's ``build_model`` passes only its own arguments, so each builder reads the JBIM options of an
enclosing ``jbim_options`` block (:mod:`jbim_reid.models.options`).
"""
from jbim_reid.models.jbim import JBIM
from jbim_reid.models.options import current_options

__all__ = ["MODEL_BUILDERS"]


def _builder(backbone: str):
    def build(num_classes: int, loss: str = "softmax", pretrained: bool = True, use_gpu: bool = True,
              **kwargs) -> JBIM:
        options = {**current_options(), **kwargs}
        return JBIM(num_classes, backbone=backbone, backbone_pretrained=pretrained, **options)

    build.__name__ = f"jbim_{backbone}"
    build.__doc__ = (f"JBIM with ``{backbone}`` backbones (torchreid factory signature). ``loss`` and "
                     "``use_gpu`` are accepted for compatibility. ``pretrained`` loads the backbone's "
                     "ImageNet weights as torchreid does (downloaded once into torchreid's cache) "
                     "unless a ``backbone_pretrained_path`` is given. Other JBIM arguments come from "
                     "keyword arguments or an enclosing ``jbim_options(...)`` block.")
    return build


MODEL_BUILDERS = {  # torchreid model factory name -> builder
    f"jbim_{name}": _builder(name)
    for name in ("resnet50", "osnet_x1_0", "osnet_x0_25", "osnet_x0_5", "osnet_x0_75",
                 "osnet_ibn_x1_0", "mobilenetv2_x1_0", "resnet50_fc512")
}
