"""Following faces from frame to frame of a video, and smoothing their scores."""
from __future__ import annotations

import numpy as np

from .._detectors import Face
from .results import Prediction

#: a face in one frame is the same face as in the previous processed frame when their boxes overlap this much
TRACK_IOU = 0.3


class Tracker:
    """Numbers faces across the frames of one video by box overlap and smooths their scores with an
    exponential moving average: ``p = smooth * p_previous + (1 - smooth) * p_now``."""

    def __init__(self, smooth: float):
        self.smooth = smooth
        self.source: str | None = None
        self.previous: list[tuple[tuple, np.ndarray, int]] = []
        self.next_id = 0

    def update(self, pred: Prediction, faces: list[Face], probs: np.ndarray) -> list[tuple[np.ndarray, int]]:
        """``(smoothed probabilities, track number)`` of each face of a new frame."""
        if pred.source != self.source:
            self.source, self.previous, self.next_id = pred.source, [], 0
        pairs = sorted(((iou(f.box, b), i, j) for i, f in enumerate(faces)
                        for j, (b, _, _) in enumerate(self.previous)), reverse=True)
        match, used = {}, set()
        for overlap, i, j in pairs:
            if overlap >= TRACK_IOU and i not in match and j not in used:
                match[i] = j
                used.add(j)
        out = []
        for i, p in enumerate(probs):
            if i in match:
                _, prev, track = self.previous[match[i]]
                p = self.smooth * prev + (1 - self.smooth) * p
            else:
                track, self.next_id = self.next_id, self.next_id + 1
            out.append((p, track))
        self.previous = [(f.box, p, t) for f, (p, t) in zip(faces, out)]
        return out


def iou(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
