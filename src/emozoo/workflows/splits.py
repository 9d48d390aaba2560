"""Which data a run reads: a split of a data spec, the members' shared holdout, the default validation split."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Subset

from .. import errors
from ..data import FER2013_SPLITS, open_dataset
from ..train import Recipe, holdout_split


def open_split(spec: str, split: str, transform=None, label_names=None, soft: bool = False):
    """Open ``split`` of the data ``spec``; ``soft`` asks FER+ readers for vote distributions."""
    kwargs: dict[str, Any] = {"transform": transform, "label_names": label_names}
    if soft:
        try:
            return open_dataset(spec, split, target="soft", **kwargs)
        except TypeError:  # readers without vote distributions train on their hard labels
            pass
    return open_dataset(spec, split, **kwargs)


def open_holdout(spec: str, split: str, fraction: float, transform=None, label_names=None, soft: bool = False):
    """The part of ``split`` that members trained with ``--holdout fraction`` kept aside (the same faces for all)."""
    data = open_split(spec, split, transform, label_names, soft=soft)
    return Subset(data, holdout_split(len(data), fraction)[1])



def default_val_split(train_split: str, val_split: str | None) -> str | None:
    """The split to validate on: ``val_split`` as given (``"none"``: none), else PublicTest after a FER2013 split."""
    if val_split:
        return None if val_split == "none" else val_split
    return "PublicTest" if train_split in FER2013_SPLITS and train_split != "PublicTest" else None


def train_indices(n: int, recipe: Recipe) -> list[int]:
    """Indices a run trains on: the training split less its holdout, cut to ``recipe.limit``."""
    indices, _ = holdout_split(n, recipe.holdout)
    if not indices:
        raise errors.ConfigError(f"--holdout {recipe.holdout:g} of the {n} training images leaves none to train on; "
                                 f"use a smaller --holdout (e.g. 0.1)" if recipe.holdout else
                                 "the training split has no images; check --data and --split")
    if recipe.limit and recipe.limit < len(indices):
        order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(recipe.seed)).tolist()
        indices = sorted(indices[i] for i in order[:recipe.limit])
    return indices
