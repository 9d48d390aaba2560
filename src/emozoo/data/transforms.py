"""Image transforms built from a model's input spec, on ``torchvision.transforms.v2``.

An input spec is a dict (or :class:`emozoo.InputSpec`) with ``in_chans``, ``size`` ``[H, W]``, ``mean``
and ``std``. Every pipeline turns a PIL image, an ``(H, W[, C])`` uint8 array or a ``(C, H, W)`` tensor
into a normalised float32 tensor of shape ``(in_chans, H, W)``: grayscale is repeated to 3 channels,
colour is reduced to 1 by luminance. Augmentation works on the small uint8 image, before conversion.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from ..errors import ConfigError, DataError

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


class _CheckPixels:
    """The first step of every pipeline: a float image must hold pixels in [0, 1] (a float image in
    [0, 255] would reach the model 255 times too bright), and no image may hold NaN or infinity.
    uint8 arrays, integer tensors and PIL images pass unchecked and unchanged."""

    def __call__(self, image: Any) -> Any:
        floating = ((isinstance(image, torch.Tensor) and image.is_floating_point())
                    or (hasattr(image, "dtype") and getattr(image.dtype, "kind", "") == "f"))
        if not floating:
            return image
        t = torch.as_tensor(image)
        if t.numel() == 0:
            return image
        if not torch.isfinite(t).all():
            raise DataError("face image: it holds NaN or infinite values; pass a uint8 image (0-255) or floats in [0, 1]")
        lo, hi = float(t.min()), float(t.max())
        if lo < 0 or hi > 1:
            raise DataError(f"face image: float pixels must be in [0, 1], got values from {lo:g} to {hi:g}; "
                            "divide a 0-255 image by 255 or pass it as uint8")
        return image


def _corrupt_steps(corrupt, seed: int) -> list:
    """One :class:`~emozoo.data.corruptions.Corrupt` step per spec of ``corrupt`` (a spec or a list, applied in order)."""
    if not corrupt:
        return []
    from .corruptions import Corrupt

    specs = [corrupt] if isinstance(corrupt, str) else list(corrupt)
    return [Corrupt(spec, seed) for spec in specs]


def _pipeline(input_spec, augment: dict[str, float] | None, corrupt=None, seed: int = 0) -> v2.Compose:
    in_chans, size, mean, std = _read_spec(input_spec)
    corrupt_steps = _corrupt_steps(corrupt, seed)
    steps = [_CheckPixels(), v2.ToImage(), v2.RGB() if in_chans == 3 else v2.Grayscale(1), v2.Resize(size, antialias=True)]
    if augment:
        steps += [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=augment["degrees"], translate=(augment["translate"],) * 2,
                            scale=(1 - augment["scale"], 1 + augment["scale"])),
            v2.ColorJitter(brightness=augment["jitter"], contrast=augment["jitter"]),
        ]
    steps += [v2.ToDtype(torch.float32, scale=True), *corrupt_steps, v2.Normalize(mean, std)]
    if augment and augment["erase"] > 0:
        steps.append(v2.RandomErasing(p=augment["erase"], scale=(0.02, 0.1), value=0))
    return v2.Compose(steps + [v2.ToPureTensor()])


def eval_transform(input_spec, corrupt: str | Sequence[str] | None = None, seed: int = 0) -> v2.Compose:
    """Deterministic transform to the model's input: channels, resize, float in [0, 1], normalise.

    ``corrupt`` (``"KIND[:STRENGTH]"`` or a list of them, applied in order; see :mod:`emozoo.data.corruptions`)
    passes each face through camera corruptions after the resize, on the float image in [0, 1], before
    normalising. Their random draws depend only on ``seed`` and the face's pixels, so every run, order and
    batch size gives each face the same corruption. An unknown kind or a strength out of range is a ConfigError.
    """
    return _pipeline(input_spec, None, corrupt, seed)


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


def _batch_mean_std(input_spec, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec's per-channel mean and std as ``(1, C, 1, 1)`` tensors on ``x``'s device and dtype (to undo and
    redo the normalisation of a batch ``x``)."""
    _, _, mean, std = _read_spec(input_spec)
    return (torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1),
            torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1))


