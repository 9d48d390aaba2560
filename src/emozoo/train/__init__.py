"""Training engine shared by ``emozoo train``, ``emozoo distill`` and ``emozoo ensemble``.

One process or many: under ``torchrun`` the same code trains with DistributedDataParallel (gloo on
CPU, NCCL on CUDA). ``Recipe.batch_size`` is the global batch, split across processes, so a run has
the same number of optimizer steps whatever the process count.

A checkpoint is written after every epoch; ``resume=True`` continues from the last one with the
optimizer and RNG state restored, so an interrupted run ends exactly where an uninterrupted one does.
"""
from __future__ import annotations

from .averaging import WeightAverage, update_batchnorm
from .batches import VALIDATION_SEED, Indexed, holdout_split, iter_batches, mix_batch, preload
from .distributed import Dist, autocast, device_for
from .evaluate import evaluate, predict_logits
from .lock import lock_output
from .loop import LossFn, fit
from .recipe import Recipe, check_mixup_teacher
from .schedule import lr_schedule

__all__ = ["VALIDATION_SEED", "Dist", "Indexed", "LossFn", "Recipe", "WeightAverage", "autocast", "check_mixup_teacher",
           "device_for", "evaluate", "fit", "holdout_split", "iter_batches", "lock_output", "lr_schedule", "mix_batch",
           "predict_logits", "preload", "update_batchnorm"]
