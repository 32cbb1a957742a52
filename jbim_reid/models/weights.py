"""Loading local pretrained weights (ImageNet, re-id or SR) into a module by key name and shape."""
import logging
import os
import warnings
from typing import List, Mapping, Tuple, Union

from torch import nn

from jbim_reid.utils.fileio import load_torch_file, strip_module_prefix

__all__ = ["load_pretrained_weights", "load_sr_weights"]

logger = logging.getLogger(__name__)


def load_pretrained_weights(module: nn.Module, path: Union[str, Mapping], prefix: str = "",
                            source: str = "") -> Tuple[List[str], List[str]]:
    """Copy the entries of a local weight file whose name and shape match ``module``'s state dict.

    Like ``torchreid.utils.load_pretrained_weights`` (``module.`` prefixes stripped, checkpoint dicts
    with ``state_dict`` accepted), but it returns what it did so callers and tests can check it, and
    it never downloads anything.

    Args:
        module (nn.Module): the module to fill.
        path (str or mapping): a ``.pth``/``.pth.tar`` file (a state dict or a dict with
            ``state_dict``), or an already loaded state dict.
        prefix (str, optional): only keys starting with ``prefix`` are used, with it removed (e.g.
            ``'him.'`` loads the HIM part of a JBIM checkpoint into ``model.him``). Default is ''.
        source (str, optional): where a state dict passed as ``path`` came from, for the log.

    Returns:
        tuple: ``(loaded, skipped)``: keys of the file copied into ``module``, and keys left out
        (unknown name or different shape).
    """
    if isinstance(path, Mapping):
        checkpoint, path = path, source or "a state dict"
    else:
        path = os.path.expanduser(str(path))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Pretrained weights not found: '{path}'")
        checkpoint = load_torch_file(path, what="pretrained weights")
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"'{path}' holds no state dict (got {type(checkpoint).__name__})")
    own = module.state_dict()
    loaded, skipped, update = [], [], {}
    for key, value in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if prefix:
            if not name.startswith(prefix):
                continue
            name = name[len(prefix):]
        if name in own and hasattr(value, "shape") and own[name].shape == value.shape:
            update[name] = value
            loaded.append(name)
        else:
            skipped.append(key)
    own.update(update)
    module.load_state_dict(own)
    logger.info("Loaded %d keys from '%s' into %s (%d skipped: %s)", len(loaded), path,
                type(module).__name__, len(skipped), skipped)
    shown = skipped[:10] + (["..."] if len(skipped) > 10 else [])
    print(f"=> Loaded {len(loaded)} keys from '{path}' into {type(module).__name__}; "
          f"skipped {len(skipped)}{': ' + str(shown) if skipped else ''}")
    if not loaded:
        warnings.warn(f"No key of '{path}' matches {type(module).__name__}: nothing was loaded")
    return loaded, skipped


def load_sr_weights(module: nn.Module, path: str) -> Tuple[List[str], List[str]]:
    """Load SR weights into a bare SR net from either kind of file.

    A file of the bare net (keys ``body.*``, e.g. converted SRCNN weights) loads as it is; a
    checkpoint of stage ``sr`` or of a JBIM model (keys ``sr.*``) loads its ``sr.*`` part.

    Args:
        module (nn.Module): the SR net (``JBIM.sr``).
        path (str): the weight file.

    Returns:
        tuple: ``(loaded, skipped)`` as :func:`load_pretrained_weights`.
    """
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SR weights not found: '{path}'")
    checkpoint = load_torch_file(path, what="SR weights")
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
    names = list(strip_module_prefix(state))
    prefix = "sr." if any(k.startswith("sr.") for k in names) else ""
    return load_pretrained_weights(module, path, prefix=prefix)
