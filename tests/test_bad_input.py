"""Every bad input stops before any work with exit code 2 and a message naming the file or key."""
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from synthetic import make_caviar

from jbim_reid.cli import main
from jbim_reid.datasets import CAVIAR, image_check_options
from jbim_reid.evaluation.reports import write_json
from jbim_reid.models import JBIM
from jbim_reid.utils.errors import DataError

CPU_CONFIG = str(Path(__file__).parent.parent / "configs" / "caviar" / "jbim_osnet_x0_25_cpu.yaml")
TINY = ["data.height", "32", "data.width", "16", "train.max_epoch", "1", "train.batch_size", "8",
        "sampler.num_instances", "2", "data.workers", "0", "train.print_freq", "100",
        "test.batch_size", "16"]


@pytest.fixture
def caviar_root(tmp_path):
    return make_caviar(tmp_path / "data", num_two_cam=8, num_one_cam=1)


@pytest.fixture
def save_dir(tmp_path):
    """An output folder already holding results of an earlier run, which must survive."""
    folder = tmp_path / "log"
    write_json({"rank1": 50.0}, folder / "results.json")
    return folder


def run(command, root, save_dir, *opts, config=CPU_CONFIG):
    return main([command, "--config-file", config, "data.root", str(root), "data.save_dir", str(save_dir)]
                + TINY + list(opts))


def assert_exit_2(code, capsys, *named, save_dir=None):
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err  # one line
    for text in named:
        assert text in err, err
    if save_dir is not None:
        assert json.loads((save_dir / "results.json").read_text()) == {"rank1": 50.0}
        assert not (save_dir / "stage_him").exists() and not (save_dir / "model").exists()
    return err


@pytest.mark.parametrize("opts, named", [
    (["train.max_epoch", "0"], "train.max_epoch"),
    (["train.max_epoch", "-3"], "train.max_epoch"),
    (["data.height", "0"], "data.height"),
    (["data.width", "-16"], "data.width"),
    (["data.split_id", "10"], "data.split_id 10 is out of range for 'caviar'; expected 0..9"),
    (["data.split_id", "-1"], "data.split_id"),
    (["train.keep_checkpoints", "-1"], "train.keep_checkpoints"),
])
def test_bad_values_stop_before_any_work(opts, named, caviar_root, save_dir, capsys):
    assert_exit_2(run("train", caviar_root, save_dir, *opts), capsys, named, save_dir=save_dir)


def test_train_anchors_checks_epochs_too(caviar_root, save_dir, capsys):
    code = run("train-anchors", caviar_root, save_dir, "train.max_epoch", "0")
    assert_exit_2(code, capsys, "train.max_epoch", save_dir=save_dir)


def test_train_loader_without_batches_is_refused(caviar_root, save_dir, capsys):
    code = run("train", caviar_root, save_dir, "sampler.train_sampler", "RandomSampler",
               "train.batch_size", "1000")
    assert_exit_2(code, capsys, "train.batch_size 1000", "has no batch", save_dir=save_dir)


