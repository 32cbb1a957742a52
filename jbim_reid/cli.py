"""The ``jbim-reid`` console script: train, test, train-anchors, ensemble, complexity from a yacs config.

Usage::

    jbim-reid train --config-file configs/caviar/jbim_osnet_x0_25_cpu.yaml data.root /data
    jbim-reid test --config-file configs/caviar/jbim_resnet50.yaml model.load_weights log/model.pth.tar-60
    jbim-reid train-anchors --config-file configs/caviar/jbim_osnet_x0_25_cpu.yaml data.root /data
    jbim-reid ensemble --config-file configs/caviar/jbim_osnet_x0_25_cpu.yaml data.root /data
    jbim-reid complexity --config-file configs/caviar/jbim_resnet50.yaml
    jbim-reid export-weights --config-file configs/caviar/jbim_resnet50.yaml model.load_weights log/model.pth.tar-60

Re-running an interrupted ``train`` or ``train-anchors`` with the same options continues it
(``jbim_reid.resume``). Bad input (config, data, checkpoint) stops before any work with one line on
stderr and exit code 2; ``--debug`` also prints the traceback.

Subcommands live in ``COMMANDS`` (name -> (help, function)); every subcommand gets
``--config-file`` and trailing ``KEY VALUE`` options, merged last as in torchreid's ``scripts/main.py``.
Another module adds a subcommand with ``COMMANDS['name'] = (help, function)``, where ``function``
takes the loaded config and returns an exit code. A subcommand with arguments of its own registers
``(help, function, add_arguments)``: ``add_arguments(parser)`` defines all its arguments (calling
:func:`add_config_arguments` when it reads a config too) and ``function`` gets the parsed
``argparse.Namespace``.
"""
import argparse
import os.path as osp
import sys
import traceback
from typing import Dict, List, Optional

import torchreid
from yacs.config import CfgNode as CN

from jbim_reid import distributed, resume
from jbim_reid.anchors import ENSEMBLE_COMMANDS
from jbim_reid.complexity import complexity_table, model_complexity
from jbim_reid.config import engine_kwargs, engine_run_kwargs, optimizer_kwargs
from jbim_reid.engines import JBIMEngine
from jbim_reid.errors import DataError
from jbim_reid.export import EXPORT_COMMAND
from jbim_reid.export_weights import EXPORT_WEIGHTS_COMMANDS
from jbim_reid.fileio import CheckpointError
from jbim_reid.index import INDEX_COMMAND
from jbim_reid.models import VARIANTS
from jbim_reid.reports import write_json
from jbim_reid.runner import (STAGE_VARIANTS, ConfigError, add_config_arguments, build_datamanager,
                              build_model, check_imagenet_weights, check_train_loader, check_training,
                              check_writable, load_config, model_from_weights, read_load_weights,
                              run_stage, wants_gpu, write_results)
from jbim_reid.weights_cli import WEIGHTS_COMMAND

__all__ = ["COMMANDS", "main", "load_config", "add_config_arguments", "build_datamanager", "build_model",
           "run_stage", "train", "test", "complexity", "write_results", "check_training",
           "check_train_loader", "check_writable", "check_imagenet_weights", "ConfigError"]  # runner's, re-exported



