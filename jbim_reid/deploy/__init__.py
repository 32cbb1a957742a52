"""Deployment: ``CrossResolutionMatcher`` (matching from checkpoints in Python), ONNX export of the probe
and gallery paths with ``OnnxMatcher``, and the persistent gallery index.

May import training (to rebuild a model from a config and checkpoint) and every layer below it; never
the commands.
"""
