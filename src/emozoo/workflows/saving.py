"""Saving a trained model with its recipe and its validation metrics, and the command that reproduces them."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict

from .._weights import save_pretrained
from ..train import Dist, Recipe, lock_output

#: receives progress events (``{"event": "epoch", ...}``, ``{"event": "done", ...}``)
Log = Callable[[dict], None]


def metrics_summary(metrics: dict, data_spec: str, split: str, out_dir, *, train_split: str = "Training",
                    holdout: float = 0.0) -> dict:
    """The ``metrics`` stored in ``config.json``: the split's scores and the command that reproduces them
    (``split == "holdout"``: the ``holdout`` fraction of ``train_split``, the validation split)."""
    keep = ("accuracy", "macro_f1", "ece", "nll", "n", "per_class_accuracy", "members")
    where = f"--split {train_split} --holdout {holdout:g}" if split == "holdout" else f"--split {split}"
    return {split: {k: metrics[k] for k in keep if k in metrics},
            "command": f"emozoo eval {out_dir} --data {data_spec} {where}"}


def save_trained(model, out_dir, data_spec, split, val_split, recipe: Recipe, command, result, log, *,
                 validation: dict | None = None):
    """Save a model :func:`emozoo.train.fit` trained (process 0 only), with its recipe and validation metrics;
    ``validation`` (:func:`emozoo.workflows.splits.validation_record`, ``None``: none) goes into the recipe."""
    if not Dist().main:
        return
    metrics = result["metrics"]
    model.config.calibration = {}  # a temperature fitted to the weights training started from no longer applies
    save_pretrained(model, out_dir, dataset=f"{data_spec} ({split})",
                    recipe={"command": command, "split": split, **asdict(recipe), "steps": result["steps"],
                            "validation": validation},
                    metrics=metrics_summary(metrics, data_spec, val_split, out_dir, train_split=split,
                                            holdout=recipe.holdout) if val_split and metrics else {})
    log({"event": "done", "out": str(out_dir), "accuracy": metrics.get("accuracy"),  # None: no validation split
         "steps": result["steps"]})


def hold_output(out_dir):
    """The run's hold on ``out_dir`` (:func:`emozoo.train.lock_output`); in process 0 only, the one that writes."""
    return lock_output(out_dir) if Dist().main else contextlib.nullcontext(out_dir)
