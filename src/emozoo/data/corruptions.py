"""What real cameras and face detectors do to faces, as repeatable image corruptions.

Each corruption works on a float batch ``(B, C, H, W)`` of pixels in ``[0, 1]`` (or one ``(C, H, W)`` image)
and returns the same shape, dtype and range. Strengths are given for a 48-pixel face and scaled to the image's
size: ``blur:1.5`` is a Gaussian of sigma 1.5 px on a 48 px face (3 px on a 96 px one), ``downscale:24`` shrinks
the face to half its size and back. Random choices (noise, which way a box shifts, where a patch lands) come
from ``generator``, so a seed repeats them.

=============  =======================================  ================  ==========================
kind           what it does                             strength          default
=============  =======================================  ================  ==========================
``jpeg``       JPEG compression                         quality 1-100     30
``blur``       Gaussian blur                            sigma (px @ 48)   1.5
``downscale``  shrink (area) and enlarge (bilinear)     size (px @ 48)    24
``noise``      additive Gaussian noise                  std of [0, 1]     0.08
``lowlight``   darker: ``x * s``                        gain in (0, 1]    0.3
``contrast``   flatter: ``mean + s (x - mean)``         factor in (0, 1]  0.3
``rotate``     in-plane turn, left or right             degrees           20
``shift``      the box moved by a fraction of its size  fraction          0.15
``scale``      the box grown (>1) or shrunk (<1)        factor            1.25
``eyes``       a grey band over the eyes                band height       0.2
``mouth``      a grey band over the mouth               band height       0.2
``patch``      a grey square at a random place          area fraction     0.2
=============  =======================================  ================  ==========================

The eye and mouth bands sit where they fall on a face cropped as FER2013 and FER+ crop them (eyes at 35 %,
mouth at 75 % of the height). :func:`parse` reads ``KIND[:STRENGTH]``; :data:`REPORT` lists the corruptions
``emozoo eval --corrupt`` and ``benchmarks/robustness.py`` report on; :func:`random_corrupt` is the training
augmentation (``Recipe.corrupt``).
"""
from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError

GREY = 0.5
#: the vertical centre of each band on a FER-style crop, as a fraction of the height
BAND_CENTRE = {"eyes": 0.35, "mouth": 0.75}


def _jpeg(x: torch.Tensor, quality: float, generator=None) -> torch.Tensor:
    """JPEG through Pillow (libjpeg, 4:2:0 chroma as cameras write it); a grey face given in 3 equal channels is
    compressed as grey, as its 1-channel twin is, so 1- and 3-channel models see the same face."""
    q = int(round(min(max(quality, 1), 100)))
    if x.shape[1] not in (1, 3):
        raise ConfigError(f"jpeg needs 1 or 3 channels, got {x.shape[1]}")
    u8 = (x * 255).round().clamp(0, 255).to(torch.uint8).cpu()
    out = []
    for image in u8:
        grey = image.shape[0] == 1 or bool((image == image[:1]).all())
        pixels = image[0].numpy() if grey else image.permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=q)
        decoded = torch.from_numpy(np.array(Image.open(io.BytesIO(buffer.getvalue()))))
        out.append(decoded.expand(image.shape[0], *decoded.shape) if grey else decoded.permute(2, 0, 1))
    return (torch.stack(out).to(x.device, x.dtype) / 255).contiguous()


def _blur(x: torch.Tensor, sigma: float, generator=None) -> torch.Tensor:
    s = sigma * x.shape[-2] / 48
    if s <= 0:
        return x
    k = 2 * math.ceil(3 * s) + 1
    return TF.gaussian_blur(x, [k, k], [s, s])


def _downscale(x: torch.Tensor, size: float, generator=None) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = [max(1, round(size * h / 48)), max(1, round(size * w / 48))]
    if small[0] >= h:
        return x
    return F.interpolate(F.interpolate(x, small, mode="area"), (h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def _noise(x: torch.Tensor, std: float, generator=None) -> torch.Tensor:
    n = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + std * n).clamp(0, 1)


def _lowlight(x: torch.Tensor, gain: float, generator=None) -> torch.Tensor:
    if gain == 1:
        return x
    return (x * gain).clamp(0, 1)


def _contrast(x: torch.Tensor, factor: float, generator=None) -> torch.Tensor:
    if factor == 1:
        return x
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 1)


