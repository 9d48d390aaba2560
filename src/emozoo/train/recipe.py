"""A training run's hyper-parameters (:class:`Recipe`), checked when made; stored with the trained model."""
from __future__ import annotations

import difflib
import functools
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, get_type_hints

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
    #: robustness: the probability that a training image also gets one random camera corruption (blur, JPEG,
    #: downscaling, noise, low light or contrast, an occluding band or patch: :data:`emozoo.data.corruptions.TRAINING`)
    #: on top of ``augment``; with ``teacher_online`` the teacher sees the image before it ("clean teaching").
    #: Needs ``batch_augment``; 0 = off
    corrupt: float = 0.0

    def __post_init__(self):
        check_types(asdict(self), "recipe")
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
            (0 <= self.corrupt <= 1, "corrupt must be a probability in [0, 1], e.g. 0.5"),
            (not self.corrupt or self.batch_augment, "corrupt needs batch_augment (--batch-augment)"),
        ]
        for ok, message in checks:
            if not ok:
                raise errors.ConfigError(f"recipe: {message}")

    @classmethod
    def from_dict(cls, d: Any, source: str = "recipe") -> Recipe:
        """The recipe ``d`` describes; each unknown key, wrong type or value out of range is a :class:`ConfigError`
        naming the key, the value and what is expected (``source`` says where ``d`` came from)."""
        if not isinstance(d, dict):
            raise errors.ConfigError(f"{source}: a recipe is a JSON object of hyper-parameters, not {_kind(d)} "
                                     f"{_short(d)}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(key) for key in d if key not in known)
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {sorted(known)}"
            raise errors.ConfigError(f"{source}: unknown key(s) {unknown}; {hint}")
        check_types(d, source)
        try:
            return cls(**d)
        except errors.ConfigError as exc:  # a range __post_init__ checks: say which file it came from
            message = str(exc)
            if source == "recipe" or not message.startswith("recipe: "):
                raise
            raise errors.ConfigError(f"{source}: {message[len('recipe: '):]}") from None


#: the range of the numbers ``__post_init__`` does not check (pydantic ``Field`` constraints)
BOUNDS = {"momentum": {"ge": 0}, "weight_decay": {"ge": 0}, "warmup_epochs": {"ge": 0}, "limit": {"ge": 0},
          "seed": {"ge": 0}, "num_workers": {"ge": 0}}

_EXPECTED = {"int_type": "a whole number", "float_type": "a number", "bool_type": "true or false",
             "string_type": "a string", "dict_type": "a JSON object", "finite_number": "a finite number"}


@functools.cache
def _schema():
    from pydantic import ConfigDict, Field, create_model

    hints = get_type_hints(Recipe)
    spec = {f.name: (hints[f.name], Field(default=None, **BOUNDS.get(f.name, {}))) for f in fields(Recipe)}
    return create_model("RecipeSchema", __config__=ConfigDict(strict=True, allow_inf_nan=False), **spec)


def _short(value: Any) -> str:
    """``value`` as JSON writes it (``"2"``, ``null``, ``[1]``), cut to 60 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    """The JSON name of ``value``'s type."""
    for types, name in ((bool, "true/false"), (int, "a whole number"), (float, "a number"), (str, "a string"),
                        (dict, "an object"), ((list, tuple), "a list"), (type(None), "null")):
        if isinstance(value, types):
            return name
    return type(value).__name__


def check_types(values: dict[str, Any], source: str = "recipe") -> None:
    """A :class:`ConfigError` for the first value in ``values`` (recipe keys) of the wrong type or out of range."""
    from pydantic import ValidationError

    try:
        _schema().model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(part) for part in err["loc"])
        ctx = err.get("ctx", {})
        expected = _EXPECTED.get(err["type"]) or err["msg"].replace("Input should be ", "")
        if err["type"] in ("int_type", "float_type") and isinstance(err.get("input"), str):
            expected += " (without quotes)"
        if "ge" in ctx or "gt" in ctx or "lt" in ctx:
            expected = err["msg"].replace("Input should be ", "a number ")
        value = values.get(key, err.get("input"))
        raise errors.ConfigError(f"{source}: {key} is {_short(value)} ({_kind(value)}); expected {expected}") from None


def check_mixup_teacher(recipe: Recipe, online: bool) -> None:
    """A :class:`ConfigError` if a distillation recipe mixes batches that its teacher does not score (cached)."""
    if recipe.mixup and not online:
        raise errors.ConfigError("recipe: mixup in distillation needs the teacher to score the blended images; "
                                 "add --teacher-online (cached teacher outputs are of the unblended images)")
