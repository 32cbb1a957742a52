"""JBIM engine (placeholder)."""
JBIMEngine = None
