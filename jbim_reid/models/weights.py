"""Loading weight files (ImageNet, re-id, SR, JBIM) into a module by key name and shape, under one rule.

:func:`load_checked_weights` is the rule every loading path of the package follows (training's
``model.load_weights``, ``jbim.him_checkpoint`` / ``lim_checkpoint``, the stage-sr checkpoint,
``jbim.sr_pretrained_path``, the backbone files ``model.pretrained_path``, ``jbim.*_pretrained_path``,
``jbim.init_from`` and the ImageNet weights, ``test``, the exports, the matcher and the index): the file
is read safely and must fill every tensor of its destination, by name and shape, except those the
destination may miss by design (``optional``: classifiers, whose size depends on the training
identities, and BatchNorm's ``num_batches_tracked`` counters). A file of another architecture is refused
with a ``CheckpointError`` naming the file, the config key, how many tensors fit and what the file looks
like it holds (:func:`describe_weights`), instead of loading the few keys that happen to match.
"""
import fnmatch
import logging
import os
import warnings
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

from torch import nn

from jbim_reid.utils.fileio import CheckpointError, load_torch_file, strip_module_prefix

__all__ = ["BY_DESIGN", "load_pretrained_weights", "load_checked_weights", "load_sr_weights", "fit_keys",
           "check_weights_fit", "describe_weights"]

logger = logging.getLogger(__name__)

# Tensors (fnmatch patterns) a destination may miss by design: a classifier sized for other training
# identities, and BatchNorm's step counters (absent from files of older torch versions).
BY_DESIGN = ("*classifier.*", "*num_batches_tracked")


def load_pretrained_weights(module: nn.Module, path: Union[str, Mapping], prefix: str = "",
                            source: str = "", verbose: bool = True) -> Tuple[List[str], List[str]]:
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
        verbose (bool, optional): print what was loaded. Default is True.

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
    if verbose:
        print(f"=> Loaded {len(loaded)} keys from '{path}' into {type(module).__name__}; "
              f"skipped {len(skipped)}{': ' + str(shown) if skipped else ''}")
    if not loaded:
        warnings.warn(f"No key of '{path}' matches {type(module).__name__}: nothing was loaded")
    return loaded, skipped


def load_sr_weights(module: nn.Module, path: str, what: str = "jbim.sr_pretrained_path"
                    ) -> Tuple[List[str], List[str]]:
    """Load SR weights into a bare SR net from either kind of file (:func:`load_checked_weights`).

    A file of the bare net (keys ``body.*``, e.g. converted SRCNN weights) loads as it is; a
    checkpoint of stage ``sr`` or of a JBIM model (keys ``sr.*``) loads its ``sr.*`` part.

    Args:
        module (nn.Module): the SR net (``JBIM.sr``).
        path (str): the weight file.
        what (str): the config key it came from, for errors.

    Returns:
        tuple: ``(loaded, skipped)`` as :func:`load_pretrained_weights`.

    Raises:
        CheckpointError: the file is unsafe, damaged or does not fill the SR net.
    """
    loaded = load_torch_file(path, what=what)
    state = _state_dict(loaded, what, path)
    prefix = "sr." if any(k.startswith("sr.") for k in state) else ""
    return load_checked_weights(module, loaded, what, prefix=prefix, source=str(path), target=f"SR module "
                                f"{type(module).__name__}")


def load_checked_weights(module: nn.Module, weights: Union[str, os.PathLike, Mapping], what: str,
                         prefix: str = "", optional: Sequence[str] = BY_DESIGN, source: str = "",
                         target: str = "", verbose: bool = True) -> Tuple[List[str], List[str]]:
    """The one rule of loading a weight file: read it safely, check it fills ``module``, load it.

    Args:
        module (nn.Module): the destination.
        weights (str or mapping): the file, or its content already read (a checkpoint dict with
            ``state_dict``, or a state dict).
        what (str): the config key the file came from (e.g. ``model.load_weights``), for errors.
        prefix (str, optional): only keys starting with it are used, with it removed (``him.`` loads
            the HIM part of a JBIM checkpoint into ``model.him``).
        optional (sequence of str, optional): fnmatch patterns of ``module``'s tensors the file may
            lack (:data:`BY_DESIGN`); every other tensor must be in the file with its shape.
        source (str, optional): the file's path when ``weights`` is its content.
        target (str, optional): how errors name ``module`` (default its class name).
        verbose (bool, optional): print what was loaded. Default is True.

    Returns:
        tuple: ``(loaded, skipped)`` as :func:`load_pretrained_weights`.

    Raises:
        CheckpointError: the file is missing, unsafe or damaged, holds no state dict, or does not fit.
    """
    if isinstance(weights, Mapping):
        loaded, source = weights, source or "a state dict"
    else:
        source = os.path.expanduser(os.fspath(weights))
        loaded = load_torch_file(source, what=what)
    state = _state_dict(loaded, what, source)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    name = target or type(module).__name__
    check_weights_fit(module, state, what, source, optional, f"{name} (keys {prefix}*)" if prefix else name,
                      loaded)
    return load_pretrained_weights(module, state, source=source, verbose=verbose)


