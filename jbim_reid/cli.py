"""The ``jbim-reid`` console script: train, test, train-anchors, ensemble, complexity from a yacs config.

Usage::

    jbim-reid train --config-file configs/caviar/jbim_osnet_x0_25_cpu.yaml data.root /data
    jbim-reid test --config-file configs/caviar/jbim_resnet50.yaml model.load_weights log/model.pth.tar-60
    jbim-reid train-anchors --config-file configs/caviar/jbim_osnet_x0_25_cpu.yaml data.root /data
    jbim-reid ensemble --config-file configs/caviar/jbim_osnet_x0_25_cpu.yaml data.root /data
    jbim-reid complexity --config-file configs/caviar/jbim_resnet50.yaml
    jbim-reid export-weights --config-file configs/caviar/jbim_resnet50.yaml model.load_weights log/model.pth.tar-60

Re-running an interrupted ``train`` or ``train-anchors`` with the same options continues it
(``jbim_reid.training.resume``). Bad input (config, data, checkpoint) and a ``data.save_dir`` in use by another
command (``jbim_reid.commands.save_dir``) stop before any work with one line on stderr and exit code 2;
``--debug`` also prints the traceback.

Subcommands live in ``COMMANDS`` (name -> (help, function)); every subcommand gets
``--config-file`` and trailing ``KEY VALUE`` options, merged last as in torchreid's ``scripts/main.py``.
Another module adds a subcommand with ``COMMANDS['name'] = (help, function)``, where ``function``
takes the loaded config and returns an exit code. A subcommand with arguments of its own registers
``(help, function, add_arguments)``: ``add_arguments(parser)`` defines all its arguments (calling
:func:`add_config_arguments` when it reads a config too) and ``function`` gets the parsed
``argparse.Namespace``.
"""
import argparse
import sys
import traceback
from typing import Dict, List, Optional

from jbim_reid.commands.anchors import ENSEMBLE_COMMANDS
from jbim_reid.commands.export import EXPORT_COMMAND
from jbim_reid.commands.export_weights import EXPORT_WEIGHTS_COMMANDS
from jbim_reid.commands.index import INDEX_COMMAND
from jbim_reid.commands.recipe import RECIPE_COMMANDS
from jbim_reid.commands.train import TRAIN_COMMANDS
from jbim_reid.commands.weights import WEIGHTS_COMMAND
from jbim_reid.engines import distributed
from jbim_reid.training.checks import add_config_arguments, load_config
from jbim_reid.training.runner import wants_gpu
from jbim_reid.utils.errors import ConfigError, DataError
from jbim_reid.utils.fileio import CheckpointError
from jbim_reid.utils.locks import FolderInUseError

__all__ = ["COMMANDS", "build_parser", "main"]


COMMANDS: Dict[str, tuple] = {}  # subcommand -> (help, function(cfg)) or (help, function(args), add_arguments)
COMMANDS.update(TRAIN_COMMANDS)  # train, test, complexity (jbim_reid/commands/train.py)
COMMANDS.update(RECIPE_COMMANDS)  # recipe (jbim_reid/commands/recipe.py)
COMMANDS.update(ENSEMBLE_COMMANDS)  # train-anchors, ensemble (jbim_reid/commands/anchors.py)
COMMANDS.update(EXPORT_WEIGHTS_COMMANDS)  # export-weights (jbim_reid/commands/export_weights.py)
COMMANDS["weights"] = WEIGHTS_COMMAND  # weights fetch / list (jbim_reid/commands/weights.py)
COMMANDS["export"] = EXPORT_COMMAND  # ONNX export (jbim_reid/commands/export.py)
COMMANDS["index"] = INDEX_COMMAND  # gallery index build / search (jbim_reid/commands/index.py)


def build_parser() -> argparse.ArgumentParser:
    """Parser with one subcommand per ``COMMANDS`` entry."""
    parser = argparse.ArgumentParser(
        prog="jbim-reid", description="Cross-resolution person re-id (JBIM) from a yacs config file.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _, *add_arguments) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", help="print the traceback of an error")
        (add_arguments[0] if add_arguments else add_config_arguments)(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``jbim-reid``; returns the exit code (2 for config errors)."""
    args = build_parser().parse_args(argv)
    try:
        entry = COMMANDS[args.command]
        if len(entry) > 2:  # a subcommand with arguments of its own
            return entry[1](args)
        cfg = load_config(args.config_file, args.opts)
        with distributed.session(cfg.train.dist_backend, wants_gpu(cfg), cfg.train.dist_timeout):
            return entry[1](cfg)
    except (ConfigError, DataError, CheckpointError, FileNotFoundError, FolderInUseError) as err:
        if args.debug:
            traceback.print_exc()
        print(f"jbim-reid {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
