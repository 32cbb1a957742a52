"""``jbim-reid export``: ONNX export (:mod:`jbim_reid.deploy.export`) of a checkpoint from the command line."""
import argparse

from jbim_reid.deploy.export import OPSET, check_export_dir, export_model
from jbim_reid.training.checks import add_config_arguments, load_config
from jbim_reid.training.runner import load_test_model

__all__ = ["EXPORT_COMMAND", "export_command"]


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``jbim-reid export``: the config ones, ``--out`` and ``--opset``."""
    add_config_arguments(parser, remainder=False)
    parser.add_argument("--out", required=True, help="output folder for probe.onnx, gallery.onnx, export.json")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")


def export_command(args: argparse.Namespace) -> int:
    """``jbim-reid export``: export ``model.load_weights`` (a JBIM checkpoint) to ``--out``, replaced whole."""
    cfg = load_config(args.config_file, args.opts)
    check_export_dir(args.out, "--out")  # before the model is loaded: a file, or a folder of other files
    # a bare state dict gets the config's architecture; classifiers are training-only, not exported
    model, _ = load_test_model(cfg, 1, "jbim-reid export", ignore=("classifier.",))
    meta = export_model(model, args.out, checkpoint=cfg.model.load_weights, opset=args.opset)
    sizes = ", ".join(f"{name} {info['bytes'] / 2**20:.1f} MiB" for name, info in meta["files"].items())
    print(f"=> Exported to '{args.out}': {sizes}; onnxruntime vs torch max |diff| "
          f"probe {meta['parity_max_abs']['probe']:.1e}, gallery {meta['parity_max_abs']['gallery']:.1e}")
    return 0


EXPORT_COMMAND = ("export probe.onnx, gallery.onnx and export.json of a JBIM checkpoint "
                  "(model.load_weights) to --out", export_command, add_export_arguments)  # cli.COMMANDS entry
