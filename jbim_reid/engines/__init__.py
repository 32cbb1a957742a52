"""Training engines: ``JBIMEngine`` (the JBIM losses, LR-probe / HR-gallery evaluation) with its checkpoints
and losses, ``SREngine`` (stage ``sr``), ``PlainTripletEngine`` (stage ``plain``: torchreid's triplet engine
with those checkpoints), and the torch.distributed helpers used under ``torchrun``.

May import datasets, evaluation, models, metrics, config and utils; never training, deploy or commands.
"""
from jbim_reid.engines.checkpoints import checkpoint_path, list_checkpoints, rng_state, set_rng_state
from jbim_reid.engines.jbim_engine import STAGES, JBIMEngine
from jbim_reid.engines.losses import ClassificationLoss
from jbim_reid.engines.plain_engine import PlainTripletEngine
from jbim_reid.engines.sr_engine import SREngine, sr_checkpoint_path

__all__ = ["JBIMEngine", "PlainTripletEngine", "ClassificationLoss", "STAGES", "checkpoint_path", "list_checkpoints", "rng_state",
           "set_rng_state", "SREngine", "sr_checkpoint_path"]