def augment_batch(x: torch.Tensor, input_spec, strength: str = "default",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`train_transform`'s face augmentation applied to a whole normalised batch at once.

    ``x`` is ``(B, C, H, W)`` as :func:`eval_transform` makes it, on any device; the result has the same
    shape, device and dtype. Each image gets its own draw of the same operations as ``train_transform``:
    horizontal flip (p=0.5), rotation, translation and scale (bilinear, black fill), brightness and
    contrast jitter, then random erasing after normalisation. Training with ``Recipe.batch_augment``
    uses this on the training device instead of per-image augmentation in loader workers, which keeps
    a GPU busy that the loader could not feed. ``generator`` (on ``x``'s device) makes it repeatable.
    """
    if strength == "none":
        return x
    if strength not in AUGMENT_STRENGTHS:
        raise ConfigError(f"unknown augmentation strength {strength!r}; choose none, {', '.join(AUGMENT_STRENGTHS)}")
    if x.ndim != 4:
        raise ConfigError(f"augment_batch expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    a = AUGMENT_STRENGTHS[strength]
    mean_t, std_t = _batch_mean_std(input_spec, x)
    b, c, h, w = x.shape
    dev = x.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator, device=dev)

    pixels = x * std_t + mean_t
    # geometry: output point o samples the input at F (A^-1 (o - t)), A = scale * rotation, F = optional mirror
    angle = uniform(-a["degrees"], a["degrees"]) * (math.pi / 180)
    scale = uniform(1 - a["scale"], 1 + a["scale"])
    shift = torch.stack([uniform(-a["translate"], a["translate"]), uniform(-a["translate"], a["translate"])], 1) * 2
    mirror = torch.where(torch.rand(b, generator=generator, device=dev) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    inverse = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # (B, 2, 2)
    offset = -(inverse @ shift.unsqueeze(2))  # (B, 2, 1)
    theta = torch.cat([inverse, offset], 2)
    theta[:, 0] *= mirror.unsqueeze(1)
    grid = F.affine_grid(theta.to(x.dtype), [b, c, h, w], align_corners=False)
    pixels = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # photometric: brightness then contrast around each image's mean grey level
    bright = uniform(1 - a["jitter"], 1 + a["jitter"]).view(b, 1, 1, 1)
    pixels = (pixels * bright).clamp(0, 1)
    contrast = uniform(1 - a["jitter"], 1 + a["jitter"]).view(b, 1, 1, 1)
    grey = pixels.mean(dim=(1, 2, 3), keepdim=True)
    pixels = ((pixels - grey) * contrast + grey).clamp(0, 1)
    out = (pixels - mean_t) / std_t
    if a["erase"] > 0:  # one rectangle of 2-10 % of the area, aspect ratio 0.3-3.3, set to 0
        area = uniform(0.02, 0.1) * h * w
        ratio = torch.exp(uniform(math.log(0.3), math.log(3.3)))
        eh = (area * ratio).sqrt().clamp(1, h)
        ew = (area / ratio).sqrt().clamp(1, w)
        top = uniform(0, 1) * (h - eh)
        left = uniform(0, 1) * (w - ew)
        rows = torch.arange(h, device=dev).view(1, h)
        cols = torch.arange(w, device=dev).view(1, w)
        inside_r = (rows >= top.view(b, 1)) & (rows < (top + eh).view(b, 1))
        inside_c = (cols >= left.view(b, 1)) & (cols < (left + ew).view(b, 1))
        erase = torch.rand(b, generator=generator, device=dev) < a["erase"]
        mask = (inside_r.unsqueeze(2) & inside_c.unsqueeze(1)) & erase.view(b, 1, 1)
        out = out.masked_fill(mask.unsqueeze(1), 0.0)
    return out


def corrupt_batch(x: torch.Tensor, input_spec, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A normalised batch (as :func:`augment_batch` returns it) with, per image and with probability ``p``, one
    random camera corruption (:func:`emozoo.data.corruptions.random_corrupt`) applied to its pixels."""
    from .corruptions import random_corrupt

    if p <= 0:
        return x
    mean_t, std_t = _batch_mean_std(input_spec, x)
    pixels = (x * std_t + mean_t).clamp(0, 1)
    return (random_corrupt(pixels, p, generator) - mean_t) / std_t


def face_transform(model_or_config):
    """The callable that turns one face crop into ``model``'s input tensor ``(C, H, W)``.

    It accepts a PIL image, a uint8 ``(H, W)`` or ``(H, W, 3)`` array or a ``(C, H, W)`` tensor (uint8, or
    float with pixels in [0, 1]: a float image outside [0, 1], or with NaN, raises
    :class:`emozoo.DataError` rather than being guessed at), and follows the model's ``config.input``
    (channels, size, mean/std), exactly as in training and evaluation. Stack its outputs with
    ``torch.stack`` for a batch.
    """
    from .._config import ModelConfig

    config = model_or_config if isinstance(model_or_config, ModelConfig) else getattr(model_or_config, "config", None)
    if not isinstance(config, ModelConfig):
        raise ConfigError("face_transform() needs a model made by emozoo.create() (or its ModelConfig)")
    return eval_transform(config.input)
