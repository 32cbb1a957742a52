"""JBIM models: SR registry, fusion head, the JBIM model, its torchreid builders and ImageNet weights."""
from jbim_reid.models.builders import MODEL_BUILDERS
from jbim_reid.models.fusion import FusionHead
from jbim_reid.models.imagenet import WeightsUnavailableError, fetch_imagenet_weights, imagenet_state_dict
from jbim_reid.models.jbim import (JBIM, VARIANTS, BNNeck, ReidBranch, jbim_from_checkpoint,
                                   load_jbim_checkpoint, synthesize_lr)
from jbim_reid.models.options import jbim_options
from jbim_reid.models.pixel import PixelNorm, PixelSpaceSR
from jbim_reid.models.sr import SR_MODELS, SRCNN, VDSR, BicubicSR, build_sr
from jbim_reid.models.weights import load_checked_weights, load_pretrained_weights, load_sr_weights

__all__ = ["JBIM", "MODEL_BUILDERS", "VARIANTS", "BNNeck", "ReidBranch", "FusionHead", "SR_MODELS",
           "SRCNN", "VDSR", "BicubicSR", "build_sr", "jbim_from_checkpoint", "load_jbim_checkpoint",
           "load_pretrained_weights", "jbim_options", "imagenet_state_dict", "fetch_imagenet_weights",
           "WeightsUnavailableError",
           "synthesize_lr", "PixelNorm", "PixelSpaceSR", "load_sr_weights", "load_checked_weights"]
