"""``jbim-reid train``, ``test`` and ``complexity``: the staged recipe from a config, and its test.

``train`` runs one stage or ``all`` (plain when ``jbim.stage_epochs.plain`` > 0, then sr, him, lim, joint in
sub-folders of ``data.save_dir``); finished stages are skipped and an unfinished one continues from its
last checkpoint (``jbim_reid.training.runner.run_or_skip``), so re-running the same command resumes a
killed run. Both need the config the stages were trained with (another one stops the command, exit code
2); ``--force-new`` deletes the earlier stages and trains again. Every weight file is checked before stage
``sr`` (``training.checks.check_weight_files``).
``train``, ``test`` and ``complexity`` hold ``data.save_dir`` locked while they run (``jbim_reid.commands.save_dir``).
"""
import os.path as osp
from typing import Dict

import torchreid
from yacs.config import CfgNode as CN

from jbim_reid.commands.save_dir import (add_training_arguments, claims_save_dir, clear_earlier_run,
                                         training_command)
from jbim_reid.config import engine_kwargs, engine_run_kwargs, optimizer_kwargs
from jbim_reid.engines import JBIMEngine, distributed
from jbim_reid.evaluation.complexity import complexity_table, model_complexity
from jbim_reid.evaluation.reports import write_json
from jbim_reid.models import VARIANTS
from jbim_reid.training import resume
from jbim_reid.training.checks import (check_imagenet_weights, check_train_loader, check_training,
                                       check_weight_files)
from jbim_reid.training.fingerprint import FINGERPRINT_ENTRY
from jbim_reid.training.plain_stage import PLAIN_STAGE, init_from_plain, plain_config, plain_epochs
from jbim_reid.training.runner import (STAGE_VARIANTS, build_datamanager, build_model, load_test_model,
                                       read_load_weights, resolve_and_log_recipe, run_or_skip, stage_config,
                                       stage_trains, wants_gpu, write_results)
from jbim_reid.utils.errors import ConfigError

__all__ = ["TRAIN_COMMANDS", "train", "test", "complexity"]


@claims_save_dir
def train(cfg: CN, force_new: bool = False) -> int:
    """``jbim-reid train``: one stage, or ``all`` (sr, him, lim, joint in sub-folders of data.save_dir).

    Finished stages are skipped and an unfinished one continues from its last checkpoint
    (``jbim_reid.training.runner.run_or_skip``), so re-running the same command resumes a killed run;
    a stage trained with another config stops it (ConfigError naming the keys).

    Args:
        cfg (CfgNode): config.
        force_new (bool): ``--force-new``: delete the earlier stages in data.save_dir once every check
            has passed, and train from the start.
    """
    if cfg.test.evaluate:
        return test(cfg)
    save_dir, stage, variant = cfg.data.save_dir, cfg.jbim.stage, cfg.jbim.variant
    if stage == "all" and cfg.model.resume:
        raise ConfigError("model.resume needs a single jbim.stage (him, lim or joint), not 'all' "
                          "(re-running the same command resumes 'all')")
    if force_new and cfg.model.resume:
        raise ConfigError("--force-new deletes the earlier stages that model.resume would continue from; "
                          "use one of them")
    check_training(cfg)
    check_weight_files(cfg)  # every weight file of every stage, before stage sr
    datamanager = build_datamanager(cfg)
    check_train_loader(cfg, datamanager)
    check_imagenet_weights(cfg)
    cfg = resolve_and_log_recipe(cfg, datamanager)
    if force_new:
        clear_earlier_run(save_dir)
    if plain_epochs(cfg) > 0:  # a warm start from a torchreid model trained first
        cfg = _warm_start(cfg, stage)
        if stage == "plain":
            return 0
    if stage != "all":
        run_or_skip(stage_config(cfg, stage), lambda: datamanager, stage, save_dir,
                    STAGE_VARIANTS.get(stage, variant), cfg.jbim.him_checkpoint, cfg.jbim.lim_checkpoint,
                    trains=stage_trains(cfg, stage))
        return 0
    sr_checkpoint = ""
    if "sr" in VARIANTS[variant]:  # SR pre-training initialises stage him's SR module
        print("##### Stage sr #####")
        sr_checkpoint = run_or_skip(cfg, lambda: datamanager, "sr", osp.join(save_dir, "stage_sr"))
    checkpoints = {}
    for part in ("him", "lim"):
        if part in VARIANTS[variant]:
            print(f"##### Stage {part} #####")
            checkpoints[part] = run_or_skip(
                stage_config(cfg, part), lambda: datamanager, part, osp.join(save_dir, f"stage_{part}"), part,
                sr_checkpoint=sr_checkpoint if part == "him" else "", trains=stage_trains(cfg, part))
    if len(checkpoints) < 2:  # a one-branch variant is complete after its own stage
        if distributed.is_main_process():
            resume.promote_results(osp.join(save_dir, f"stage_{next(iter(checkpoints))}"), save_dir)
        return 0
    print("##### Stage joint #####")
    run_or_skip(stage_config(cfg, "joint"), lambda: datamanager, "joint", osp.join(save_dir, "stage_joint"),
                variant, checkpoints["him"], checkpoints["lim"],
                trains=variant == "jbim" and stage_trains(cfg, "joint"))
    if distributed.is_main_process():
        resume.promote_results(osp.join(save_dir, "stage_joint"), save_dir,
                               {"stage": "all", "variant": variant})
    return 0


