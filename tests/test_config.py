"""Config defaults, the YAML files under configs/ and the *_kwargs adapters."""
from pathlib import Path

import pytest
import torchreid

from jbim_reid.config import (engine_kwargs, engine_run_kwargs, get_default_config, imagedata_kwargs,
                              lr_scheduler_kwargs, model_kwargs, optimizer_kwargs, protocol_kwargs)
from jbim_reid.datasets import MLRProtocol, protocol_overrides
from jbim_reid.training.checks import ConfigError, load_config
from jbim_reid.utils import compat

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("**/*.yaml"))
TORCHREID_KEYS = [
    "model.name", "model.pretrained", "model.load_weights", "model.resume", "data.root",
    "data.sources", "data.targets", "data.workers", "data.split_id", "data.height", "data.width",
    "data.transforms", "data.norm_mean", "data.norm_std", "data.save_dir", "sampler.train_sampler",
    "sampler.num_instances", "train.optim", "train.lr", "train.weight_decay", "train.max_epoch",
    "train.start_epoch", "train.batch_size", "train.lr_scheduler", "train.stepsize", "train.gamma",
    "train.print_freq", "train.seed", "loss.softmax.label_smooth", "loss.triplet.margin",
    "loss.triplet.weight_t", "loss.triplet.weight_x", "test.batch_size", "test.dist_metric",
    "test.normalize_feature", "test.ranks", "test.evaluate", "test.eval_freq", "test.start_eval",
    "test.visrank", "test.visrank_topk",
]
JBIM_KEYS = ["sr", "sr_pretrained_path", "him_pretrained_path", "lim_pretrained_path", "alpha",
             "beta", "ratio", "fusion_dim", "dropout", "stage", "variant", "synthetic_lr",
             "him_checkpoint", "lim_checkpoint", "cross_stream_triplet", "train_ratios",
             "sr_max_epoch", "sr_patience", "sr_holdout"]


def lookup(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def test_defaults_have_torchreid_and_jbim_keys():
    cfg = get_default_config()
    for key in TORCHREID_KEYS + ["jbim." + k for k in JBIM_KEYS] + ["model.pretrained_path"]:
        lookup(cfg, key)
    assert set(cfg.mlr.keys()) == set(MLRProtocol.__dataclass_fields__)
    assert get_default_config() is not cfg  # a fresh copy each call


def test_every_default_key_has_a_comment():
    source = (Path(__file__).parent.parent / "jbim_reid" / "config" / "defaults.py").read_text()
    lines = source.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("cfg.") and "= CN()" not in stripped and "=" in stripped:
            assert lines[i - 1].strip().startswith("#"), f"no comment above: {stripped}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_files_merge_and_name_a_torchreid_backbone(path):
    cfg = load_config(str(path))
    assert cfg.model.name in compat.model_factory() and not cfg.model.name.startswith("jbim_")
    assert cfg.data.sources and set(cfg.data.targets) <= set(compat.image_dataset_registry())
    assert cfg.train.batch_size % cfg.sampler.num_instances == 0
    with protocol_overrides(**protocol_kwargs(cfg)) as protocol:
        assert isinstance(protocol, MLRProtocol)


def test_required_config_files_exist():
    names = {f"{p.parent.name}/{p.name}" for p in CONFIGS}
    for dataset in ("caviar", "mlr_viper", "mlr_prid", "mlr_cuhk03", "mlr_market1501", "mlr_sysu"):
        assert {f"{dataset}/jbim_resnet50.yaml", f"{dataset}/jbim_osnet_x1_0.yaml"} <= names
    assert {"caviar/jbim_osnet_x0_25_cpu.yaml", "caviar/jbim_mobilenetv2_cpu.yaml"} <= names


def test_resnet50_and_osnet_configs_differ_only_in_backbone_and_save_dir():
    for folder in {p.parent for p in CONFIGS}:
        a, b = folder / "jbim_resnet50.yaml", folder / "jbim_osnet_x1_0.yaml"
        if a.exists() and b.exists():
            ca, cb = load_config(str(a)), load_config(str(b))
            cb.defrost()
            cb.model.name, cb.data.save_dir = ca.model.name, ca.data.save_dir
            assert ca == cb, folder.name


def test_unknown_keys_and_bad_values_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="train.max_epochs"):
        load_config("", ["train.max_epochs", "3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("jbim:\n  alfa: 2.0\n")
    with pytest.raises(ConfigError, match="jbim.alfa"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="jbim.stage 'two'"):
        load_config("", ["jbim.stage", "two"])
    with pytest.raises(ConfigError, match="jbim.sr 'nosuch_sr'"):
        load_config("", ["jbim.sr", "nosuch_sr"])
    with pytest.raises(ConfigError, match="model.name 'resnet5'"):
        load_config("", ["model.name", "resnet5"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "none.yaml"))


def test_opts_are_merged_last(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_epoch: 5\n")
    assert load_config(str(path)).train.max_epoch == 5
    assert load_config(str(path), ["train.max_epoch", "7"]).train.max_epoch == 7


def test_kwargs_adapters_fit_their_targets():
    cfg = get_default_config()
    cfg.merge_from_list(["train.lr_scheduler", "multi_step", "train.stepsize", "[10, 20]",
                         "jbim.stage", "all", "jbim.fusion_dim", "0", "mlr.lr_mode", ""])
    data = imagedata_kwargs(cfg)
    assert data["train_sampler"] == "RandomIdentitySampler" and data["batch_size_train"] == 32
    assert lr_scheduler_kwargs(cfg)["stepsize"] == [10, 20]
    assert engine_kwargs(cfg)["stage"] == "joint"
    assert model_kwargs(cfg)["fusion_dim"] is None and model_kwargs(cfg)["backbone"] == "resnet50"
    assert protocol_kwargs(cfg)["lr_mode"] is None and protocol_kwargs(cfg)["cache_dir"] is None
    assert engine_run_kwargs(cfg)["ranks"] == [1, 5, 10, 20]
    import torch

    model = torch.nn.Linear(2, 2)
    optimizer = torchreid.optim.build_optimizer(model, **optimizer_kwargs(cfg))
    torchreid.optim.build_lr_scheduler(optimizer, **lr_scheduler_kwargs(cfg))