def train(cfg: CN) -> int:
    """``jbim-reid train``: one stage, or ``all`` (sr, him, lim, joint in sub-folders of data.save_dir).

    Finished stages are skipped and an unfinished one continues from its last checkpoint
    (``jbim_reid.resume.run_or_skip``), so re-running the same command resumes a killed run.
    """
    if cfg.test.evaluate:
        return test(cfg)
    save_dir, stage, variant = cfg.data.save_dir, cfg.jbim.stage, cfg.jbim.variant
    if stage == "all" and cfg.model.resume:
        raise ConfigError("model.resume needs a single jbim.stage (him, lim or joint), not 'all' "
                          "(re-running the same command resumes 'all')")
    check_training(cfg)
    datamanager = build_datamanager(cfg)
    check_train_loader(cfg, datamanager)
    check_imagenet_weights(cfg)
    if stage != "all":
        resume.run_or_skip(cfg, lambda: datamanager, stage, save_dir, STAGE_VARIANTS.get(stage, variant),
                           cfg.jbim.him_checkpoint, cfg.jbim.lim_checkpoint)
        return 0
    sr_checkpoint = ""
    if "sr" in VARIANTS[variant]:  # SR pre-training initialises stage him's SR module
        print("##### Stage sr #####")
        sr_checkpoint = resume.run_or_skip(cfg, lambda: datamanager, "sr", osp.join(save_dir, "stage_sr"))
    checkpoints = {}
    for part in ("him", "lim"):
        if part in VARIANTS[variant]:
            print(f"##### Stage {part} #####")
            checkpoints[part] = resume.run_or_skip(
                cfg, lambda: datamanager, part, osp.join(save_dir, f"stage_{part}"), part,
                sr_checkpoint=sr_checkpoint if part == "him" else "")
    if len(checkpoints) < 2:  # a one-branch variant is complete after its own stage
        if distributed.is_main_process():
            resume.promote_results(osp.join(save_dir, f"stage_{next(iter(checkpoints))}"), save_dir)
        return 0
    print("##### Stage joint #####")
    resume.run_or_skip(cfg, lambda: datamanager, "joint", osp.join(save_dir, "stage_joint"), variant,
                       checkpoints["him"], checkpoints["lim"], trains=variant == "jbim")
    if distributed.is_main_process():
        resume.promote_results(osp.join(save_dir, "stage_joint"), save_dir,
                               {"stage": "all", "variant": variant})
    return 0


def test(cfg: CN) -> int:
    """``jbim-reid test``: evaluate ``model.load_weights`` and write ``results.json``."""
    checkpoint = read_load_weights(cfg, "jbim-reid test")  # damaged or unsafe: stop before the data
    check_writable(cfg.data.save_dir, "data.save_dir")
    datamanager = build_datamanager(cfg)
    model = model_from_weights(cfg, checkpoint, datamanager.num_train_pids)
    use_gpu = wants_gpu(cfg)
    if use_gpu:
        model = model.cuda()
    optimizer = torchreid.optim.build_optimizer(model, **optimizer_kwargs(cfg))
    kwargs = {**engine_kwargs(cfg), "stage": "joint", "use_gpu": use_gpu}
    engine = JBIMEngine(datamanager, model, optimizer, **kwargs)
    engine.run(**{**engine_run_kwargs(cfg), "test_only": True})
    write_results(engine, cfg, cfg.data.save_dir,
                  {"checkpoint": cfg.model.load_weights, "variant": model.variant})
    return 0


def complexity(cfg: CN) -> int:
    """``jbim-reid complexity``: parameters and MACs of the config's model next to the paper's Table 2.

    Counted by torchreid's ``compute_model_complexity`` on the test-time paths at
    ``data.height`` x ``data.width`` (classifiers are training-only and not counted); also written to
    ``<data.save_dir>/complexity.json``.
    """
    model = build_model(cfg, num_classes=1, imagenet=False).eval()
    name = f"JBIM ({cfg.model.name}, {cfg.jbim.variant}, sr {cfg.jbim.sr})"
    rows = {f"{name}, {role} path": model_complexity(model, cfg.data.height, cfg.data.width, role=role)
            for role in ("probe", "gallery")}
    print(complexity_table(rows))
    write_json({"input": [cfg.data.height, cfg.data.width], "models": rows,
                "paper_table2": {"JBIM (ResNet-50)": {"params_m": 52.96, "macs_g": 13.96}}},
               osp.join(cfg.data.save_dir, "complexity.json"))
    return 0


COMMANDS: Dict[str, tuple] = {  # subcommand -> (help, function(cfg)) or (help, function(args), add_arguments)
    "train": ("train JBIM (jbim.stage: sr, him, lim, joint or all) and test it", train),
    "test": ("test a JBIM checkpoint (model.load_weights) and write results.json", test),
    "complexity": ("print parameters and MACs of the config's model next to the paper's Table 2",
                   complexity),
}
COMMANDS.update(ENSEMBLE_COMMANDS)  # train-anchors, ensemble (jbim_reid/anchors.py)
COMMANDS.update(EXPORT_WEIGHTS_COMMANDS)  # export-weights (jbim_reid/export_weights.py)
COMMANDS["weights"] = WEIGHTS_COMMAND  # weights fetch / list (jbim_reid/weights_cli.py)
COMMANDS["export"] = EXPORT_COMMAND  # ONNX export (jbim_reid/export.py)
COMMANDS["index"] = INDEX_COMMAND  # gallery index build / search (jbim_reid/index.py)


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
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as err:
        if args.debug:
            traceback.print_exc()
        print(f"jbim-reid {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
