"""jbim-reid: cross-resolution person re-identification (JBIM, IJCV 2021) as a torchreid plugin.

Importing this package registers the cross-resolution datasets with
``torchreid.data``, the JBIM model builders with ``torchreid.models.build_model`` and
``JBIMEngine`` as ``torchreid.engine.JBIMEngine``.
"""
from jbim_reid.registry import register_all

__version__ = "0.1.0"

register_all()
