"""``emozoo.predict``: the expression of every face in photos, arrays and videos.

Each input (an image file, a directory searched recursively, a glob pattern, a PIL image, a uint8 RGB
array, a video file, or ``"camera:N"`` for a webcam) becomes one :class:`Prediction` per image or
video frame. Faces are found by a face detector (see :mod:`emozoo._detectors`), cropped exactly as
the model's ``config.input`` says (margin, aspect ratio, then :func:`emozoo.face_transform`:
channels, size, mean/std) and classified in batches across images and frames. A file that cannot
be read gives a :class:`Prediction` with ``error`` set, and the rest carry on.
"""
from __future__ import annotations

import glob
import math
import os
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from ._detectors import Face, create_detector
from .errors import ConfigError, DataError

IMAGE_EXTS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
              ".pbm", ".pnm"}
VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv"}
CAMERA_PREFIX = "camera:"
#: a face in one frame is the same face as in the previous processed frame when their boxes overlap this much
TRACK_IOU = 0.3


@dataclass
class FacePrediction:
    """One face: its ``box`` (x0, y0, x1, y1) in pixels, the detector's ``confidence``, the probability of
    every label (``scores``, in the model's label order) and the top ``label``. In videos, ``track``
    numbers the same face from frame to frame."""

    box: tuple[float, float, float, float]
    confidence: float
    scores: dict[str, float]
    label: str
    track: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"box": [round(v, 1) for v in self.box], "confidence": round(self.confidence, 4),
                "label": self.label, "scores": {k: round(v, 4) for k, v in self.scores.items()}, "track": self.track}


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


