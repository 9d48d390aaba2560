"""Where images come from: files, folders, glob patterns, arrays, PIL images, videos and cameras."""
from __future__ import annotations

import glob
import io
import math
import os
import stat
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
              ".pbm", ".pnm"} | ({".avif"} if ".avif" in Image.registered_extensions() else set())  # Pillow >= 11.3
#: image formats a directory scan reports as errors (rather than skipping them) because Pillow cannot read
#: them without a plugin, and what to do
UNREADABLE_IMAGE_EXTS = {
    ".heic": "HEIC images need the pillow-heif package (pip install pillow-heif), or convert them to JPEG",
    ".heif": "HEIF images need the pillow-heif package (pip install pillow-heif), or convert them to JPEG",
    ".avif": "AVIF images need Pillow 11.3 or later (pip install -U pillow), or convert them to JPEG",
    ".jxl": "JPEG XL images need the pillow-jxl-plugin package, or convert them to JPEG",
}
for _ext in IMAGE_EXTS:
    UNREADABLE_IMAGE_EXTS.pop(_ext, None)
URL_PREFIXES = ("http://", "https://", "ftp://")
VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv"}
CAMERA_PREFIX = "camera:"


# -- reading images ---------------------------------------------------------------------------------
def load_image(path: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """Read an image file (or the bytes of an encoded image) as an RGB uint8 array, upright (EXIF
    orientation applied).

    Raises :class:`emozoo.DataError` ``"PATH: reason"`` for a missing, empty, truncated, corrupt or
    unknown file, for one that is not a regular file (a FIFO or a device, which would block), and for
    one larger than ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb).
    """
    encoded = isinstance(path, (bytes, bytearray, memoryview))
    if name is None:
        name = "<bytes>" if encoded else str(path)
    try:
        if encoded:
            size, source = len(path), io.BytesIO(bytes(path))
        else:
            st = Path(path).stat()
            if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
                raise DataError(f"{name}: {_not_regular(st.st_mode)}")
            size, source = st.st_size, path
        if size == 0:
            reason = "empty file"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(source) as im:
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
    raise DataError(f"{name}: {reason}")


def _not_regular(mode: int) -> str:
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"{kind}, not a regular file: save the data to a file and give that"


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
def expand_inputs(inputs: Any, skipped: list[tuple[str, str]] | None = None) -> list[Any]:
    """Inputs as a flat list: directories become their image and video files (recursively, sorted) and
    glob patterns their matches; a path that does not exist stays, to be reported as an error.

    One array or tensor is one image, and a 4-d one ``(N, ...)`` a batch of N images; ``bytes`` are one
    encoded image. In a directory, a file with an image or video extension that cannot be used (a HEIC
    image without its plugin, a broken link, a FIFO) stays, to be reported as an error; an empty
    directory becomes one error; other files are left out and, when ``skipped`` is a list, added to it
    as ``(path, reason)``.
    """
    import torch

    if isinstance(inputs, (str, os.PathLike, np.ndarray, Image.Image, torch.Tensor, bytes, bytearray, memoryview)):
        inputs = [inputs]
    out: list[Any] = []
    for item in inputs:
        if isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 4:
            out += [_Labelled(image, f"{i} of a batch") for i, image in enumerate(item)]
            continue
        if not isinstance(item, (str, os.PathLike)) or str(item).startswith(CAMERA_PREFIX) \
                or str(item).lower().startswith(URL_PREFIXES):
            out.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            found = _scan(path, skipped)
            out += found or [_Empty(str(item))]
        elif not path.exists() and glob.has_magic(str(item)):
            matches = sorted(p for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
            out += [Path(p) for p in matches] if matches else [item]
        else:
            out.append(path)
    return out


class _Labelled:
    """An in-memory image with a word on where it came from (``"3 of a batch"``, ``"stdin"``)."""

    def __init__(self, image, where: str):
        self.image, self.where = image, where


def stdin_image(data: bytes) -> _Labelled:
    """The bytes of standard input as one encoded image, named ``stdin`` in its prediction's source."""
    return _Labelled(data, "stdin")


class _Empty(str):
    """A directory in which the scan found no image or video."""


def _scan(folder: Path, skipped: list | None) -> list[Path]:
    found = []
    for p in sorted(folder.rglob("*"), key=str):
        ext = p.suffix.lower()
        wanted = ext in IMAGE_EXTS or ext in VIDEO_EXTS or ext in UNREADABLE_IMAGE_EXTS
        if p.is_dir() and not p.is_symlink():
            continue
        if wanted:
            found.append(p)  # a broken link, a FIFO or a HEIC file is reported as this input's error
        elif skipped is not None:
            skipped.append((str(p), f"not an image or video extension ({ext or 'none'})"))
    return found


def tensor_to_array(t, name: str) -> np.ndarray:
    """A torch tensor image ``(H, W)``, ``(C, H, W)`` (C 1, 3 or 4) or ``(H, W, C)`` as a numpy array ``(H, W[, C])``."""
    a = t.detach().cpu().numpy()
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)
    elif a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] in (1, 3, 4):
        raise DataError(f"{name}: a tensor of shape {tuple(t.shape)} is ambiguous: give (C, H, W) with H, W > 4")
    return a


