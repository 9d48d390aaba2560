"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is two files written atomically, ``checkpoint.safetensors`` (model, optimizer and RNG
tensors) and ``checkpoint.json`` (epoch, step, optimizer hyper-parameters, the architecture's
config). The JSON file is written last, so a run killed mid-write leaves the previous checkpoint.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ._weights import write_safetensors
from .errors import WeightsError

CKPT_TENSORS, CKPT_META = "checkpoint.safetensors", "checkpoint.json"


def save_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any],
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write the checkpoint; ``extra_tensors`` (e.g. a weight average) come back from :func:`load_checkpoint`
    as ``meta["extra_tensors"]``."""
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
    meta = {**meta, "optimizer": {"param_groups": opt["param_groups"], "scalars": opt_scalars}}
    tmp_meta = directory / (CKPT_META + ".tmp")
    tmp_meta.write_text(json.dumps(meta, indent=1, default=list))
    # both files written before either is renamed, tensors first, then meta: meta names the epoch, and a
    # crash between the two renames is caught by the epoch check in load_checkpoint
    write_safetensors(directory / CKPT_TENSORS, tensors)
    os.replace(tmp_meta, directory / CKPT_META)


def load_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    meta_path, tensor_path = directory / CKPT_META, directory / CKPT_TENSORS
    if not meta_path.is_file() or not tensor_path.is_file():
        raise WeightsError(f"{directory}: no checkpoint to resume from (expected {CKPT_META} and {CKPT_TENSORS})")
    meta = json.loads(meta_path.read_text())
    tensors = load_file(str(tensor_path))
    if int(tensors["meta.epoch"]) != meta["epoch"]:
        raise WeightsError(f"{directory}: checkpoint files are from different epochs; delete them and restart")
    own = model.state_dict()
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    bad = sorted(set(own) ^ set(state)) + [k for k in own if k in state and own[k].shape != state[k].shape]
    if bad:
        raise WeightsError(f"{directory}: the checkpoint is from another architecture "
                           f"({meta.get('architecture')!r}); mismatched tensors: {', '.join(bad[:5])}")
    model.load_state_dict(state)
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    for idx, scalars in meta["optimizer"]["scalars"].items():
        opt_state.setdefault(int(idx), {}).update(scalars)
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["optimizer"]["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    meta["extra_tensors"] = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return meta
