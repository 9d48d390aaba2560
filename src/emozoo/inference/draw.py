"""Drawing each face's box and top label onto its image."""
from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np

from .results import UNCERTAIN, FacePrediction


def draw_faces(image: np.ndarray, faces: Iterable[FacePrediction]) -> np.ndarray:
    """A copy of the RGB ``image`` with each face's box and top label (with its probability) drawn; a face below
    ``min_confidence`` reads ``uncertain (label p)`` on a dark grey box."""
    import cv2

    out = np.ascontiguousarray(image).copy()
    H, W = out.shape[:2]
    scale = max(0.4, max(H, W) / 1600)
    thick, text_thick = max(1, round(max(H, W) / 500)), max(1, round(scale * 1.5))
    for face in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        color = _LABEL_COLORS.get(face.label) or _COLORS[zlib.crc32(face.label.encode()) % len(_COLORS)]
        cv2.rectangle(out, (x0, y0), (x1, y1), color, thick)
        top, prob = face.top_label, face.scores.get(face.top_label, 0)
        text = f"{UNCERTAIN} ({top} {prob:.2f})" if face.uncertain else f"{face.label} {prob:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, text_thick)
        tx = max(0, min(x0, W - tw - 4))
        ty = y0 - base - 2 if y0 - th - base - 2 >= 0 else min(H - base, y1 + th + 2)
        cv2.rectangle(out, (tx, ty - th - 2), (tx + tw + 4, ty + base), color, -1)
        cv2.putText(out, text, (tx + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), text_thick, cv2.LINE_AA)
    return out


_LABEL_COLORS = {"neutral": (128, 128, 128), "happiness": (0, 170, 0), "surprise": (230, 160, 0),
                 "sadness": (40, 90, 220), "anger": (220, 30, 30), "disgust": (120, 80, 0), "fear": (150, 50, 200),
                 "contempt": (200, 0, 120)}
_COLORS = list(_LABEL_COLORS.values())
_LABEL_COLORS[UNCERTAIN] = (60, 60, 60)
