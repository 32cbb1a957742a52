"""JBIM models: SR registry, fusion head, the JBIM model and its torchreid builders."""
from jbim_reid.models.fusion import FusionHead
from jbim_reid.models.jbim import (JBIM, MODEL_BUILDERS, VARIANTS, BNNeck, ReidBranch,
                                   load_jbim_checkpoint, synthesize_lr)
from jbim_reid.models.pixel import PixelNorm, PixelSpaceSR
from jbim_reid.models.sr import SR_MODELS, BicubicSR, SRCNN, VDSR, build_sr
from jbim_reid.models.weights import load_pretrained_weights, load_sr_weights

__all__ = ["JBIM", "MODEL_BUILDERS", "VARIANTS", "BNNeck", "ReidBranch", "FusionHead", "SR_MODELS",
           "SRCNN", "VDSR", "BicubicSR", "build_sr", "load_jbim_checkpoint", "load_pretrained_weights",
           "synthesize_lr", "PixelNorm", "PixelSpaceSR", "load_sr_weights"]
