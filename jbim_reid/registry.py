"""The one place where jbim_reid hooks itself into torchreid's registries.

torchreid has a public hook for datasets (``register_image_dataset``) but none for models or
engines, so the JBIM builders are added to the dict behind ``torchreid.models.build_model`` and
``JBIMEngine`` is set as an attribute of ``torchreid.engine``; nor for transforms, so
``build_transforms`` is wrapped where the datamanager looks it up (``random_resolution``). Every step skips what is already
there, so importing ``jbim_reid`` twice (or reloading it) is harmless.
"""
import torchreid

from jbim_reid.utils import compat


def register_datasets() -> None:
    """Register every dataset of ``jbim_reid.datasets.DATASETS`` with torchreid."""
    from jbim_reid.datasets import DATASETS

    registered = compat.image_dataset_registry()
    for name, cls in DATASETS.items():
        if name not in registered:
            torchreid.data.register_image_dataset(name, cls)


def register_models() -> None:
    """Add the JBIM builders (``jbim_resnet50``, ...) to torchreid's model factory."""
    from jbim_reid.models import MODEL_BUILDERS

    factory = compat.model_factory()
    for name, builder in MODEL_BUILDERS.items():
        factory.setdefault(name, builder)


def register_engine() -> None:
    """Expose ``JBIMEngine`` as ``torchreid.engine.JBIMEngine``."""
    from jbim_reid.engines import JBIMEngine

    if getattr(torchreid.engine, "JBIMEngine", None) is None:
        torchreid.engine.JBIMEngine = JBIMEngine


def register_transforms() -> None:
    """Teach torchreid's ``build_transforms`` the ``random_resolution`` transform."""
    from jbim_reid import transforms

    transforms.install()


def register_all() -> None:
    """Register datasets, models, the engine and the transforms (idempotent)."""
    register_datasets()
    register_models()
    register_engine()
    register_transforms()
