"""jbim-reid: cross-resolution person re-identification (JBIM, IJCV 2021) as a torchreid plugin.

Importing this package registers the cross-resolution datasets with
``torchreid.data``, the JBIM model builders with ``torchreid.models.build_model`` and
``JBIMEngine`` as ``torchreid.engine.JBIMEngine``.

Examples::

    import jbim_reid
    matcher = jbim_reid.CrossResolutionMatcher(["anchor_1_2.pth.tar"])
    result = matcher.match(["probe_lr.jpg"], ["gallery_0.jpg", "gallery_1.jpg"])
    result.ranking[0]  # gallery indices, best match first
"""
from jbim_reid.deploy.matcher import CrossResolutionMatcher, MatchResult
from jbim_reid.deploy.onnx_matcher import OnnxMatcher
from jbim_reid.registry import register_all

__version__ = "0.1.0"
__all__ = ["CrossResolutionMatcher", "MatchResult", "OnnxMatcher", "register_all", "__version__"]

register_all()
