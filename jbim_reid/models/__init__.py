"""JBIM models (placeholder)."""
MODEL_BUILDERS = {}
