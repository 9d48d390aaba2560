"""Which data a run reads: a split of a data spec, the members' shared holdout, the default validation split."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Subset

from .. import errors
from ..data import open_dataset
from ..train import VALIDATION_SEED, Recipe, holdout_split


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



def open_votes(spec: str, split: str, holdout: float | None = None, label_names=None, *, n: int | None = None,
               limit: int | None = None) -> torch.Tensor | None:
    """The annotators' vote distributions ``(N, C)`` of the faces :func:`open_split` (or, with ``holdout``,
    :func:`open_holdout`) gives, in the same order, the first ``limit`` of them with ``limit``; None for data without
    votes (anything but FER+), and None when ``n`` is given and their number is not ``n`` (a reader whose soft split
    is not row for row its hard one)."""
    try:
        data = open_dataset(spec, split, target="soft", label_names=label_names)
    except (TypeError, errors.DataError):
        return None
    soft = getattr(data, "soft_targets", None)
    if soft is None:
        return None
    votes = torch.as_tensor(soft, dtype=torch.float32)
    votes = votes[holdout_split(len(votes), holdout)[1]] if holdout else votes
    votes = votes[:limit] if limit else votes
    return None if n is not None and len(votes) != n else votes


#: the validation split: the part of the training split that a run's ``--holdout`` kept aside. Every choice (epochs,
#: members, fusion, temperature, thresholds) is made on it; it is the same faces for every run with that fraction
#: (:func:`emozoo.train.holdout_split`, seed :data:`emozoo.train.VALIDATION_SEED`)
HOLDOUT = "holdout"
#: splits that are scored once per shipped model and never chosen on (README: "Selection protocol")
TEST_SPLITS = frozenset({"PublicTest", "PrivateTest", "test"})


def check_not_test(split: str | None, what: str) -> None:
    """Refuse to ``what`` (search, fit, validate) on a test split: those are scored once, never chosen on."""
    if split in TEST_SPLITS:
        raise errors.ConfigError(f"{what} refuses {split}: test splits are scored once per shipped model, never chosen "
                                 "on; use the validation split, the Training holdout (e.g. --holdout 0.05)")


def validation_record(data_spec: str, split: str, holdout: float | None, n: int) -> dict:
    """What a model was validated on, as ``config.json`` records it under ``recipe["validation"]``: the data, the
    split, the holdout fraction of it and the seed that drew it (both ``None`` for a whole named split), the faces."""
    return {"data": data_spec, "split": split, "holdout": holdout or None,
            "seed": VALIDATION_SEED if holdout else None, "n": n}


def validation_of(data_spec: str, train_split: str, val_split: str | None, holdout: float, val_set) -> dict | None:
    """The :func:`validation_record` of a training run that validated on ``val_set`` (``None`` without one)."""
    if not val_split:
        return None
    if val_split == HOLDOUT:
        return validation_record(data_spec, train_split, holdout, len(val_set))
    return validation_record(data_spec, val_split, None, len(val_set))


def describe_validation(record: dict) -> str:
    """``Training holdout 0.05 (seed 20210630, 1419 faces)`` for a :func:`validation_record`."""
    if record.get("holdout"):
        return (f"{record['split']} holdout {record['holdout']:g} (seed {record['seed']}, {record['n']} faces "
                f"of {record['data']})")
    return f"{record['split']} ({record['n']} faces of {record['data']})"


def default_val_split(train_split: str, val_split: str | None, holdout: float = 0.0) -> str | None:
    """The split a training run validates on: ``val_split`` as given (``"none"``: none; a test split is refused),
    else the training split's holdout when the run keeps one, else none."""
    if val_split:
        check_not_test(val_split, "--val-split")
        return None if val_split == "none" else val_split
    return HOLDOUT if holdout > 0 else None


def open_val(spec: str, train_split: str, val_split: str, holdout: float, transform=None, label_names=None):
    """The validation data of a run: the holdout of ``train_split`` (``val_split == "holdout"``) or a named split."""
    if val_split == HOLDOUT:
        if not holdout:
            raise errors.ConfigError("--val-split holdout needs --holdout, the fraction of the training split kept aside")
        return open_holdout(spec, train_split, holdout, transform, label_names)
    return open_split(spec, val_split, transform, label_names)


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
