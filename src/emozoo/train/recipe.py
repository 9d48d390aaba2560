"""A training run's hyper-parameters (:class:`Recipe`), checked when made; stored with the trained model."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .. import errors


@dataclass
class Recipe:
    """Hyper-parameters of one training run; stored in the trained model's ``config.json``."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    #: "soft": train on the FER+ vote distribution; "majority": on the majority label
    target: str = "soft"
    augment: str = "default"
    #: augment whole batches on the training device (:func:`emozoo.data.augment_batch`) instead of each
    #: image in loader workers; the data is decoded once and kept in memory. Much faster on a GPU.
    batch_augment: bool = False
    #: fraction of the training split held back (never trained on) for fitting learned fusions
    holdout: float = 0.0
    #: train on at most this many training images (smoke runs); 0 = all
    limit: int = 0
    seed: int = 0
    #: stochastic weight averaging (Izmailov et al. 2018): the saved model is the mean of the weights at the
    #: end of each of the last ``swa_epochs`` epochs, its BatchNorm statistics recomputed on the training
    #: images; 0 = off
    swa_epochs: int = 0
    #: with ``swa_epochs``: the learning rate held constant over those epochs (the cosine schedule of the
    #: epochs before ends there); 0 = the cosine schedule runs to the end as without averaging
    swa_lr: float = 0.0
    num_workers: int = 2
    amp: bool = True
    #: distillation only: loss name, its arguments, and the teacher
    distill_loss: str | None = None
    distill_args: dict[str, Any] = field(default_factory=dict)
    teacher: str | None = None
    #: distillation only: the teacher sees every augmented batch the student sees ("consistent teaching",
    #: Beyer et al. 2022) instead of its outputs on the unaugmented images being computed once and cached;
    #: one teacher forward per step
    teacher_online: bool = False
    #: mixup (Zhang et al. 2018): each batch is blended with a shuffled copy of itself, ``lam x + (1 - lam) x[perm]``
    #: with ``lam ~ Beta(mixup, mixup)``, and its targets alike; in distillation the teacher scores the blended
    #: images ("function matching", Beyer et al. 2022), so it needs ``teacher_online``; 0 = off
    mixup: float = 0.0

    def __post_init__(self):
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.lr > 0, "lr must be positive"),
            (self.optimizer in ("sgd", "adamw"), f"optimizer must be 'sgd' or 'adamw', not {self.optimizer!r}"),
            (self.target in ("soft", "majority"), f"target must be 'soft' or 'majority', not {self.target!r}"),
            (0 <= self.holdout < 1, "holdout must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.swa_epochs <= self.epochs, "swa_epochs must be between 0 and epochs"),
            (self.swa_lr >= 0, "swa_lr must be 0 (keep the cosine schedule) or positive"),
            (self.swa_lr == 0 or self.swa_epochs > 0, "swa_lr needs swa_epochs (the epochs it is held over)"),
            (self.mixup >= 0, "mixup must be 0 (off) or a positive Beta parameter, e.g. 0.2"),
        ]
        for ok, message in checks:
            if not ok:
                raise errors.ConfigError(f"recipe: {message}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise errors.ConfigError(f"recipe: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

def check_mixup_teacher(recipe: Recipe, online: bool) -> None:
    """A :class:`ConfigError` if a distillation recipe mixes batches that its teacher does not score (cached)."""
    if recipe.mixup and not online:
        raise errors.ConfigError("recipe: mixup in distillation needs the teacher to score the blended images; "
                                 "add --teacher-online (cached teacher outputs are of the unblended images)")
