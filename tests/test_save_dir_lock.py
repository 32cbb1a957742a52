"""A save dir in use is locked (a second command exits 2 naming the holder's PID; a killed holder frees it),
and the temporary files of writes a killed run left there are removed when the next train starts."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic import make_caviar, person_image

from jbim_reid.cli import main

CPU_CONFIG = str(Path(__file__).parent.parent / "configs" / "caviar" / "jbim_osnet_x0_25_cpu.yaml")
TINY = ["data.height", "32", "data.width", "16", "train.max_epoch", "1", "train.batch_size", "8",
        "sampler.num_instances", "2", "data.workers", "0"]

# holds the lock of the folder argv[1] as documented: flock on <folder>/.lock, which records the PID
HOLDER = """
import fcntl, os, sys, time
os.makedirs(sys.argv[1], exist_ok=True)
with open(os.path.join(sys.argv[1], ".lock"), "a+") as f:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.truncate(0)
    f.write(f"{os.getpid()}\\n")
    f.flush()
    print("locked", flush=True)
    time.sleep(600)
"""

# writes each path of argv through atomic_write and is killed (SIGKILL) midway, in a child process each
KILLED_WRITES = """
import os, sys
from jbim_reid.utils.fileio import atomic_write
def die(f):
    f.write(b"partial")
    f.flush()
    os.kill(os.getpid(), 9)
for path in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        atomic_write(path, die)
    os.waitpid(pid, 0)
"""


@pytest.fixture
def caviar_root(tmp_path):
    return make_caviar(tmp_path / "data", num_two_cam=4, num_one_cam=0)


@pytest.fixture
def holder(tmp_path):
    """A process holding ``tmp_path / 'log'`` locked; killed (-9) at the end if still running."""
    folder = tmp_path / "log"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield folder, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def one_line_error(text, *named):
    assert "Traceback" not in text and text.count("\n") == 1, text
    for name in named:
        assert name in text, text


def test_second_train_exits_2_naming_the_holder_until_it_is_killed(holder, caviar_root, capsys):
    folder, proc = holder
    args = ["train", "--config-file", CPU_CONFIG, "data.root", str(caviar_root), "data.save_dir",
            str(folder)] + TINY
    second = subprocess.run([sys.executable, "-W", "ignore", "-m", "jbim_reid.cli"] + args, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 2, second.stderr
    one_line_error(second.stderr, f"PID {proc.pid}", f"'{folder}'", "data.save_dir")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the lock went with the killed holder: this run gets past it (and stops at its own bad value)
    assert main(args + ["train.max_epoch", "0"]) == 2
    one_line_error(capsys.readouterr().err, "train.max_epoch")
    from jbim_reid.utils.locks import folder_lock

    with folder_lock(folder, "data.save_dir"):
        assert (folder / ".lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.parametrize("command", ["test", "train-anchors", "ensemble", "complexity"])
def test_every_command_writing_the_save_dir_respects_the_lock(command, holder, caviar_root, tmp_path, capsys):
    folder, proc = holder
    code = main([command, "--config-file", CPU_CONFIG, "data.root", str(caviar_root),
                 "data.save_dir", str(folder), "model.load_weights", str(tmp_path / "none.pth")] + TINY)
    assert code == 2
    one_line_error(capsys.readouterr().err, f"PID {proc.pid}")


def test_index_build_respects_the_lock_of_its_out(holder, tmp_path, capsys):
    folder, proc = holder
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    person_image(1, (64, 32)).save(gallery / "a.png")
    code = main(["index", "build", "--checkpoints", str(tmp_path / "none.pth"), "--gallery", str(gallery),
                 "--out", str(folder)])
    assert code == 2
    one_line_error(capsys.readouterr().err, f"PID {proc.pid}", "--out")


def test_ranks_other_than_0_do_not_take_the_lock(holder, monkeypatch):
    from jbim_reid.commands import save_dir as save_dir_module

    folder, _ = holder
    monkeypatch.setattr(save_dir_module.distributed, "is_main_process", lambda: False)
    cfg = type("Cfg", (), {"data": type("Data", (), {"save_dir": str(folder)})})
    assert save_dir_module.claims_save_dir(lambda c: 0)(cfg) == 0


def test_next_train_removes_partial_writes_of_a_killed_run(caviar_root, tmp_path, capsys):
    save_dir = tmp_path / "log"
    (save_dir / "stage_sr" / "model").mkdir(parents=True)
    (save_dir / "results.json").write_text("{}")
    (save_dir / "notes.tmp").write_text("not ours")
    targets = [save_dir / "results.json", save_dir / "stage_sr" / "results.json",
               save_dir / "stage_sr" / "model" / "sr_best.pth.tar", save_dir / "stage_sr" / "model" / "sr_last.pth.tar"]
    subprocess.run([sys.executable, "-c", KILLED_WRITES] + [str(p) for p in targets], check=True, timeout=300)
    partial = sorted(p for p in save_dir.rglob(".*.tmp"))
    assert len(partial) == len(targets)
    code = main(["train", "--config-file", CPU_CONFIG, "data.root", str(caviar_root), "data.save_dir", str(save_dir)]
                + TINY + ["train.max_epoch", "0"])
    assert code == 2  # stops at train.max_epoch 0, after the start of the run cleaned the save dir
    out = capsys.readouterr().out
    assert not any(p.exists() for p in partial), partial
    assert all(f"removed '{p}'" in out for p in partial), out
    assert (save_dir / "results.json").read_text() == "{}" and (save_dir / "notes.tmp").exists()
