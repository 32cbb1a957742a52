"""``jbim.recipe``: what ``auto`` measures and chooses, keys that win over it, ``jbim-reid recipe``."""
import json
import os
import sys
from pathlib import Path

import pytest
from synthetic import person_image

from jbim_reid.cli import main
from jbim_reid.datasets import CrossResolutionDataset
from jbim_reid.training.checks import load_config
from jbim_reid.training.recipe import (PAPER_RECIPE, choose_recipe, measure_training_data, recipe_record,
                                       resolve_recipe)

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = os.environ.get("JBIM_DATA_ROOT")
needs_data = pytest.mark.skipif(not DATA_ROOT, reason="JBIM_DATA_ROOT is not set: needs the real datasets")


def dataset(tmp_path, per_id_camera: int, lr_sizes, num_ids: int = 6, hr_size=(96, 40)):
    """Ids with ``per_id_camera`` HR images on camera 0 and as many LR images on camera 1, the LR sizes
    cycling through ``lr_sizes``."""
    train, lr_paths, k = [], set(), 0
    for pid in range(num_ids):
        for n in range(per_id_camera):
            for camid, size in ((0, hr_size), (1, lr_sizes[k % len(lr_sizes)])):
                path = tmp_path / f"{pid}_{camid}_{n}.png"
                person_image(pid, size).save(path)
                train.append((str(path), pid, camid))
                if camid == 1:
                    lr_paths.add(str(path))
                    k += 1
    return CrossResolutionDataset(train=train, query=train[1:2], gallery=train[:1], lr_paths=lr_paths,
                                  verbose=False)


def test_one_image_per_id_camera_at_three_levels_gets_cross_stream_and_those_ratios(tmp_path):
    data = dataset(tmp_path, 1, [(48, 20), (32, 13), (24, 10)])
    measured = measure_training_data(data)
    assert measured["images_per_id_camera"] == 1.0
    assert set(measured["lr_ratio_levels"]) == {"1/2", "1/3", "1/4"}
    assert choose_recipe(measured) == {"ratio": 0.5, "train_ratios": [0.5, 1 / 3, 0.25],
                                       "cross_stream_triplet": True}


def test_many_images_per_id_camera_near_one_half_keeps_the_paper_recipe(tmp_path):
    data = dataset(tmp_path, 5, [(58, 24), (56, 23)])
    measured = measure_training_data(data)
    assert measured["images_per_id_camera"] == 5.0
    assert list(measured["lr_ratio_levels"]) == ["1/2"] and 0.55 < measured["lr_ratio_median"] < 0.62
    assert choose_recipe(measured) == PAPER_RECIPE


def test_a_rare_level_does_not_count(tmp_path):
    """A level below 1/2 held by under 10% of the LR images leaves the paper's single ratio."""
    data = dataset(tmp_path, 4, [(48, 20)] * 11 + [(24, 10)], num_ids=3)
    measured = measure_training_data(data)
    assert measured["lr_ratio_levels"]["1/4"] < 0.1
    assert choose_recipe(measured)["train_ratios"] == []


def test_keys_given_explicitly_win_and_are_reported(tmp_path):
    data = dataset(tmp_path, 1, [(48, 20), (32, 13), (24, 10)])
    cfg = load_config(str(ROOT / "configs/caviar/jbim_mobilenetv2_cpu.yaml"),
                      ["jbim.cross_stream_triplet", "False"])
    resolved = resolve_recipe(cfg, data)
    record = recipe_record(resolved)
    assert resolved.jbim.cross_stream_triplet is False
    assert record["overridden"] == {"cross_stream_triplet": {"given": False, "auto": True}}
    assert "cross_stream_triplet" not in record["chosen"]
    assert list(resolved.jbim.train_ratios) == [0.5, 1 / 3, 0.25]
    assert recipe_record(resolved.clone()) == record  # rides along with copies of the config


def test_paper_and_custom_modes(tmp_path):
    data = dataset(tmp_path, 1, [(48, 20), (32, 13), (24, 10)])
    cfg = load_config("", ["jbim.recipe", "paper", "jbim.train_ratios", "[0.25]"])
    paper = resolve_recipe(cfg, data)
    assert paper.jbim.cross_stream_triplet is False and list(paper.jbim.train_ratios) == [0.25]
    assert recipe_record(paper)["measured"] == {} and "train_ratios" in recipe_record(paper)["overridden"]
    custom = resolve_recipe(load_config("", ["jbim.recipe", "custom", "jbim.cross_stream_triplet", "True"]))
    assert custom.jbim.cross_stream_triplet is True and recipe_record(custom)["chosen"] == {}


def test_unknown_recipe_exits_2(capsys):
    assert main(["recipe", "jbim.recipe", "best"]) == 2
    assert "jbim.recipe" in capsys.readouterr().err


def _benchmark_variant(name: str) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from accuracy_methods import VARIANTS

    return {**PAPER_RECIPE, **dict(VARIANTS[name].jbim)}


@needs_data
@pytest.mark.integration
@pytest.mark.parametrize("config,variant", [("caviar", ""), ("mlr_viper", "xstream_multiratio")])
def test_recipe_command_on_real_data_resolves_to_the_benchmarks_best(config, variant, capsys):
    """CAVIAR: the paper's recipe; MLR-VIPeR: the cross-stream triplet with ratios 1/2, 1/3, 1/4."""
    path = ROOT / "configs" / config / "jbim_mobilenetv2_cpu.yaml"
    assert main(["recipe", "--config-file", str(path), "data.root", DATA_ROOT]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["mode"] == "auto" and record["overridden"] == {}
    assert record["chosen"] == _benchmark_variant(variant)  # key for key
    assert record["measured"]["images_per_id_camera"] == (10.0 if config == "caviar" else 1.0)
