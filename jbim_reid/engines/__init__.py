"""JBIM training engine and its losses; the SR pre-training engine (stage ``sr``)."""
from jbim_reid.engines.jbim_engine import (STAGES, JBIMEngine, checkpoint_path, list_checkpoints,
                                           rng_state, set_rng_state)
from jbim_reid.engines.losses import ClassificationLoss
from jbim_reid.engines.sr_engine import SREngine, sr_checkpoint_path

__all__ = ["JBIMEngine", "ClassificationLoss", "STAGES", "checkpoint_path", "list_checkpoints", "rng_state",
           "set_rng_state", "SREngine", "sr_checkpoint_path"]
