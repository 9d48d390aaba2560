"""Image transforms built from a model's input spec, on ``torchvision.transforms.v2``.

An input spec is a dict (or :class:`emozoo.InputSpec`) with ``in_chans``, ``size`` ``[H, W]``, ``mean``
and ``std``. Every pipeline turns a PIL image, an ``(H, W[, C])`` uint8 array or a ``(C, H, W)`` tensor
into a normalised float32 tensor of shape ``(in_chans, H, W)``: grayscale is repeated to 3 channels,
colour is reduced to 1 by luminance. Augmentation works on the small uint8 image, before conversion.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torchvision.transforms import v2

from ..errors import ConfigError

#: Augmentation strengths for faces: rotation (degrees), translation and scale range (fractions),
#: brightness/contrast jitter, and the probability of erasing a small patch after normalisation.
AUGMENT_STRENGTHS = {
    "light": dict(degrees=5, translate=0.05, scale=0.05, jitter=0.1, erase=0.0),
    "default": dict(degrees=10, translate=0.1, scale=0.1, jitter=0.2, erase=0.25),
    "strong": dict(degrees=15, translate=0.15, scale=0.15, jitter=0.3, erase=0.5),
}


def _read_spec(input_spec: Mapping[str, Any] | Any) -> tuple[int, list[int], list[float], list[float]]:
    get = input_spec.get if isinstance(input_spec, Mapping) else lambda k: getattr(input_spec, k, None)
    in_chans = int(get("in_chans") or 1)
    size = [int(s) for s in get("size") or (48, 48)]
    mean = [float(m) for m in get("mean") or [0.5]]
    std = [float(s) for s in get("std") or [0.5]]
    if in_chans not in (1, 3) or len(size) != 2:
        raise ConfigError(f"input spec needs in_chans 1 or 3 and size [H, W], got {in_chans} and {size}")
    if len(mean) == 1:
        mean = mean * in_chans
    if len(std) == 1:
        std = std * in_chans
    if len(mean) != in_chans or len(std) != in_chans:
        raise ConfigError(f"input spec needs one mean and std per channel ({in_chans}), got {mean} and {std}")
    return in_chans, size, mean, std


def _pipeline(input_spec, augment: dict[str, float] | None) -> v2.Compose:
    in_chans, size, mean, std = _read_spec(input_spec)
    steps = [v2.ToImage(), v2.RGB() if in_chans == 3 else v2.Grayscale(1), v2.Resize(size, antialias=True)]
    if augment:
        steps += [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=augment["degrees"], translate=(augment["translate"],) * 2,
                            scale=(1 - augment["scale"], 1 + augment["scale"])),
            v2.ColorJitter(brightness=augment["jitter"], contrast=augment["jitter"]),
        ]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if augment and augment["erase"] > 0:
        steps.append(v2.RandomErasing(p=augment["erase"], scale=(0.02, 0.1), value=0))
    return v2.Compose(steps + [v2.ToPureTensor()])


def eval_transform(input_spec) -> v2.Compose:
    """Deterministic transform to the model's input: channels, resize, float in [0, 1], normalise."""
    return _pipeline(input_spec, None)


def train_transform(input_spec, strength: str = "default") -> v2.Compose:
    """:func:`eval_transform` plus face augmentation of the given strength.

    ``"default"``: horizontal flip, rotation up to 10 degrees, translation up to 10%, scale 0.9-1.1,
    brightness and contrast jitter of 0.2, then random erasing (p=0.25, 2-10% of the area) after
    normalisation. ``"light"`` and ``"strong"`` scale these (:data:`AUGMENT_STRENGTHS`); ``"none"``
    is :func:`eval_transform`.
    """
    if strength == "none":
        return eval_transform(input_spec)
    if strength not in AUGMENT_STRENGTHS:
        raise ConfigError(f"unknown augmentation strength {strength!r}; choose none, {', '.join(AUGMENT_STRENGTHS)}")
    return _pipeline(input_spec, AUGMENT_STRENGTHS[strength])
