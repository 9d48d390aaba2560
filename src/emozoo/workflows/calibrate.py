"""Fitting a model's temperature on the validation split and saving it in the model's ``config.json``."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import errors
from .._builder import as_folder, create
from .._config import CONFIG_NAME, WEIGHTS_NAME
from .._weights import save_pretrained, sha256_file, write_bytes_atomic
from ..calibration import fit_temperature
from ..data import eval_transform
from ..metrics import calibration_metrics
from ..train import predict_logits
from .splits import check_not_test, open_holdout, open_split, open_votes


def calibrate_model(model: str | nn.Module, data_spec: str, out_dir: str | Path, *, split: str = "Training",
                    holdout: float | None = 0.05, batch_size: int = 256, progress: bool = True, command: str = "",
                    overwrite: bool = False) -> dict:
    """Fit the temperature ``T`` of ``model`` on the validation split and save the model, with
    ``config.calibration = {"temperature": T, ...}``, as the model folder ``out_dir``.

    The validation split is the ``holdout`` fraction of ``split`` that training kept aside (``--split Training
    --holdout 0.05``, the members' shared holdout); test splits are refused, and so is a whole training split
    (its faces were learnt, so the fit would be biased). ``T`` minimises the NLL of the
    majority labels (:func:`emozoo.calibration.fit_temperature`) of the model's output logits, which for an
    EmoXNet are the fused ones: the temperature applies after the fusion. The weights are not changed: the source's
    ``model.safetensors`` is copied byte for byte (``weights_sha256`` stays), and only ``config.json`` is
    rewritten; a module given without its folder is saved with :func:`emozoo.save_pretrained`. ``out_dir`` may
    be the model's own folder (calibrated in place); another folder that already holds a model is an error unless
    ``overwrite``. Returns the stored calibration with ``out``, ``weights_unchanged``, ``accuracy`` and the
    :func:`emozoo.metrics.calibration_metrics` ``before`` (T = 1) and ``after`` on those faces.
    """
    check_not_test(split, "emozoo calibrate")
    if not holdout and split == "Training":
        raise errors.ConfigError("emozoo calibrate fits on the validation split, not on faces the model trained on; "
                                 "pass --holdout (e.g. --split Training --holdout 0.05)")
    source = as_folder(model) if isinstance(model, str) else None
    out_dir = Path(out_dir)
    same = source is not None and out_dir.resolve() == source.resolve()
    if not same and not overwrite and ((out_dir / "config.json").exists() or (out_dir / "model.safetensors").exists()):
        raise errors.ConfigError(f"{out_dir} already holds a model; pass --force to overwrite, or pick a new --out "
                                 "(--out MODEL's own folder calibrates it in place)")
    name = model if isinstance(model, str) else (model.config.name or model.config.architecture)
    if isinstance(model, str):
        model = create(model, pretrained=True)
    model.eval()
    transform, labels = eval_transform(model.config.input), model.config.label_names
    data = (open_holdout(data_spec, split, holdout, transform, labels) if holdout
            else open_split(data_spec, split, transform, labels))
    logits, targets = predict_logits(model, data, batch_size, progress=progress, desc="calibrate")
    t = fit_temperature(logits, targets)
    votes = open_votes(data_spec, split, holdout, labels, n=len(targets))
    before = calibration_metrics(logits.softmax(1), targets, votes=votes)
    after = calibration_metrics((logits / t).softmax(1), targets, votes=votes)
    calibration = {"temperature": t, "data": data_spec, "split": split, "holdout": holdout or None, "n": len(targets),
                   "nll_before": before["nll"], "nll_after": after["nll"], "ece_before": before["ece"],
                   "ece_after": after["ece"], "command": command}
    old_sha = model.config.weights_sha256
    model.config.calibration = calibration
    source_weights = Path(getattr(model, "weights_dir", None) or "-") / WEIGHTS_NAME
    if old_sha and source_weights.is_file() and sha256_file(source_weights) == old_sha:
        _write_config_beside(model.config, source_weights, out_dir)
    else:
        save_pretrained(model, out_dir, dtype=torch.float16 if _half_is_lossless(model) else None)
    return {"model": name, "out": str(out_dir), **calibration, "accuracy": (logits.argmax(1) == targets).float().mean().item(),
            "before": before, "after": after,
            "weights_unchanged": old_sha is not None and model.config.weights_sha256 == old_sha}


def _half_is_lossless(model: nn.Module) -> bool:
    """Whether every floating-point tensor of ``model`` survives a round trip through float16 (as weights loaded from
    a float16 file do), so that saving in float16 writes the same weights."""
    return all(torch.equal(t, t.half().to(t.dtype)) for t in model.state_dict().values() if t.is_floating_point())


def _write_config_beside(config, weights: Path, out_dir: Path) -> None:
    """Make ``out_dir`` the model folder of ``weights`` (copied unless already there) and ``config``, each file written
    whole under a temporary name and renamed: the weights first, so a kill leaves the old model or the new one (a
    pending ``config.json.tmp`` names these weights by their sha, and emozoo.create completes it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = f"the model in {out_dir} is unchanged"
    target = out_dir / WEIGHTS_NAME
    if not (target.exists() and target.resolve() == weights.resolve()):
        write_bytes_atomic(target, weights.read_bytes(), kept)
    write_bytes_atomic(out_dir / CONFIG_NAME, config.to_json().encode(), kept)
