"""``jbim-reid export-weights``: a checkpoint's weights as a ``.safetensors`` file.

safetensors holds tensors only and loads without unpickling anything, so it is the format to hand
weights to others. The JBIM constructor arguments (``jbim_kwargs``), the stage and the epoch go into
the file's metadata; ``jbim_reid.utils.fileio.load_torch_file`` reads them back, so the exported file
loads wherever a ``.pth`` checkpoint does (``model.load_weights``, ``load_jbim_checkpoint``, the
matcher, ``jbim.him_checkpoint`` / ``lim_checkpoint``, pretrained paths). Optimizer, scheduler and
random state are not exported: a ``.safetensors`` file cannot resume training.

Examples::

    jbim-reid export-weights --config-file configs/caviar/jbim_osnet_x0_25_cpu.yaml \\
        model.load_weights log/caviar/jbim_osnet_x0_25_cpu/stage_joint/model/model.pth.tar-10 \\
        data.save_dir log/export
    # -> log/export/model.safetensors
"""
import os.path as osp
from pathlib import Path
from typing import Callable, Dict, Mapping, Tuple, Union

from yacs.config import CfgNode as CN

from jbim_reid.training.checks import check_writable
from jbim_reid.training.runner import load_test_model, read_load_weights
from jbim_reid.utils.fileio import (SAFETENSORS_META_KEYS, CheckpointError, load_torch_file, save_safetensors,
                                    strip_module_prefix)

__all__ = ["EXPORT_WEIGHTS_COMMANDS", "EXPORT_NAME", "export_weights", "export_weights_command"]

EXPORT_NAME = "model.safetensors"  # file name written in data.save_dir by the command


def export_weights(checkpoint: Union[str, Mapping], out: str) -> Path:
    """Write the weights of ``checkpoint`` (``.pth``, ``.pth.tar`` or ``.safetensors``) to ``out``.

    Args:
        checkpoint (str or mapping): a checkpoint file, or its content already read: a dict with
            ``state_dict``, or a bare state dict.
        out (str): the ``.safetensors`` file to write (atomically).

    Returns:
        Path: ``out``.

    Raises:
        CheckpointError: the checkpoint cannot be read or holds no tensors.
    """
    loaded = load_torch_file(checkpoint, what="model.load_weights") if isinstance(checkpoint, str) else checkpoint
    state = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(state, Mapping) or not state or not all(hasattr(v, "shape") for v in state.values()):
        source = checkpoint if isinstance(checkpoint, str) else "the checkpoint"
        raise CheckpointError(f"model.load_weights: '{source}' holds no state dict of tensors")
    state = strip_module_prefix(state)
    metadata = {key: loaded[key] for key in SAFETENSORS_META_KEYS if key in loaded}
    return save_safetensors(state, out, metadata)


def export_weights_command(cfg: CN) -> int:
    """``jbim-reid export-weights``: ``model.load_weights`` -> ``<data.save_dir>/model.safetensors``."""
    checkpoint = read_load_weights(cfg, "jbim-reid export-weights")
    check_writable(cfg.data.save_dir, "data.save_dir")
    # the weights must fill the config's model, as for test and export; classifiers may be of any size
    load_test_model(cfg, 1, "jbim-reid export-weights", ignore=("classifier.",), checkpoint=checkpoint)
    path = export_weights(checkpoint, osp.join(cfg.data.save_dir, EXPORT_NAME))
    print(f"=> Weights of '{cfg.model.load_weights}' written to '{path}'")
    return 0


EXPORT_WEIGHTS_COMMANDS: Dict[str, Tuple[str, Callable[[CN], int]]] = {  # subcommand -> (help, function)
    "export-weights": ("write model.load_weights as <data.save_dir>/model.safetensors (tensors only, "
                       "safe to share)", export_weights_command),
}
