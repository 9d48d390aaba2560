"""What a prediction is: :class:`Prediction` per image or video frame, :class:`FacePrediction` per face."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the label of a face whose top probability is below ``min_confidence``
UNCERTAIN = "uncertain"


@dataclass
class FacePrediction:
    """One face: its ``box`` (x0, y0, x1, y1) in pixels, the detector's ``confidence``, the calibrated probability
    of every label (``scores``, in the model's label order) and the top ``label``. In videos, ``track`` numbers the
    same face from frame to frame.

    How sure the model is: ``margin`` is the top probability minus the second; ``uncertain`` is True when the top
    probability is below ``min_confidence``, and ``label`` is then ``"uncertain"`` (``top_label`` keeps the guess).
    For an ensemble (EmoXNet), ``members`` gives each member's top label (``{"name": "i:backbone", "label": ...}``)
    and ``agreement`` the fraction of members whose top label is ``top_label``; both are None for other models."""

    box: tuple[float, float, float, float]
    confidence: float
    scores: dict[str, float]
    label: str
    track: int | None = None
    margin: float = 0.0
    uncertain: bool = False
    members: list[dict[str, str]] | None = None
    agreement: float | None = None

    @property
    def top_label(self) -> str:
        """The most probable label, also when ``label`` is ``"uncertain"``."""
        return max(self.scores, key=self.scores.get) if self.scores else self.label

    def as_dict(self) -> dict[str, Any]:
        return {"box": [round(v, 1) for v in self.box], "confidence": round(self.confidence, 4),
                "label": self.label, "scores": {k: round(v, 4) for k, v in self.scores.items()}, "track": self.track,
                "margin": round(self.margin, 4), "uncertain": self.uncertain,
                "members": None if self.members is None else [dict(m) for m in self.members],
                "agreement": None if self.agreement is None else round(self.agreement, 4)}


@dataclass
class Prediction:
    """The result for one image or video frame: ``faces`` (empty when there is none), or ``error``
    (``"SOURCE: reason"``) when the input could not be read."""

    source: str
    frame: int | None = None
    #: seconds from the start of the video (frame / fps; wall-clock seconds for a camera)
    time: float | None = None
    #: (width, height) of the image, after EXIF rotation
    size: tuple[int, int] | None = None
    faces: list[FacePrediction] = field(default_factory=list)
    error: str | None = None
    #: the RGB image, kept only with ``keep_images=True`` (for drawing)
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "frame": self.frame, "time": None if self.time is None else round(self.time, 3),
                "size": list(self.size) if self.size else None, "faces": [f.as_dict() for f in self.faces],
                "error": self.error}
