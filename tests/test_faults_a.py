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