def _warm_start(cfg: CN, stage: str) -> CN:
    """Run (or skip) stage ``plain`` for ``jbim.stage`` all or plain; for the later stages, ``cfg`` with
    its final checkpoint as ``jbim.init_from`` (a single him / lim stage needs it finished)."""
    stage_dir = osp.join(cfg.data.save_dir, PLAIN_STAGE)
    plain_cfg = plain_config(stage_config(cfg, "plain"))
    if stage in ("all", "plain"):
        print("##### Stage plain #####")
        checkpoint = run_or_skip(plain_cfg, lambda: build_datamanager(plain_cfg), "plain", stage_dir)
    else:
        checkpoint = resume.stage_checkpoint(plain_cfg, stage_dir)
        if stage in ("him", "lim") and not osp.isfile(checkpoint):
            raise ConfigError(f"jbim.stage {stage} starts from stage plain (jbim.stage_epochs.plain "
                              f"{plain_epochs(cfg)}), whose final checkpoint '{checkpoint}' does not exist: run "
                              "jbim.stage plain (or all) first")
    return init_from_plain(cfg, checkpoint)


@claims_save_dir
def test(cfg: CN) -> int:
    """``jbim-reid test``: evaluate ``model.load_weights`` and write ``results.json``."""
    checkpoint = read_load_weights(cfg, "jbim-reid test")  # damaged or unsafe: stop before the data
    datamanager = build_datamanager(cfg)
    model, _ = load_test_model(cfg, datamanager.num_train_pids, "jbim-reid test", checkpoint=checkpoint)
    use_gpu = wants_gpu(cfg)
    if use_gpu:
        model = model.cuda()
    optimizer = torchreid.optim.build_optimizer(model, **optimizer_kwargs(cfg))
    kwargs = {**engine_kwargs(cfg), "stage": "joint", "use_gpu": use_gpu}
    engine = JBIMEngine(datamanager, model, optimizer, **kwargs)
    engine.run(**{**engine_run_kwargs(cfg), "test_only": True})
    write_results(engine, cfg, cfg.data.save_dir,
                  {"checkpoint": cfg.model.load_weights, "variant": model.variant,
                   "recipe": checkpoint.get("recipe"), "init_from": checkpoint.get("init_from", ""),
                   FINGERPRINT_ENTRY: checkpoint.get(FINGERPRINT_ENTRY)})  # how the model was trained
    return 0


@claims_save_dir
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


TRAIN_COMMANDS: Dict[str, tuple] = {  # subcommand -> (help, function(cfg)) or (help, function(args), add_arguments)
    "train": ("train JBIM (jbim.stage: plain, sr, him, lim, joint or all) and test it", training_command(train),
              add_training_arguments),
    "test": ("test a JBIM checkpoint (model.load_weights) and write results.json", test),
    "complexity": ("print parameters and MACs of the config's model next to the paper's Table 2",
                   complexity),
}