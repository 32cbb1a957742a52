"""JBIM training engine and its losses."""
from jbim_reid.engines.jbim_engine import STAGES, JBIMEngine, checkpoint_path
from jbim_reid.engines.losses import ClassificationLoss

__all__ = ["JBIMEngine", "ClassificationLoss", "STAGES", "checkpoint_path"]
