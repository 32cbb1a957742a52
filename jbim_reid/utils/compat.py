"""Access to torchreid internals that have no public API.

PyPI ``torchreid`` (0.2.5) keeps its code under ``torchreid.reid.*`` and re-exports it as
``torchreid.data``, ``torchreid.models``, ...; an upstream source install has those modules directly.
Going through ``import torchreid`` and attribute access works for both, so nothing here imports
``torchreid.reid`` or uses ``from torchreid.data import X``.
"""
from typing import Callable, Dict

import torchreid


def image_dataset_registry() -> Dict[str, type]:
    """The dict behind ``torchreid.data.register_image_dataset`` (name -> dataset class)."""
    return getattr(torchreid.data.datasets, "__image_datasets")


def model_factory() -> Dict[str, Callable]:
    """The dict behind ``torchreid.models.build_model`` (name -> builder)."""
    return getattr(torchreid.models, "__model_factory")
