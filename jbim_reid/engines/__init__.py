"""JBIM training engine and its losses."""
from jbim_reid.engines.jbim_engine import STAGES, JBIMEngine
from jbim_reid.engines.losses import ClassificationLoss

__all__ = ["JBIMEngine", "ClassificationLoss", "STAGES"]
