"""Faults while saving: a kill at any step of a save, a full disk, two runs on one folder."""
import errno
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from emozoo._checkpoint import CKPT_META, CKPT_TENSORS, load_checkpoint, save_checkpoint
from emozoo.errors import WeightsError


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it as an error."""


def _state(seed):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def _save(directory, epoch):
    model, opt = _state(epoch)
    save_checkpoint(directory, model, opt, {"epoch": epoch, "step": 10 * epoch, "history": [epoch]})
    return model


def _resume(directory):
    model, opt = _state(99)
    meta = load_checkpoint(directory, model, opt)
    return meta, model


def _kill_at(monkeypatch, target, name, n):
    """Make the ``n``-th call of ``target.name`` (counting from 1) die as a kill would."""
    real, calls = getattr(target, name), []

    def fake(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise Killed
        return real(*args, **kwargs)
    monkeypatch.setattr(target, name, fake)


# every step of a save where a kill can land: the JSON temp write, the tensor temp write, the tensors' rename,
# the JSON's rename (the second os.replace: Path.replace goes through it too)
STEPS = [(Path, "write_text", 1), (Path, "write_bytes", 1), (Path, "replace", 1), (os, "replace", 2)]


@pytest.mark.parametrize("target,name,n", STEPS, ids=["meta-tmp", "tensor-tmp", "tensor-rename", "meta-rename"])
def test_a_kill_at_any_step_of_a_save_leaves_one_whole_checkpoint(tmp_path, monkeypatch, target, name, n):
    old = _save(tmp_path, 1)
    with monkeypatch.context() as m:
        _kill_at(m, target, name, n)
        with pytest.raises(Killed):
            _save(tmp_path, 2)
    new = _state(2)[0]
    meta, model = _resume(tmp_path)
    expected = new if meta["epoch"] == 2 else old
    assert meta["epoch"] in (1, 2) and meta["step"] == 10 * meta["epoch"] and meta["history"] == [meta["epoch"]]
    for a, b in zip(model.state_dict().values(), expected.state_dict().values()):
        assert torch.equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CKPT_META, CKPT_TENSORS]  # no .tmp left behind
    if (target, name) == (os, "replace"):  # killed between the renames: the save is finished, not lost
        assert meta["epoch"] == 2


def test_mismatched_pair_without_the_pending_metadata_names_the_fix(tmp_path):
    _save(tmp_path, 1)
    meta = json.loads((tmp_path / CKPT_META).read_text())
    _save(tmp_path, 2)
    (tmp_path / CKPT_META).write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="from different saves; delete the checkpoint folder"):
        _resume(tmp_path)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EFBIG])
@pytest.mark.parametrize("method", ["write_text", "write_bytes"])
def test_a_full_disk_keeps_the_previous_checkpoint_and_removes_the_partial_file(tmp_path, monkeypatch, err, method):
    _save(tmp_path, 1)
    real = getattr(Path, method)

    def full(self, data, *a, **k):
        real(self, data[: len(data) // 2], *a, **k)  # a partial file, then the error
        raise OSError(err, os.strerror(err))
    monkeypatch.setattr(Path, method, full)
    with pytest.raises(WeightsError) as info:
        _save(tmp_path, 2)
    message = str(info.value)
    assert "\n" not in message and "could not be written" in message and "previous checkpoint is kept" in message
    assert ("disk is full" if err == errno.ENOSPC else "ulimit -f") in message
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [CKPT_META, CKPT_TENSORS]
    assert _resume(tmp_path)[0]["epoch"] == 1


def _train_args(fer_csv, out):
    return ["train", "mini_xception", "--model-arg", "width=0.5", "--data", fer_csv, "--epochs", 1, "--limit", 32,
            "--batch-size", 32, "--num-workers", 0, "--val-split", "none", "--out", out]


def test_a_second_run_on_the_same_folder_is_refused_naming_the_holder(fer_csv, tmp_path):
    from click.testing import CliRunner

    from emozoo.cli import build_cli
    from emozoo.train import lock_output

    out = tmp_path / "run"
    with lock_output(out):  # a run in progress
        for command in (_train_args(fer_csv, out), _train_args(fer_csv, out) + ["--resume"]):
            result = CliRunner().invoke(build_cli(), [str(a) for a in command])
            assert result.exit_code == 1 and result.output == (
                f"Error: {out} is in use by another emozoo run (process {os.getpid()}); wait for it to finish or pick "
                "another --out\n")
        assert sorted(p.name for p in out.iterdir()) == [".emozoo.lock"]  # the refused runs wrote nothing
    assert not (out / ".emozoo.lock").exists()
    result = CliRunner().invoke(build_cli(), [str(a) for a in _train_args(fer_csv, out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "config.json", "model.safetensors"]


@pytest.mark.multiprocess
def test_a_killed_runs_lock_does_not_block_the_next(tmp_path):
    import signal
    import subprocess
    import sys

    from emozoo.train import lock_output

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from emozoo.train.lock import lock_output\n"
                               f"with lock_output({str(out)!r}):\n    print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(Exception, match=f"process {holder.pid}"), lock_output(out):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (out / ".emozoo.lock").exists()  # the killed holder left its file, but the OS released its lock
    with lock_output(out):
        assert (out / ".emozoo.lock").read_text() == f"{os.getpid()}\n"


def test_a_failed_start_leaves_no_empty_folders(fer_csv, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import emozoo.train.loop
    from emozoo.cli import build_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C in the first epoch, before any checkpoint
    monkeypatch.setattr(emozoo.train.loop, "save_checkpoint", interrupted)
    out = tmp_path / "run"
    result = CliRunner().invoke(build_cli(), [str(a) for a in _train_args(fer_csv, out)])
    assert result.exit_code == 1
    assert not out.exists()  # neither the folder this run made nor its empty checkpoint/ is left
    (out / "checkpoint").mkdir(parents=True)  # an empty checkpoint/ an older failed start left
    (out / "notes.txt").write_text("mine")
    result = CliRunner().invoke(build_cli(), [str(a) for a in _train_args(fer_csv, out)])
    assert result.exit_code == 1 and sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("target,name,n", STEPS, ids=["config-tmp", "weights-tmp", "weights-rename", "config-rename"])
def test_a_kill_at_any_step_of_save_pretrained_over_a_model_leaves_one_whole_model(tmp_path, monkeypatch, target, name, n):
    import emozoo
    from emozoo._weights import sha256_file

    def make(seed):
        torch.manual_seed(seed)
        return emozoo.create("mini_xception", width=0.5)

    old, new = make(1), make(2)
    emozoo.save_pretrained(old, tmp_path, name="old")
    with monkeypatch.context() as m:
        _kill_at(m, target, name, n)
        with pytest.raises(Killed):
            emozoo.save_pretrained(new, tmp_path, name="new")
    loaded = emozoo.create(str(tmp_path), pretrained=True)  # config and weights of one and the same save
    expected = {"old": old, "new": new}[loaded.config.name]
    assert loaded.config.weights_sha256 == sha256_file(tmp_path / "model.safetensors")
    for a, b in zip(loaded.state_dict().values(), expected.state_dict().values()):
        assert torch.equal(a, b)
    if (target, name) == (os, "replace"):  # killed between the renames: the new model is there, not lost
        assert loaded.config.name == "new" and not (tmp_path / "config.json.tmp").exists()
    emozoo.save_pretrained(new, tmp_path, name="again")  # the next save clears what the kill left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_a_full_disk_during_save_pretrained_leaves_the_model_unchanged(tmp_path, monkeypatch):
    import emozoo
    from emozoo.errors import EmozooError

    torch.manual_seed(1)
    model = emozoo.create("mini_xception", width=0.5)
    emozoo.save_pretrained(model, tmp_path, name="old")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = Path.write_bytes

    def full(self, data):
        real(self, data[:100])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(EmozooError, match="could not be written, the disk is full; the partial file was removed and the "
                                          "model in .* is unchanged; free space and run again"):
        emozoo.save_pretrained(model, tmp_path, name="new")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
