"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is two files, ``checkpoint.safetensors`` (model, optimizer and RNG tensors) and
``checkpoint.json`` (epoch, step, optimizer hyper-parameters, the architecture's config). Both carry the
same random ``save_id``. A save writes both in full as ``*.tmp`` files first, then renames the tensors and
last the JSON: the JSON's rename commits the save. Whatever a kill interrupts, :func:`load_checkpoint`
finds one whole checkpoint: before the first rename the previous pair is intact (the partial ``.tmp`` files
are removed); between the two renames the new tensors sit beside the new ``checkpoint.json.tmp``, which is
renamed into place (the save is finished). A full disk removes the partial file and keeps the previous
checkpoint.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ._weights import disk_full_error, write_safetensors
from .errors import WeightsError

CKPT_TENSORS, CKPT_META = "checkpoint.safetensors", "checkpoint.json"
_SAVE_ID = "emozoo.save_id"


def save_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any],
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write the checkpoint; ``extra_tensors`` (e.g. a weight average) come back from :func:`load_checkpoint`
    as ``meta["extra_tensors"]``."""
    directory = Path(directory)
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()})
    opt = optimizer.state_dict()
    opt_scalars: dict[str, dict[str, Any]] = {}
    for idx, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                opt_scalars.setdefault(str(idx), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["meta.epoch"] = torch.tensor(meta["epoch"])
    save_id = uuid.uuid4().hex
    optim_tensors = sorted(k for k in tensors if k.startswith("optim."))
    meta = {**meta, "save_id": save_id,
            "optimizer": {"param_groups": opt["param_groups"], "scalars": opt_scalars, "tensors": optim_tensors}}
    tmp_meta = directory / (CKPT_META + ".tmp")
    try:
        tmp_meta.write_text(json.dumps(meta, indent=1, default=list))
    except OSError as exc:
        tmp_meta.unlink(missing_ok=True)
        raise disk_full_error(tmp_meta, exc, "the previous checkpoint is kept; --resume continues from it") from None
    try:
        # the tensors' rename happens inside; a kill after it and before the next line is finished by load_checkpoint
        write_safetensors(directory / CKPT_TENSORS, tensors, {_SAVE_ID: save_id},
                          kept="the previous checkpoint is kept; --resume continues from it")
    except Exception:
        if not (directory / CKPT_TENSORS).is_file() or _tensor_save_id(directory / CKPT_TENSORS) != save_id:
            tmp_meta.unlink(missing_ok=True)  # not committed: the previous pair stands
        raise
    os.replace(tmp_meta, directory / CKPT_META)


def _tensor_save_id(path: Path) -> str | None:
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get(_SAVE_ID)
    except (SafetensorError, OSError, ValueError):
        return None


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path}: corrupt checkpoint metadata ({exc}); delete the checkpoint folder "
                           f"{path.parent} and train again without --resume") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{path}: corrupt checkpoint metadata (not a JSON object); delete the checkpoint folder "
                           f"{path.parent} and train again without --resume")
    return meta


def recover_checkpoint(directory: Path) -> None:
    """Finish or undo a save that a kill interrupted, and remove the partial ``.tmp`` files it left."""
    directory = Path(directory)
    tmp_meta, tensor_path = directory / (CKPT_META + ".tmp"), directory / CKPT_TENSORS
    if tmp_meta.is_file() and tensor_path.is_file():
        try:
            pending = json.loads(tmp_meta.read_text()).get("save_id")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            pending = None
        if pending and _tensor_save_id(tensor_path) == pending:  # killed between the two renames: finish the save
            try:
                os.replace(tmp_meta, directory / CKPT_META)
            except FileNotFoundError:  # another process finished it
                pass
    for stale in directory.glob("checkpoint*.tmp"):
        stale.unlink(missing_ok=True)


def has_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a checkpoint (after :func:`recover_checkpoint`)."""
    return (Path(directory) / CKPT_META).is_file()


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    directory = Path(directory)
    recover_checkpoint(directory)  # a no-op unless a kill interrupted a save
    meta_path, tensor_path = directory / CKPT_META, directory / CKPT_TENSORS
    if not meta_path.is_file() or not tensor_path.is_file():
        raise WeightsError(f"{directory}: no checkpoint to resume from (expected {CKPT_META} and {CKPT_TENSORS}); "
                           f"train without --resume")
    fix = f"delete the checkpoint folder {directory} and train again without --resume"
    meta = _read_meta(meta_path)
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{tensor_path}: corrupt checkpoint tensors ({exc}); {fix}") from None
    saved_id = _tensor_save_id(tensor_path)
    if "save_id" in meta and saved_id is not None:
        same = meta["save_id"] == saved_id
    else:  # written before checkpoints carried a save id
        same = "meta.epoch" in tensors and int(tensors["meta.epoch"]) == meta.get("epoch")
    if not same:
        raise WeightsError(f"{directory}: {CKPT_TENSORS} and {CKPT_META} are from different saves; {fix}")
    missing = [k for k in ("epoch", "step", "history", "optimizer") if k not in meta]
    missing += [k for k in ("rng.torch",) if k not in tensors]
    optimizer_meta = meta.get("optimizer") if isinstance(meta.get("optimizer"), dict) else {}
    missing += [k for k in optimizer_meta.get("tensors", []) if k not in tensors]  # e.g. a momentum buffer
    if missing or not isinstance(meta.get("optimizer"), dict) or not {"scalars", "param_groups"} <= set(meta["optimizer"]):
        what = ", ".join(missing) or "optimizer.scalars / optimizer.param_groups"
        raise WeightsError(f"{directory}: the checkpoint lacks {what}; {fix}")
    own = model.state_dict()
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    bad = sorted(set(own) ^ set(state)) + [k for k in own if k in state and own[k].shape != state[k].shape]
    if bad:
        raise WeightsError(f"{directory}: the checkpoint is from another architecture "
                           f"({meta.get('architecture')!r}); mismatched tensors: {', '.join(bad[:5])}")
    model.load_state_dict(state)
    opt_state: dict[int, dict[str, Any]] = {}
    try:
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                opt_state.setdefault(int(idx), {})[name] = value
        for idx, scalars in meta["optimizer"]["scalars"].items():
            opt_state.setdefault(int(idx), {}).update(scalars)
        optimizer.load_state_dict({"state": opt_state, "param_groups": meta["optimizer"]["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
        raise WeightsError(f"{directory}: the checkpoint's optimizer state does not load ({type(exc).__name__}: "
                           f"{exc}); {fix}") from None
    meta["extra_tensors"] = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return meta