def iter_frames(items: list[Any], every: int, keep: bool, progress) -> Iterator[tuple[Prediction, np.ndarray | None]]:
    """``(prediction, rgb image or None)`` for every image and every ``every``-th video frame."""
    import torch

    unnamed = 0
    for item in items:
        where = None
        if isinstance(item, _Labelled):
            item, where = item.image, item.where
        if isinstance(item, (np.ndarray, Image.Image, torch.Tensor, bytes, bytearray, memoryview)):
            kind = ("array" if isinstance(item, np.ndarray) else "tensor" if isinstance(item, torch.Tensor)
                    else "image" if isinstance(item, Image.Image) else "bytes")
            pred = Prediction(f"<{kind} {unnamed}{', ' + where if where else ''}>")
            unnamed += 1
            try:
                if kind == "bytes":
                    image = load_image(item, pred.source)
                elif kind == "image":
                    image = to_rgb(ImageOps.exif_transpose(item))
                else:
                    image = array_to_rgb(tensor_to_array(item, pred.source) if kind == "tensor" else item, pred.source)
            except DataError as exc:
                pred.error = str(exc)
                yield pred, None
                continue
            yield _ready(pred, image, keep), image
        elif isinstance(item, _Empty):
            yield _failed(Prediction(str(item)), "no image or video file in this folder (searched recursively)"), None
        elif isinstance(item, (str, os.PathLike)):
            pred = Prediction(str(item))
            reason = _unusable(item)
            if reason:
                yield _failed(pred, reason), None
                continue
            if str(item).startswith(CAMERA_PREFIX) or Path(item).suffix.lower() in VIDEO_EXTS:
                yield from _video_frames(str(item), every, keep, progress)
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


def _unusable(item: str | os.PathLike) -> str | None:
    """Why a path cannot be read, found before opening it (a FIFO would block), or None."""
    text = str(item)
    if text.startswith(CAMERA_PREFIX):
        return None
    if text.lower().startswith(URL_PREFIXES):
        return "URLs are not supported: download the file first and give its path"
    if text == "-":
        return "- (standard input) is read only by the command line: give emozoo.predict the bytes instead"
    path = Path(item)
    if not path.exists():
        if path.is_symlink():
            return f"a broken symbolic link (to {os.readlink(path)})"
        return "no file matches this pattern" if glob.has_magic(text) else "no such file"
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        return _not_regular(mode)
    if path.suffix.lower() in UNREADABLE_IMAGE_EXTS:
        return UNREADABLE_IMAGE_EXTS[path.suffix.lower()]
    return None


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
    start, produced = time.monotonic(), 0
    decoded = _decode(cap, every) if camera else _read_ahead(_decode(cap, every))
    try:
        for index, image in decoded:
            seconds = time.monotonic() - start if camera else (index / fps if fps > 0 else None)
            produced += 1
            bar.update()
            yield _ready(Prediction(source, frame=index, time=seconds), image, keep), image
    finally:
        decoded.close()
        cap.release()
        bar.close()
    if produced == 0:
        yield _failed(Prediction(source), "no frame could be decoded"), None


def _decode(cap, every: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, RGB frame)`` of every ``every``-th frame of an open ``cv2.VideoCapture``, which it releases."""
    import cv2

    index = 0
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
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()


#: video frames decoded ahead, in a thread (OpenCV decodes without holding the GIL): a few megabytes at most
READ_AHEAD = 8


def _read_ahead(items: Iterator, size: int = READ_AHEAD) -> Iterator:
    """``items`` produced in a background thread, at most ``size`` ahead of the consumer (memory stays bounded);
    closing the returned generator stops the thread and closes ``items``."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(size)
    stop, end = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not put(item):
                    break
        except BaseException as exc:  # re-raised in the consumer
            put(exc)
        finally:
            items.close()
            put(end)

    thread = threading.Thread(target=work, name="emozoo-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def progress_bar(progress: bool | None, total=None, desc=None, unit="it", show=True):
    """A tqdm bar on stderr: ``progress=None`` shows it when ``show`` and stderr is a terminal."""
    from tqdm.auto import tqdm

    if progress is None:
        disable = None if show else True  # None: tqdm shows it only on a terminal
    else:
        disable = not progress
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=disable, dynamic_ncols=True)
