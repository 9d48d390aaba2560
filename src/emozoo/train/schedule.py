"""The learning rate at each optimizer step: warm-up, cosine decay, and the constant rate of weight averaging."""
from __future__ import annotations

import math
from collections.abc import Callable

from .recipe import Recipe


def lr_schedule(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate at each optimizer step: linear warm-up, then cosine decay to 0; with ``recipe.swa_lr``
    the cosine ends at that rate where the last ``swa_epochs`` begin, and it is held from there on."""
    total_steps = steps_per_epoch * recipe.epochs
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    cosine_end = total_steps - (steps_per_epoch * recipe.swa_epochs if recipe.swa_lr else 0)
    floor = recipe.swa_lr

    def lr_at(step: int) -> float:
        if step < warmup:
            return recipe.lr * (step + 1) / warmup
        if step >= cosine_end:
            return floor
        return floor + 0.5 * (recipe.lr - floor) * (1 + math.cos(math.pi * (step - warmup) / max(1, cosine_end - warmup)))

    return lr_at