def _signs(n: int, generator, device) -> torch.Tensor:
    return torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` with the (B, 2, 3) affine ``theta`` (output -> input), edges repeated."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp(0, 1)


def _rotate(x: torch.Tensor, degrees: float, generator=None) -> torch.Tensor:
    if degrees == 0:
        return x
    a = _signs(len(x), generator, x.device) * math.radians(degrees)
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _warp(x, theta)


def _shift(x: torch.Tensor, fraction: float, generator=None) -> torch.Tensor:
    if fraction == 0:
        return x
    b = len(x)
    angle = torch.rand(b, generator=generator, device=x.device) * 2 * math.pi  # any direction, this distance
    eye = torch.eye(2, device=x.device).expand(b, 2, 2)
    offset = torch.stack([torch.cos(angle), torch.sin(angle)], 1) * fraction * 2  # grid units span 2
    return _warp(x, torch.cat([eye, offset.unsqueeze(2)], 2))


def _scale(x: torch.Tensor, factor: float, generator=None) -> torch.Tensor:
    if factor == 1:
        return x
    theta = torch.tensor([[factor, 0.0, 0.0], [0.0, factor, 0.0]], device=x.device).expand(len(x), 2, 3)
    return _warp(x, theta)


def _band(x: torch.Tensor, height: float, centre: float) -> torch.Tensor:
    if height <= 0:
        return x
    h = x.shape[-2]
    top = max(0, round((centre - height / 2) * h))
    bottom = min(h, max(top + 1, round((centre + height / 2) * h)))
    out = x.clone()
    out[..., top:bottom, :] = GREY
    return out


def _eyes(x: torch.Tensor, height: float, generator=None) -> torch.Tensor:
    return _band(x, height, BAND_CENTRE["eyes"])


def _mouth(x: torch.Tensor, height: float, generator=None) -> torch.Tensor:
    return _band(x, height, BAND_CENTRE["mouth"])


def _patch(x: torch.Tensor, area: float, generator=None) -> torch.Tensor:
    if area <= 0:
        return x
    b, _, h, w = x.shape
    side_h, side_w = max(1, round(math.sqrt(area) * h)), max(1, round(math.sqrt(area) * w))
    top = (torch.rand(b, generator=generator, device=x.device) * (h - side_h + 1)).long().clamp(max=h - side_h)
    left = (torch.rand(b, generator=generator, device=x.device) * (w - side_w + 1)).long().clamp(max=w - side_w)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows >= top.view(b, 1, 1)) & (rows < (top + side_h).view(b, 1, 1))
              & (cols >= left.view(b, 1, 1)) & (cols < (left + side_w).view(b, 1, 1)))
    return x.masked_fill(inside.unsqueeze(1), GREY)


#: kind -> (function, default strength, smallest and largest strength allowed)
CORRUPTIONS: dict[str, tuple[Callable[..., torch.Tensor], float, float, float]] = {
    "jpeg": (_jpeg, 30, 1, 100),
    "blur": (_blur, 1.5, 0, 10),
    "downscale": (_downscale, 24, 1, 48),
    "noise": (_noise, 0.08, 0, 1),
    "lowlight": (_lowlight, 0.3, 0.01, 1),
    "contrast": (_contrast, 0.3, 0, 1),
    "rotate": (_rotate, 20, 0, 90),
    "shift": (_shift, 0.15, 0, 0.5),
    "scale": (_scale, 1.25, 0.5, 2),
    "eyes": (_eyes, 0.2, 0, 1),
    "mouth": (_mouth, 0.2, 0, 1),
    "patch": (_patch, 0.2, 0, 1),
}

#: the robustness report: the strengths the issue tracker's independent measurement used and a milder and a
#: harsher neighbour where one is natural
REPORT: tuple[str, ...] = (
    "jpeg:30", "jpeg:15", "jpeg:10", "blur:1", "blur:1.5", "downscale:24", "downscale:20", "downscale:16",
    "noise:0.05", "noise:0.1", "lowlight:0.3", "contrast:0.3", "rotate:15", "rotate:20", "rotate:30",
    "shift:0.1", "shift:0.2", "scale:0.8", "scale:1.25", "eyes:0.2", "mouth:0.2", "patch:0.2",
)


def parse(spec: str) -> tuple[str, float]:
    """``"KIND[:STRENGTH]"`` as ``(kind, strength)``; an unknown kind or a strength out of range is a ConfigError."""
    kind, _, value = str(spec).partition(":")
    kind = kind.strip().lower()
    if kind not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {kind!r}; choose one of {', '.join(CORRUPTIONS)} "
                          "(optionally KIND:STRENGTH, e.g. blur:1.5)")
    _, default, lo, hi = CORRUPTIONS[kind]
    try:
        strength = float(value) if value.strip() else float(default)
    except ValueError:
        raise ConfigError(f"corruption {spec!r}: the strength after ':' must be a number, e.g. {kind}:{default}") from None
    if not lo <= strength <= hi:
        raise ConfigError(f"corruption {spec!r}: {kind} strength must be between {lo:g} and {hi:g}")
    return kind, strength


def canonical(spec: str) -> str:
    """``spec`` written as ``KIND:STRENGTH`` with the default strength filled in (``"blur"`` -> ``"blur:1.5"``)."""
    kind, strength = parse(spec)
    return f"{kind}:{strength:g}"


def corrupt(x: torch.Tensor, spec: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` (``(B, C, H, W)`` or ``(C, H, W)``, pixels in [0, 1]) under the corruption ``spec`` (``KIND[:STRENGTH]``).

    The result has ``x``'s shape, dtype and device, pixels still in [0, 1]. ``generator`` (on ``x``'s device)
    makes the random parts repeatable.
    """
    kind, strength = parse(spec)
    if x.ndim not in (3, 4) or not x.is_floating_point():
        raise ConfigError(f"corrupt() takes a float (C, H, W) or (B, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
    batch = x if x.ndim == 4 else x.unsqueeze(0)
    if len(batch) == 0:
        return x
    out = CORRUPTIONS[kind][0](batch, strength, generator=generator)
    return out if x.ndim == 4 else out[0]


class Corrupt:
    """A transform step that corrupts one image the same way every time: its random draws are seeded by
    ``seed`` and the image's own pixels, so the result does not depend on order, batch or worker.

    Place it where the pipeline holds a float ``(C, H, W)`` image in [0, 1] (:func:`emozoo.data.eval_transform`
    does, given ``corrupt=``).
    """

    def __init__(self, spec: str, seed: int = 0):
        self.spec = spec
        self.kind, self.strength = parse(spec)
        self.seed = int(seed)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return corrupt(image, self.spec, torch.Generator(device=image.device).manual_seed(self.key(image)))

    def key(self, image: torch.Tensor) -> int:
        """The seed of ``image``'s draws: a hash of ``seed``, the image's size and its grey levels (the channel
        mean as 8-bit values), so a face gets the same draws whether it is given in 1 or 3 grey channels."""
        grey = (image.detach().float().mean(0) * 255).round().clamp(0, 255).to(torch.uint8).cpu().contiguous()
        digest = hashlib.blake2b(grey.numpy().tobytes(), digest_size=8,
                                 key=str((self.seed, tuple(grey.shape))).encode()).digest()
        return int.from_bytes(digest, "little") >> 1  # 63 bits: any value torch.Generator.manual_seed takes

    def __repr__(self) -> str:
        return f"Corrupt({self.kind}:{self.strength:g}, seed={self.seed})"


#: ``Recipe.corrupt``: the corruptions a training image may get, each with the range its strength is drawn from
TRAINING = {
    "jpeg": (8, 60), "blur": (0.3, 2.0), "downscale": (12, 36), "noise": (0.0, 0.1), "lowlight": (0.2, 0.9),
    "contrast": (0.2, 0.9), "mouth": (0.1, 0.3), "eyes": (0.1, 0.3), "patch": (0.05, 0.25),
}


def random_corrupt(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training augmentation: each image of the pixel batch ``x`` gets, with probability ``p``, one corruption of
    :data:`TRAINING` (kind uniform, strength uniform in its range); the others pass unchanged."""
    if p <= 0:
        return x
    b, dev = len(x), x.device
    hit = (torch.rand(b, generator=generator, device=dev) < p).nonzero().flatten().tolist()
    if not hit:
        return x
    kinds = list(TRAINING)
    pick = torch.randint(len(kinds), (len(hit),), generator=generator, device=dev).tolist()
    u = torch.rand(len(hit), generator=generator, device=dev).tolist()
    out = x.clone()
    for i, k, r in zip(hit, pick, u):
        lo, hi = TRAINING[kinds[k]]
        out[i] = CORRUPTIONS[kinds[k]][0](x[i:i + 1], lo + r * (hi - lo), generator=generator)[0]
    return out
