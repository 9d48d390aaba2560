"""Saving and loading weights: safetensors state dicts only, never pickles."""
from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as tensors_to_bytes
from torch import nn

from ._config import CONFIG_NAME, WEIGHTS_NAME, ModelConfig
from .errors import ConfigError, WeightsError


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None, *, kept: str = "") -> Path:
    """Write ``tensors`` to ``path`` atomically (a temporary file, then a rename).

    The file gets the usual permissions (``0o666`` less the umask): ``safetensors.torch.save_file``
    creates its files readable by their owner only, which breaks model folders shared between users.
    A write that fails (a full disk) removes the partial temporary file and raises a :class:`WeightsError`
    naming the file; ``kept`` says what the failure left in place.
    """
    path = Path(path)
    write_bytes_atomic(path, tensors_to_bytes(tensors, metadata=metadata), kept or f"{path.name} is unchanged")
    return path


def write_bytes_atomic(path: Path, data: bytes, kept: str) -> None:
    """Write ``data`` to ``path`` whole: into ``path.tmp`` first, then renamed; a failed write removes the partial
    file and raises :func:`disk_full_error`'s one line, which says ``kept`` (what stays as it was)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_full_error(tmp, exc, kept) from None
    tmp.replace(path)


def disk_full_error(path: Path, exc: OSError, kept: str) -> Exception:
    """The one-line error for a failed write of ``path`` (a full disk or a file-size limit, or another OSError)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk is full"
    elif exc.errno == errno.EFBIG:
        why = "the file is larger than this system allows (ulimit -f)"
    else:
        return WeightsError(f"{path}: could not be written ({exc.strerror or exc}); {kept}; fix the folder and run again")
    return WeightsError(f"{path}: could not be written, {why}; the partial file was removed and {kept}; "
                        f"free space and run again")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_pretrained(model: nn.Module, directory: str | Path, *, dtype: torch.dtype | None = None,
                    **provenance: Any) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if needed).

    ``dtype=torch.float16`` stores floating-point tensors in half precision (loading casts them
    back to the model's dtype). Keyword arguments update the config's provenance fields
    (``dataset``, ``recipe``, ``metrics``, ``name``, ``license``) before it is written.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise ConfigError("this model has no emozoo config; build it with emozoo.create() to save it")
    for key, value in provenance.items():
        if key not in {"dataset", "recipe", "metrics", "name", "license"}:
            raise ConfigError(f"save_pretrained() got an unexpected provenance field {key!r}")
        setattr(config, key, value)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    finish_interrupted_save(directory, clean=True)
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[key] = tensor.contiguous().clone()
    # both files are written in full as .tmp first; the weights' rename, then the config's, switch the folder to
    # the new model. A kill between the two leaves config.json.tmp, whose weights_sha256 names the new weights:
    # finish_interrupted_save (run by the next save and by emozoo.create on the folder) completes the switch.
    data = tensors_to_bytes(state, metadata={"format": "pt", "architecture": config.architecture})
    config.weights_sha256 = hashlib.sha256(data).hexdigest()
    config.record_plugins()
    pending = directory / (CONFIG_NAME + ".tmp")
    kept = f"the model in {directory} is unchanged"
    try:
        pending.write_text(config.to_json())
    except OSError as exc:
        pending.unlink(missing_ok=True)
        raise disk_full_error(pending, exc, kept) from None
    try:
        write_bytes_atomic(directory / WEIGHTS_NAME, data, kept)
    except Exception:
        pending.unlink(missing_ok=True)
        raise
    try:
        os.replace(pending, directory / CONFIG_NAME)
    except FileNotFoundError:  # a reader of the folder finished the switch first
        pass
    return directory


def finish_interrupted_save(directory: str | Path, clean: bool = False) -> None:
    """Complete a :func:`save_pretrained` that a kill interrupted between its two renames (new weights beside the
    old ``config.json`` and the new ``config.json.tmp``); with ``clean``, also remove the partial ``.tmp`` files of
    one interrupted earlier (only the saver does: a reader must not delete the files of a save in progress)."""
    directory = Path(directory)
    pending, weights = directory / (CONFIG_NAME + ".tmp"), directory / WEIGHTS_NAME
    if pending.is_file() and weights.is_file():
        try:
            sha = json.loads(pending.read_text()).get("weights_sha256")
            if sha and sha256_file(weights) == sha:
                os.replace(pending, directory / CONFIG_NAME)
        except (OSError, ValueError, AttributeError):  # a partial or unreadable file: the save never got that far
            pass
    if clean:
        for tmp in (pending, directory / (WEIGHTS_NAME + ".tmp")):
            tmp.unlink(missing_ok=True)


def read_weights(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict in a ``.safetensors`` file (checked against ``expected_sha256`` when given); never a pickle."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: emozoo loads only .safetensors weights (pickled checkpoints are never loaded)")
    if expected_sha256:
        actual = sha256_file(path)
        if actual != expected_sha256:
            raise WeightsError(f"{path}: sha256 {actual} does not match the config's weights_sha256 "
                               f"{expected_sha256}; the file is corrupt or was replaced. Delete it and download again.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None


def load_weights(model: nn.Module, path: str | Path, expected_sha256: str | None = None) -> nn.Module:
    """Load a safetensors state dict into ``model``; every missing, extra or misshapen tensor is named."""
    state = read_weights(path, expected_sha256)
    own = model.state_dict()
    mismatch = state_dict_mismatch(own, state)
    if mismatch:
        raise WeightsError(f"{path} does not match the architecture in config.json: {mismatch}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model


def state_dict_mismatch(own: dict[str, Any], other: dict[str, Any]) -> str:
    """What keeps ``other`` from loading into a model whose state dict is ``own``: the missing, extra and
    misshapen tensors, named (at most five of each); ``""`` when the two fit."""
    missing = sorted(set(own) - set(other))
    unexpected = sorted(set(other) - set(own))
    wrong = [f"{k}: file {tuple(other[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in other and other[k].shape != own[k].shape]
    parts = []
    if missing:
        parts.append(f"missing tensors {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected tensors {_few(unexpected)}")
    if wrong:
        parts.append(f"shape mismatch {_few(wrong)}")
    return "; ".join(parts)


def grow_state_dict(narrow: dict[str, Any], wide: dict[str, Any]) -> dict[str, Any]:
    """The weights ``narrow`` of a model widened to the shapes of ``wide`` (a freshly initialised wider model
    of the same architecture), so that the wide model computes what the narrow one did.

    Every tensor's leading slice is the narrow tensor; the rest keeps ``wide``'s initialisation, except
    that the weights from new input channels into old output channels (``[:old_out, old_in:]`` of a conv
    or linear weight) are zero. Old channels therefore see only old channels and carry the narrow model's
    values through every dense or depthwise convolution, linear layer, per-channel norm, activation,
    pooling and residual addition; new channels start random and are free to learn. Layers that mix
    channels otherwise (LayerNorm over channels, grouped convolutions) are not preserved; check the outputs.
    """
    mismatch = sorted(set(narrow) ^ set(wide))
    if mismatch:
        raise ConfigError(f"the narrow and wide models differ in tensors {_few(mismatch)}: not the same architecture")
    grown = {}
    for key, target in wide.items():
        source = narrow[key]
        if source.ndim != target.ndim or any(a > b for a, b in zip(source.shape, target.shape)):
            raise ConfigError(f"{key}: {tuple(source.shape)} does not fit inside {tuple(target.shape)}; "
                              "grow into a model at least as wide in every layer")
        if source.shape == target.shape:
            grown[key] = source.clone()
            continue
        tensor = target.clone()
        tensor[tuple(slice(0, d) for d in source.shape)] = source.to(tensor.dtype)
        if source.ndim >= 2:
            tensor[:source.shape[0], source.shape[1]:] = 0
        grown[key] = tensor
    return grown


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")
