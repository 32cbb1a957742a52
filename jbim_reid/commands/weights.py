"""``jbim-reid weights``: fill the ImageNet weight cache ahead of time (``fetch``) and show it (``list``).

Usage::

    jbim-reid weights fetch --backbone mobilenetv2_x1_0      # download + check, then offline use
    jbim-reid weights fetch --config-file configs/caviar/jbim_resnet50.yaml   # the config's model.name
    jbim-reid weights list

The cache is torchreid's (``jbim_reid.models.imagenet``), so a later ``jbim-reid train`` with
``model.pretrained True`` (or torchreid's own ``build_model(..., pretrained=True)``) finds the file.
"""
import argparse
from typing import Callable, Tuple

from jbim_reid.models.imagenet import imagenet_state_dict, supported_backbones, weight_source

__all__ = ["weights", "WEIGHTS_COMMAND"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="weights_action", required=True)
    fetch = actions.add_parser("fetch", help="download and check a backbone's ImageNet weights")
    fetch.add_argument("--backbone", default="",
                       help=f"torchreid backbone (default: the config's model.name); one of "
                            f"{', '.join(supported_backbones())}")
    fetch.add_argument("--config-file", default="", help="YAML config file whose model.name to fetch")
    fetch.add_argument("opts", nargs=argparse.REMAINDER, default=None,
                       help="KEY VALUE pairs overriding the config")
    actions.add_parser("list", help="show which backbones' ImageNet weights are cached, and where")


def _size_mb(path) -> str:
    return f"{path.stat().st_size / 2 ** 20:.1f} MB"


def weights(args: argparse.Namespace) -> int:
    """``fetch``: download (if missing) and check the weights of ``--backbone`` or ``model.name``;
    ``list``: one line per known backbone (cached or missing, size, cache path, URL)."""
    if args.weights_action == "list":
        rows = [("backbone", "status", "size", "cache path", "url")]
        for name in supported_backbones():
            source = weight_source(name)
            cached = source.cache_path.is_file()
            rows.append((name, "cached" if cached else "missing",
                         _size_mb(source.cache_path) if cached else "-", str(source.cache_path),
                         source.url))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
        return 0
    backbone = args.backbone
    if not backbone:
        from jbim_reid.training.checks import load_config  # imported on use: it imports the models

        backbone = load_config(args.config_file, args.opts).model.name
    state = imagenet_state_dict(backbone)
    path = weight_source(backbone).cache_path
    print(f"=> {backbone}: ImageNet weights ready at {path} ({_size_mb(path)}, {len(state)} tensors)")
    return 0


WEIGHTS_COMMAND: Tuple[str, Callable, Callable] = (  # cli.COMMANDS entry: a command with its own arguments
    "download ImageNet backbone weights into the cache (fetch) or show the cache (list)", weights,
    _add_arguments)