def fit_keys(module: nn.Module, state: Mapping[str, Any], optional: Sequence[str] = BY_DESIGN
             ) -> Tuple[List[str], List[str]]:
    """``(fitted, missing)``: ``module``'s tensors, other than ``optional`` ones, that ``state`` holds
    with their shape, and those it does not."""
    fitted, missing = [], []
    for key, value in module.state_dict().items():
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in optional):
            continue
        found = state.get(key)
        fits = hasattr(found, "shape") and tuple(found.shape) == tuple(value.shape)
        (fitted if fits else missing).append(key)
    return fitted, missing


def check_weights_fit(module: nn.Module, state: Mapping[str, Any], what: str, source: str,
                      optional: Sequence[str] = BY_DESIGN, target: str = "", loaded: Any = None) -> None:
    """Raise CheckpointError unless ``state`` fills every tensor of ``module`` but the ``optional`` ones.

    Args:
        module (nn.Module): the destination.
        state (mapping): the file's state dict, prefixes already removed.
        what (str): the config key the file came from.
        source (str): the file.
        optional (sequence of str): fnmatch patterns of tensors the file may lack.
        target (str): how the error names ``module`` (default its class name).
        loaded: the whole file as read, for :func:`describe_weights` (default ``state``).
    """
    fitted, missing = fit_keys(module, state, optional)
    if missing:
        holds = describe_weights(state if loaded is None else loaded)
        raise CheckpointError(
            f"{what}: '{source}' does not fit {target or type(module).__name__}: {len(fitted)} of "
            f"{len(fitted) + len(missing)} tensors fit by name and shape (missing e.g. {missing[:3]}); "
            f"the file looks like {holds}")


def describe_weights(loaded: Any) -> str:
    """What a weight file looks like it holds, for errors: a JBIM checkpoint (``jbim_kwargs``, or
    ``him.`` / ``lim.`` / ``fusion.`` keys), an SR checkpoint (stage ``sr``, or only ``sr.*`` / ``body.*``
    keys), a torchreid model checkpoint (``state_dict`` with ``epoch`` / ``optimizer`` and a classifier),
    or backbone weights (torchreid / torchvision backbone keys such as ``conv1.*``)."""
    if not isinstance(loaded, Mapping):
        return f"a {type(loaded).__name__}, not a state dict"
    state = loaded.get("state_dict", loaded)
    names = [k for k, v in strip_module_prefix(state).items() if hasattr(v, "shape")] \
        if isinstance(state, Mapping) else []
    tops = {k.split(".", 1)[0] for k in names}
    kwargs = loaded.get("jbim_kwargs")
    if isinstance(kwargs, Mapping) or tops & {"him", "lim", "fusion"}:
        if isinstance(kwargs, Mapping):
            facts = [f"{k} {kwargs[k]!r}" for k in ("backbone", "variant", "sr") if k in kwargs]
        else:
            facts = ["parts " + ", ".join(sorted(tops & {"sr", "him", "lim", "fusion"}))]
        if "stage" in loaded:
            facts.append(f"stage {loaded['stage']!r}")
        return f"a JBIM checkpoint ({', '.join(facts)})"
    if loaded.get("stage") == "sr" or (names and tops <= {"sr", "body"}):
        kind = f"SR {loaded['sr']!r}, " if "sr" in loaded else ""
        return f"an SR checkpoint ({kind}{len(names)} tensors, keys {sorted(tops)})"
    example = f"{len(names)} tensors, e.g. {names[:2]}"
    if "state_dict" in loaded and {"epoch", "optimizer"} & set(loaded) and "classifier" in tops:
        return f"a torchreid model checkpoint (epoch {loaded.get('epoch')}, {example})"
    if tops & {"conv1", "features", "layer1"}:
        return f"backbone weights ({example})"
    return f"weights of another model ({example})" if names else "no tensors"


def _state_dict(loaded: Any, what: str, source: str) -> Dict[str, Any]:
    """The state dict of a file's content (``state_dict`` of a checkpoint dict, or the dict itself)."""
    state = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what}: '{source}' holds no state dict (got {type(loaded).__name__})")
    return strip_module_prefix(state)