def test_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  name: osnet_x0_25\ndata:\n  height: [128\n  width: 64\n")
    assert_exit_2(main(["train", "--config-file", str(config)]), capsys, str(config), "line 5")


def test_duplicate_caviar_image_under_two_names(caviar_root, save_dir, capsys):
    folder = caviar_root / "caviar" / "CAVIAR4REID" / "cropped_images"
    shutil.copy(folder / "0003001.jpg", folder / "0003_001.jpg")
    err = assert_exit_2(run("train", caviar_root, save_dir), capsys, "'0003001.jpg' and '0003_001.jpg'",
                        save_dir=save_dir)
    assert "same image" in err
    assert main(["train", "--config-file", CPU_CONFIG, "--debug", "data.root", str(caviar_root),
                 "data.save_dir", str(save_dir)] + TINY) == 2
    assert "Traceback" in capsys.readouterr().err  # --debug shows where it came from


@pytest.fixture
def weights(tmp_path):
    model = JBIM(4, backbone="osnet_x0_25", sr="srcnn_915", height=32, width=16)
    path = tmp_path / "model.pth.tar-1"
    torch.save({"state_dict": model.state_dict(), "jbim_kwargs": model.jbim_kwargs}, path)
    return path


def test_unwritable_save_dir_for_test_is_refused_before_evaluation(weights, caviar_root, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code = run("test", caviar_root, blocker / "out", "model.load_weights", str(weights))
    assert code == 2
    out, err = capsys.readouterr()
    assert "data.save_dir" in err and str(blocker / "out") in err
    assert "Extracting features" not in out


@pytest.mark.parametrize("damage, named", [(lambda data: b"", "empty (0 bytes)"),
                                           (lambda data: data[: len(data) // 2], "truncated")])
def test_damaged_checkpoint_is_named(damage, named, weights, caviar_root, save_dir, capsys):
    weights.write_bytes(damage(weights.read_bytes()))
    code = run("test", caviar_root, save_dir, "model.load_weights", str(weights))
    assert_exit_2(code, capsys, named, str(weights), save_dir=save_dir)


def test_corrupt_cached_split_is_named_and_rebuilt(caviar_root, tmp_path):
    first = CAVIAR(root=caviar_root, cache_dir=tmp_path / "c", verbose=False)
    original = first.split_path.read_text()
    first.split_path.write_text(original[: len(original) // 3])
    with pytest.warns(UserWarning, match=f"{first.split_path}' is corrupt.*rebuilding it"):
        again = CAVIAR(root=caviar_root, cache_dir=tmp_path / "c", verbose=False)
    assert first.split_path.read_text() == original and again.train == first.train


BAD_FILES = {  # kind -> bytes written over a training image
    "zero-byte": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "corrupt": lambda data: bytes(100) + data[100:],
    "not an image": lambda data: b"name,pid\nalice,3\n",
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_training_image_is_named_or_skipped(kind, caviar_root, tmp_path):
    ds = CAVIAR(root=caviar_root, cache_dir=tmp_path / "c", verbose=False)
    bad = Path(ds.train[3][0])
    bad.write_bytes(BAD_FILES[kind](bad.read_bytes()))
    with pytest.raises(DataError, match=f"{bad}.*data.skip_bad_images"):
        CAVIAR(root=caviar_root, cache_dir=tmp_path / "c", verbose=False)
    with image_check_options(skip_bad_images=True), pytest.warns(UserWarning, match=str(bad)):
        skipped = CAVIAR(root=caviar_root, cache_dir=tmp_path / "c", verbose=False)
    assert [it for it in ds.train if it[0] != str(bad)] == skipped.train


def test_bad_training_image_through_the_cli_is_one_line(caviar_root, save_dir, capsys):
    bad = Path(CAVIAR(root=caviar_root, verbose=False).train[0][0])  # split 0, the CLI's cache
    bad.write_bytes(b"")
    code = run("train", caviar_root, save_dir)
    assert_exit_2(code, capsys, str(bad), "data.skip_bad_images", save_dir=save_dir)


def test_results_json_has_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json({"rank1": 1.0}, tmp_path / "results.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("text, found", [("- model\n- data\n", "list"), ("just a string\n", "str")])
def test_config_file_whose_top_level_is_not_a_mapping(text, found, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert_exit_2(main(["train", "--config-file", str(config)]), capsys, f"'{config}'", f"got a {found}")


@pytest.mark.parametrize("value", ["0", "-2"])
def test_sampler_num_instances_below_1_is_refused(value, caviar_root, save_dir, capsys):
    code = run("train", caviar_root, save_dir, "sampler.num_instances", value)
    assert_exit_2(code, capsys, "sampler.num_instances must be >= 1", f"got {value}", save_dir=save_dir)


def cli_split_path(root: Path) -> Path:
    """The split file ``jbim-reid train`` of ``run`` reads (the CLI's protocol and cache)."""
    from jbim_reid.config import protocol_kwargs
    from jbim_reid.datasets import protocol_overrides
    from jbim_reid.training.checks import load_config

    cfg = load_config(CPU_CONFIG, ["data.root", str(root)] + TINY)
    with protocol_overrides(**protocol_kwargs(cfg)):
        return CAVIAR(root=str(root), verbose=False).split_path


SPLIT_DAMAGE = {  # kind -> (change to the split dict, what the error says)
    "no pid": (lambda split: split["train"][0].pop("pid"), "train[0] has no 'pid', expected an integer person id"),
    "empty train": (lambda split: split.update(train=[]), "'train' is an empty list, expected a non-empty list"),
    "string pid": (lambda split: split["query"][1].update(pid="3"), "query[1] has pid '3', expected an integer"),
    "train not a list": (lambda split: split.update(train={"a": 1}), "'train' is a dict"),
}


@pytest.mark.parametrize("kind", list(SPLIT_DAMAGE))
def test_split_file_with_wrong_content_is_named(kind, caviar_root, save_dir, capsys):
    path = cli_split_path(caviar_root)
    split = json.loads(path.read_text())
    change, named = SPLIT_DAMAGE[kind]
    change(split)
    path.write_text(json.dumps(split))
    assert_exit_2(run("train", caviar_root, save_dir), capsys, f"Split file '{path}'", named, save_dir=save_dir)


def test_skip_bad_images_covers_query_and_gallery_and_counts_each(caviar_root, capsys):
    from jbim_reid.training.checks import load_config
    from jbim_reid.training.runner import build_datamanager

    ds = CAVIAR(root=caviar_root, verbose=False)
    bad_query, bad_gallery = Path(ds.query[0][0]), Path(ds.gallery[-1][0])
    bad_query.write_bytes(b"")  # zero bytes
    bad_gallery.write_bytes(bytes(100) + bad_gallery.read_bytes()[100:])  # corrupt
    cfg = load_config(CPU_CONFIG, ["data.root", str(caviar_root)] + TINY)
    with pytest.raises(DataError, match=f"0 train, 1 query, 1 gallery.*{bad_query}.*data.skip_bad_images"):
        build_datamanager(cfg)
    cfg = load_config(CPU_CONFIG, ["data.root", str(caviar_root), "data.skip_bad_images", "True"] + TINY)
    with pytest.warns(UserWarning, match=f"skipped 2 unreadable .*: 0 train, 1 query, 1 gallery.*{bad_query}"):
        dm = build_datamanager(cfg)
    query = [it[0] for it in dm.test_loader["caviar"]["query"].dataset.query]
    gallery = [it[0] for it in dm.test_loader["caviar"]["gallery"].dataset.gallery]
    assert str(bad_query) not in query and str(bad_gallery) not in gallery and query and gallery
    assert len(query) < len(ds.query) and len(gallery) == len(ds.gallery) - 1
    assert dm.num_train_pids == ds.num_train_pids
