"""``jbim_options``: JBIM arguments for the builders that torchreid's ``build_model`` calls.

torchreid's ``build_model(name, num_classes, loss, pretrained, use_gpu)`` passes no other keyword, so
a torchreid-style script sets local weights and JBIM options around the call instead::

    with jbim_reid.models.jbim_options(backbone_pretrained_path='imagenet.pth', ratio=0.25):
        model = torchreid.models.build_model('jbim_resnet50', num_classes=751)

Nested blocks merge (inner values win); keyword arguments given to a builder directly win over both.
"""
import contextlib
import inspect
from typing import Any, Dict, Iterator, List

__all__ = ["jbim_options", "current_options", "option_names"]

_STACK: List[Dict[str, Any]] = []


def option_names() -> List[str]:
    """The JBIM constructor arguments a ``jbim_options`` block may set.

    ``num_classes`` and ``backbone`` come from ``build_model``'s arguments and the builder's name;
    ``backbone_pretrained`` is ``build_model``'s ``pretrained``.
    """
    from jbim_reid.models.jbim import JBIM  # imported on use: the torchreid backbones are heavy

    names = list(inspect.signature(JBIM.__init__).parameters)[1:]
    return [n for n in names if n not in ("num_classes", "backbone", "backbone_pretrained")]


@contextlib.contextmanager
def jbim_options(**options: Any) -> Iterator[Dict[str, Any]]:
    """Inside the block, ``torchreid.models.build_model('jbim_*', ...)`` builds JBIM with ``options``.

    Args:
        **options: ``JBIM`` arguments (``backbone_pretrained_path``, ``him_pretrained_path``,
            ``lim_pretrained_path``, ``sr_pretrained_path``, ``sr``, ``ratio``, ``variant``,
            ``fusion_dim``, ``dropout``, ``height``, ``width``).

    Yields:
        dict: the options in force inside the block.

    Raises:
        TypeError: an argument JBIM does not take (named in the message).
    """
    allowed = option_names()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"jbim_options: unknown argument(s) {unknown}; expected any of {allowed} "
                        "(pretrained and num_classes are build_model's own arguments)")
    _STACK.append(dict(options))
    try:
        yield current_options()
    finally:
        _STACK.pop()


def current_options() -> Dict[str, Any]:
    """The options of the enclosing ``jbim_options`` blocks, merged (inner wins); {} outside."""
    merged: Dict[str, Any] = {}
    for level in _STACK:
        merged.update(level)
    return merged
