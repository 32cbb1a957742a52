"""JBIM training engine and its losses."""
from jbim_reid.engines.jbim_engine import (STAGES, JBIMEngine, checkpoint_path, list_checkpoints,
                                           rng_state, set_rng_state)
from jbim_reid.engines.losses import ClassificationLoss

__all__ = ["JBIMEngine", "ClassificationLoss", "STAGES", "checkpoint_path", "list_checkpoints", "rng_state",
           "set_rng_state"]
