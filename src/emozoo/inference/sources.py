"""Where images come from: files, folders, glob patterns, arrays, PIL images, videos and cameras."""
from __future__ import annotations

import glob
import math
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError
from .results import Prediction

IMAGE_EXTS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
              ".pbm", ".pnm"}
VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv"}
CAMERA_PREFIX = "camera:"


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


def iter_frames(items: list[Any], every: int, keep: bool, progress) -> Iterator[tuple[Prediction, np.ndarray | None]]:
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
    bar = progress_bar(progress, total=math.ceil(total / every) if total > 0 else None, desc=Path(source).name, unit="frame",
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


def progress_bar(progress: bool | None, total=None, desc=None, unit="it", show=True):
    """A tqdm bar on stderr: ``progress=None`` shows it when ``show`` and stderr is a terminal."""
    from tqdm.auto import tqdm

    if progress is None:
        disable = None if show else True  # None: tqdm shows it only on a terminal
    else:
        disable = not progress
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=disable, dynamic_ncols=True)
