"""What the training commands do, as functions: train a member, distil, build an ensemble, evaluate.

The CLI in :mod:`emozoo.cli.train` only parses options and calls these. Every model these functions are given
by name or folder is loaded by :func:`emozoo.create`.
"""
from __future__ import annotations

from .calibrate import calibrate_model
from .distill import distill_model, teacher_outputs
from .ensemble import (
                       SEARCH_FUSIONS,
                       assemble_ensemble,
                       build_ensemble,
                       pick_best,
                       search_ensemble,
                       shared_holdout,
                       unpack_ensemble,
)
from .evaluate import evaluate_model
from .fusion import fit_fusion, fit_fusion_on_outputs, member_outputs
from .member import init_branches_from, init_from, train_model, train_transform_for
from .saving import Log, metrics_summary, save_trained
from .splits import default_val_split, open_holdout, open_split, train_indices

__all__ = ["Log", "SEARCH_FUSIONS", "assemble_ensemble", "build_ensemble", "calibrate_model", "default_val_split",
           "distill_model", "evaluate_model", "fit_fusion", "fit_fusion_on_outputs", "init_branches_from",
           "init_from", "member_outputs", "metrics_summary", "open_holdout", "open_split", "pick_best",
           "save_trained", "search_ensemble", "shared_holdout", "teacher_outputs", "train_indices", "train_model",
           "train_transform_for", "unpack_ensemble"]