# -- reading images ---------------------------------------------------------------------------------
def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an RGB uint8 array, upright (EXIF orientation applied).

    Raises :class:`emozoo.DataError` ``"PATH: reason"`` for a missing, empty, truncated, corrupt or
    unknown file, and for one larger than ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb).
    """
    try:
        if Path(path).stat().st_size == 0:
            reason = "empty file"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    im.load()
                    return to_rgb(ImageOps.exif_transpose(im))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        reason = f"refused as a possible decompression bomb: {exc}"
    except UnidentifiedImageError:
        reason = "not an image, or a format Pillow cannot read"
    except FileNotFoundError:
        reason = "no such file"
    except IsADirectoryError:
        reason = "is a directory"
    except PermissionError:
        reason = "permission denied"
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # what Pillow raises for broken data
        reason = f"truncated or corrupt image ({exc})"
    raise DataError(f"{path}: {reason}")


def to_rgb(im: Image.Image) -> np.ndarray:
    """A PIL image of any mode as an RGB uint8 array: 16- and 32-bit images are scaled down, CMYK and
    palettes converted, and transparency flattened onto white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        peak = a.max(initial=0)
        top = 65535.0 if im.mode.startswith("I;16") or peak > 255 else 1.0 if im.mode == "F" and peak <= 1 else 255.0
        return np.repeat(np.clip(a * (255.0 / top), 0, 255).round().astype(np.uint8)[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.array(im.convert("RGB"))


def array_to_rgb(a: np.ndarray, name: str = "array") -> np.ndarray:
    """A uint8 ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA) array as RGB."""
    if a.dtype != np.uint8:
        raise DataError(f"{name}: arrays must be uint8 (0-255), got {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or min(a.shape[:2]) < 1:
        raise DataError(f"{name}: arrays must be (H, W), (H, W, 3) RGB or (H, W, 4) RGBA, got shape {a.shape}")
    if a.shape[2] == 4:
        return to_rgb(Image.fromarray(a, "RGBA"))
    return np.ascontiguousarray(np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a)


# -- expanding inputs -----------------------------------------------------------------------------------
def expand_inputs(inputs: Any) -> list[Any]:
    """Inputs as a flat list: directories become their image and video files (recursively, sorted) and
    glob patterns their matches; a path that does not exist stays, to be reported as an error."""
    if isinstance(inputs, (str, os.PathLike, np.ndarray, Image.Image)):
        inputs = [inputs]
    out: list[Any] = []
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)) or str(item).startswith(CAMERA_PREFIX):
            out.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            out += sorted((p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS),
                          key=lambda p: str(p))
        elif not path.exists() and glob.has_magic(str(item)):
            matches = sorted(p for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
            out += [Path(p) for p in matches] if matches else [item]
        else:
            out.append(path)
    return out


def _frames(items: list[Any], every: int, keep: bool, progress) -> Iterator[tuple[Prediction, np.ndarray | None]]:
    """``(prediction, rgb image or None)`` for every image and every ``every``-th video frame."""
    unnamed = 0
    for item in items:
        if isinstance(item, (np.ndarray, Image.Image)):
            kind = "array" if isinstance(item, np.ndarray) else "image"
            pred = Prediction(f"<{kind} {unnamed}>")
            unnamed += 1
            try:
                image = array_to_rgb(item, pred.source) if kind == "array" else to_rgb(ImageOps.exif_transpose(item))
            except DataError as exc:
                pred.error = str(exc)
                yield pred, None
                continue
            yield _ready(pred, image, keep), image
        elif isinstance(item, (str, os.PathLike)):
            pred = Prediction(str(item))
            if str(item).startswith(CAMERA_PREFIX) or Path(item).suffix.lower() in VIDEO_EXTS and Path(item).exists():
                yield from _video_frames(str(item), every, keep, progress)
                continue
            if not Path(item).exists():
                reason = "no file matches this pattern" if glob.has_magic(str(item)) else "no such file"
                yield _failed(pred, reason), None
                continue
            try:
                image = load_image(item)
            except DataError as exc:
                pred.error = str(exc)
                yield pred, None
                continue
            yield _ready(pred, image, keep), image
        else:
            yield _failed(Prediction(repr(item)[:60]), f"unsupported input type {type(item).__name__}"), None


def _ready(pred: Prediction, image: np.ndarray, keep: bool) -> Prediction:
    pred.size = (image.shape[1], image.shape[0])
    if keep:
        pred.image = image
    return pred


def _failed(pred: Prediction, reason: Any) -> Prediction:
    pred.error = f"{pred.source}: {reason}"
    return pred


def open_capture(source: str):
    """``cv2.VideoCapture`` of a video file, or of webcam N for ``"camera:N"``."""
    import cv2

    if source.startswith(CAMERA_PREFIX):
        index = source[len(CAMERA_PREFIX):]
        if not index.isdigit():
            raise DataError(f"{source}: a camera is camera:INDEX with INDEX a number")
        return cv2.VideoCapture(int(index))
    return cv2.VideoCapture(source)


def _video_frames(source: str, every: int, keep: bool, progress) -> Iterator[tuple[Prediction, np.ndarray | None]]:
    import cv2

    camera = source.startswith(CAMERA_PREFIX)
    try:
        cap = open_capture(source)
    except DataError as exc:
        yield Prediction(source, error=str(exc)), None
        return
    if not cap.isOpened():
        yield _failed(Prediction(source), "cannot open this camera" if camera else
                      "cannot open this video (not a video, or a codec OpenCV lacks)"), None
        return
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    bar = _bar(progress, total=math.ceil(total / every) if total > 0 else None, desc=Path(source).name, unit="frame",
               show=camera or total > every)
    start, index, produced = time.monotonic(), 0, 0
    try:
        while True:
            if index % every:
                if not cap.grab():
                    break
                index += 1
                continue
            ok, bgr = cap.read()
            if not ok:
                break
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            seconds = time.monotonic() - start if camera else (index / fps if fps > 0 else None)
            produced += 1
            bar.update()
            yield _ready(Prediction(source, frame=index, time=seconds), image, keep), image
            index += 1
    finally:
        cap.release()
        bar.close()
    if produced == 0:
        yield _failed(Prediction(source), "no frame could be decoded"), None


def _bar(progress: bool | None, total=None, desc=None, unit="it", show=True):
    """A tqdm bar on stderr: ``progress=None`` shows it when ``show`` and stderr is a terminal."""
    from tqdm.auto import tqdm

    if progress is None:
        disable = None if show else True  # None: tqdm shows it only on a terminal
    else:
        disable = not progress
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=disable, dynamic_ncols=True)


# -- cropping and classifying ---------------------------------------------------------------------------
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


def load_model(model: str | nn.Module, device: str | torch.device | None = None) -> nn.Module:
    """``model`` as an evaluation-mode module: a name (or a saved folder) is ``emozoo.create(name, pretrained=True)``."""
    from ._builder import create
    from ._config import ModelConfig

    if isinstance(model, str):
        model = create(model, pretrained=True)
    if not isinstance(getattr(model, "config", None), ModelConfig):
        raise ConfigError("predict() needs a model name or a model made by emozoo.create() (with .config)")
    return model.to(device or "cpu").eval()


class _Tracker:
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
        pairs = sorted(((_iou(f.box, b), i, j) for i, f in enumerate(faces)
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


def _iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# -- the front door -----------------------------------------------------------------------------------
class Predictor:
    """A model and a face detector, ready to run on images and frames (what :func:`predict` uses).

    ``detect(image)`` finds the faces of one RGB image, ``crops(image, faces)`` prepares them as the
    model's inputs, ``classify(crops)`` returns their label probabilities in batches, and calling it
    on inputs yields :class:`Prediction` objects. Build it once to run it on many inputs.
    """

    def __init__(self, model: str | nn.Module = "emoxnetlite", detector: Any = "auto", *, batch_size: int = 32,
                 min_face: float = 0, device: str | torch.device | None = None):
        from .data.transforms import face_transform

        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.model = load_model(model, device)
        self.detector = create_detector(detector)
        self.batch_size, self.min_face = batch_size, min_face
        self.labels = self.model.config.label_names
        self.spec = self.model.config.input
        self.to_input = face_transform(self.model)
        self.device = next(self.model.parameters()).device

    def detect(self, image: np.ndarray) -> list[Face]:
        """The detector's faces in an RGB uint8 image, less those smaller than ``min_face``."""
        return [f for f in self.detector.detect(image) if min(f.width, f.height) >= self.min_face]

    def crops(self, image: np.ndarray, faces: Iterable[Face]) -> list[torch.Tensor]:
        """Each face as the model's input: :func:`crop_face` with the config's margin and aspect ratio,
        then :func:`emozoo.face_transform` (channels, size, mean/std)."""
        aspect = self.spec.size[1] / self.spec.size[0]
        return [self.to_input(crop_face(image, f.box, self.spec.crop_margin, aspect)) for f in faces]

    @torch.inference_mode()
    def classify(self, crops: list[torch.Tensor]) -> np.ndarray:
        """Label probabilities ``(N, num_classes)`` of N crops, ``batch_size`` crops per forward pass."""
        if not crops:
            return np.zeros((0, len(self.labels)), np.float32)
        out = [self.model(torch.stack(crops[i:i + self.batch_size]).to(self.device)).float().softmax(-1).cpu()
               for i in range(0, len(crops), self.batch_size)]
        return torch.cat(out).numpy()

    def __call__(self, inputs: Any, *, every: int = 1, smooth: float = 0.0, keep_images: bool = False,
                 progress: bool | None = None) -> Iterator[Prediction]:
        """Yield a :class:`Prediction` per image and per ``every``-th video frame, in input order."""
        if every < 1:
            raise ConfigError(f"every must be at least 1, got {every}")
        if not 0 <= smooth < 1:
            raise ConfigError(f"smooth must be in [0, 1) (0: no smoothing), got {smooth}")
        return self._run(expand_inputs(inputs), every, _Tracker(smooth), keep_images, progress)

    def _run(self, items, every, tracker, keep_images, progress) -> Iterator[Prediction]:
        pending: list[tuple[Prediction, list[Face]]] = []
        crops: list[torch.Tensor] = []
        bar = _bar(progress, total=len(items), desc="predict", unit="input", show=len(items) > 1)
        last_source = None
        for pred, image in _frames(items, every, keep_images, progress):
            if last_source is not None and pred.source != last_source:
                bar.update()
            last_source = pred.source
            faces = self.detect(image) if image is not None else []
            crops += self.crops(image, faces)
            pending.append((pred, faces))
            if len(crops) >= self.batch_size or pred.source.startswith(CAMERA_PREFIX):  # a camera waits for no batch
                yield from self._finish(pending, crops, tracker)
        yield from self._finish(pending, crops, tracker)
        bar.update()
        bar.close()

    def _finish(self, pending, crops, tracker) -> Iterator[Prediction]:
        """Classify the crops of the pending predictions, fill in their faces and yield them."""
        probs = self.classify(crops)
        k = 0
        for pred, faces in pending:
            found, k = probs[k:k + len(faces)], k + len(faces)
            tracked = tracker.update(pred, faces, found) if pred.frame is not None else [(p, None) for p in found]
            pred.faces = [FacePrediction(f.box, f.score, dict(zip(self.labels, map(float, p))),
                                         self.labels[int(np.argmax(p))], track) for f, (p, track) in zip(faces, tracked)]
            yield pred
        pending.clear()
        crops.clear()


def iter_predict(inputs: Any, model: str | nn.Module = "emoxnetlite", detector: Any = "auto", *,
                 batch_size: int = 32, every: int = 1, smooth: float = 0.0, min_face: float = 0,
                 device: str | torch.device | None = None, keep_images: bool = False,
                 progress: bool | None = None) -> Iterator[Prediction]:
    """Like :func:`predict`, but yields each :class:`Prediction` as soon as its faces are classified,
    in input order: for long videos and for cameras (``"camera:0"``), which never end."""
    predictor = Predictor(model, detector, batch_size=batch_size, min_face=min_face, device=device)
    return predictor(inputs, every=every, smooth=smooth, keep_images=keep_images, progress=progress)


def predict(inputs: Any, model: str | nn.Module = "emoxnetlite", detector: Any = "auto", *,
            batch_size: int = 32, every: int = 1, smooth: float = 0.0, min_face: float = 0,
            device: str | torch.device | None = None, keep_images: bool = False,
            progress: bool | None = None) -> list[Prediction]:
    """The expression of every face in ``inputs``: one :class:`Prediction` per image or video frame.

    - ``inputs``: an image or video path, a directory (searched recursively), a glob pattern
      (``"photos/**/*.jpg"``), a PIL image, a uint8 RGB array ``(H, W, 3)``, or a list of these.
    - ``model``: a name (``emozoo.create(name, pretrained=True)``) or a model from :func:`emozoo.create`.
    - ``detector``: a registered face detector (``emozoo.list_detectors()``; ``"auto"``: BlazeFace when
      the ``emozoo-blazeface`` plugin is installed, else OpenCV's Haar cascade; ``"full"``: the
      inputs are already face crops) or an object with ``detect(image) -> list[emozoo.Face]``.
    - ``batch_size``: faces per forward pass; faces of many images and frames share a batch.
    - ``every``: in videos, classify every N-th frame; ``smooth``: in videos, weight in [0, 1) of the
      previous frames in an exponential moving average of each tracked face's scores.
    - ``min_face``: ignore faces narrower or shorter than this many pixels.

    An input that cannot be read (missing, empty, truncated, not an image, too large) gives a
    :class:`Prediction` whose ``error`` says why; the others are unaffected. An image without a
    face has an empty ``faces`` list. Each face has ``box``, ``confidence``, ``scores`` (every
    label's probability) and ``label``; ``as_dict()`` gives plain JSON-ready data.
    """
    return list(iter_predict(inputs, model, detector, batch_size=batch_size, every=every, smooth=smooth,
                             min_face=min_face, device=device, keep_images=keep_images, progress=progress))


def draw_faces(image: np.ndarray, faces: Iterable[FacePrediction]) -> np.ndarray:
    """A copy of the RGB ``image`` with each face's box and top label (with its probability) drawn."""
    import cv2

    out = np.ascontiguousarray(image).copy()
    H, W = out.shape[:2]
    scale = max(0.4, max(H, W) / 1600)
    thick, text_thick = max(1, round(max(H, W) / 500)), max(1, round(scale * 1.5))
    for face in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        color = _LABEL_COLORS.get(face.label) or _COLORS[zlib.crc32(face.label.encode()) % len(_COLORS)]
        cv2.rectangle(out, (x0, y0), (x1, y1), color, thick)
        text = f"{face.label} {face.scores.get(face.label, 0):.2f}"
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
