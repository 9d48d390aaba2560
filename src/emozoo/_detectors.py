"""Face detectors: the :class:`Face` they return, and choosing and creating one by name.

Detectors are plugins (hook ``register_face_detectors``). Built in: ``haar`` (OpenCV's frontal-face
Haar cascade, no download) and ``full`` (the whole image is one face, for inputs that are already
face crops). The ``emozoo-blazeface`` plugin package adds ``blazeface`` (MediaPipe BlazeFace), which
found more faces on real photos (``benchmarks/results/detectors.md``) and so is the default whenever
it is installed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._registry import FACE_DETECTORS
from .plugins import _user_register, load_plugins

#: ``detector="auto"`` picks the first of these that is registered (the order comes from
#: ``benchmarks/compare_detectors.py``): the one place where the default detector is decided.
AUTO_ORDER = ("blazeface", "haar")


@dataclass(frozen=True)
class Face:
    """One detected face: ``box`` ``(x0, y0, x1, y1)`` in pixels, ``score`` in [0, 1], optional keypoints."""

    box: tuple[float, float, float, float]
    score: float = 1.0
    keypoints: tuple[tuple[float, float], ...] | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def list_detectors(pattern: str = "*") -> list[str]:
    """Names of the registered face detectors matching ``pattern`` (fnmatch)."""
    load_plugins()
    return FACE_DETECTORS.names(pattern)


def default_detector() -> str:
    """The detector ``"auto"`` stands for: the first of :data:`AUTO_ORDER` that is registered."""
    load_plugins()
    for name in AUTO_ORDER:
        if name in FACE_DETECTORS:
            return name
    return FACE_DETECTORS.names()[0]


def create_detector(name: Any = "auto", **options: Any):
    """A face detector by registered name (``"auto"``: :func:`default_detector`), made with ``options``.

    An object that already has a ``detect`` method is returned as it is.
    """
    if not isinstance(name, str):
        if callable(getattr(name, "detect", None)):
            return name
        raise TypeError(f"detector must be a name or an object with detect(image), got {type(name).__name__}")
    load_plugins()
    if name == "auto":
        name = default_detector()
    return FACE_DETECTORS.get(name).factory(**options)


def register_face_detector(name: str, factory: Callable | None = None, *, description: str | None = None):
    """Register a face detector from your own code (call or decorator, as :func:`emozoo.register_backbone`).

    ``factory(**options)`` returns an object with ``detect(image) -> list[emozoo.Face]`` (see the
    ``register_face_detectors`` hook); ``emozoo.predict(..., detector=name)`` then uses it.
    """
    return _user_register(FACE_DETECTORS, name, factory, description)
