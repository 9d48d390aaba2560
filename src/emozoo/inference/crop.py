"""The face crop a model sees, as its config's margin and aspect ratio say."""
from __future__ import annotations

import numpy as np


def crop_face(image: np.ndarray, box, margin: float = 0.1, aspect: float = 1.0) -> np.ndarray:
    """The face crop a model sees: ``box`` grown by ``margin`` of its width and height on each side,
    then widened to the ``aspect`` ratio (width / height) of the model's input, around the same
    centre; parts outside the image are black."""
    x0, y0, x1, y1 = box
    w, h = (x1 - x0) * (1 + 2 * margin), (y1 - y0) * (1 + 2 * margin)
    w, h = max(w, h * aspect, 1.0), max(h, w / aspect, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - w / 2)), int(round(cy - h / 2))
    right, bottom = left + max(1, int(round(w))), top + max(1, int(round(h)))
    H, W = image.shape[:2]
    if left >= 0 and top >= 0 and right <= W and bottom <= H:
        return image[top:bottom, left:right].copy()
    crop = np.zeros((bottom - top, right - left, image.shape[2]), image.dtype)
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(right, W), min(bottom, H)
    if sx1 > sx0 and sy1 > sy0:
        crop[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = image[sy0:sy1, sx0:sx1]
    return crop
