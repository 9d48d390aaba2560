"""FER2013 and FER+: the project's ``.npz`` file, Kaggle's ``fer2013.csv`` and Microsoft's ``fer2013new.csv``."""
from __future__ import annotations

import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .base import FaceDataset, check_split, check_target, existing_path, parse_int, read_csv
from .labels import FER2013_LABELS, FERPLUS_LABELS, FERPLUS_VOTE_COLUMNS

FER2013_SPLITS = ("Training", "PublicTest", "PrivateTest")
FER_PIXELS = 48 * 48


def ferplus_targets(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The FER+ protocol on ``(N, 10)`` votes: ``(keep, majority, soft)``.

    ``majority`` is the argmax over all ten columns (a tie goes to the first); ``keep`` marks the rows
    whose majority is one of the eight emotions (not unknown or NF) and that have an emotion vote.
    ``majority`` and ``soft`` (the eight emotion votes normalised to sum 1, float32) are for kept rows.
    """
    majority = votes.argmax(1)
    emotion_votes = votes[:, :len(FERPLUS_LABELS)].astype(np.float32)
    keep = (majority < len(FERPLUS_LABELS)) & (emotion_votes.sum(1) > 0)
    soft = emotion_votes[keep]
    return keep, majority[keep], soft / soft.sum(1, keepdims=True)


class FerPlusNpz(FaceDataset):
    """FER2013 with FER+ labels from this project's ``.npz`` file (see its README).

    ``labels="ferplus"`` (default) follows the FER+ protocol: rows whose ``row_index_exact`` is False
    are dropped (their votes are not theirs), as are rows whose majority vote is unknown or not-a-face;
    the 8 classes are :data:`FERPLUS_LABELS`. ``target="soft"`` yields the vote distribution over those
    classes (Barsoum et al. 2016). ``labels="fer2013"`` yields every row of the split with its original
    7-class label (:data:`FER2013_LABELS`). Images are held in memory as a uint8 array; ``row_index``
    gives each item's data-row index in fer2013.csv.
    """

    KEYS = ("images", "fer_label", "ferplus_votes", "usage", "row_index", "row_index_exact")

    def __init__(self, path, split: str, target: str = "majority", labels: str = "ferplus",
                 transform: Callable | None = None, label_names: Sequence[str] | None = None):
        check_target(target)
        if labels not in ("ferplus", "fer2013"):
            raise DataError(f"labels must be 'ferplus' or 'fer2013', not {labels!r}")
        if labels == "fer2013" and target == "soft":
            raise DataError("FER2013 labels have no vote distribution: use target='majority'")
        path = existing_path(path)
        with open_npz(path, self.KEYS) as npz:
            npz = _checked_arrays(npz, self.KEYS, path)
            usage = npz["usage"]
            check_split(split, [s for s in FER2013_SPLITS if s in set(usage.tolist())], path)
            rows = usage == split
            if labels == "ferplus":
                votes = npz["ferplus_votes"]
                if votes.ndim != 2 or votes.shape[1] != len(FERPLUS_VOTE_COLUMNS):
                    raise DataError(f"{path}: ferplus_votes has shape {votes.shape}, expected (N, 10)")
                rows &= npz["row_index_exact"]
                keep, targets, soft = ferplus_targets(votes[rows])
                rows[rows] = keep
                names = FERPLUS_LABELS
            else:
                targets, soft, names = npz["fer_label"][rows].astype(np.int64), None, FER2013_LABELS
            self.row_index = npz["row_index"][rows].astype(np.int64)
            self.images = npz["images"][rows]
        bad = np.flatnonzero((targets < 0) | (targets >= len(names)))
        if len(bad):
            raise DataError(f"{path}: row {self.row_index[bad[0]]}: label {targets[bad[0]]} is outside "
                            f"0..{len(names) - 1}")
        self.path, self.split, self.transform = path, split, transform
        self._set_labels(names, targets, label_names, str(path), soft if target == "soft" else None)

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


def open_npz(path: Path, keys: Sequence[str]) -> np.lib.npyio.NpzFile:
    """The ``.npz`` file at ``path`` (never unpickling), checked to hold the arrays ``keys``."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); an .npz file holds named arrays "
                        "(an interrupted copy or download? copy it again)")
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise DataError(f"{path}: holds a single array, not the named arrays of an .npz file")
        raise DataError(f"{path}: not a readable .npz file: not a zip archive, or a truncated one (an .npz is a "
                        "zip archive of arrays, written by numpy.savez); copy it again")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array, not the named arrays of an .npz file")
    missing = [k for k in keys if k not in npz.files]
    if missing:
        npz.close()
        raise DataError(f"{path}: missing arrays {missing}; expected {list(keys)}")
    return npz


def _checked_arrays(npz: np.lib.npyio.NpzFile, keys: Sequence[str], path: Path) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of ``npz`` read into memory, each with one row per image, or a one-line DataError."""
    arrays = {}
    for key in keys:
        try:
            arrays[key] = npz[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError(f"{path}: array {key!r} cannot be read ({type(e).__name__}: {e}); "
                            "the file is damaged, copy it again") from None
    lengths = {key: len(a) if a.ndim else None for key, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"{path}: its arrays must have one row per image, but their lengths differ "
                        f"({', '.join(f'{k}: {n}' for k, n in lengths.items())}); the file is damaged or was "
                        "written wrongly")
    return arrays


def parse_pixels(text: str, path: Path, line: int) -> np.ndarray:
    """A fer2013.csv ``pixels`` field as a 48x48 uint8 image; a one-line :class:`DataError` naming the line if not."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            pixels = np.fromstring(text, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            pixels = None
    if pixels is None or len(pixels) != FER_PIXELS or pixels.min() < 0 or pixels.max() > 255:
        found = text.split()
        raise DataError(f"{path}, line {line}: pixels must be {FER_PIXELS} space-separated integers 0..255 "
                        f"(a 48x48 image); found {len(found)} values beginning {' '.join(found[:5])!r}")
    return pixels.astype(np.uint8).reshape(48, 48)


def read_fer2013(path: Path, split: str):
    """``(row_index, labels, images, n_rows)`` of the ``split`` rows of fer2013.csv."""
    rows, labels, images, usages, n_rows = [], [], [], set(), 0
    for n_rows, (line, (emotion, pixels, usage)) in enumerate(read_csv(path, ("emotion", "pixels", "Usage")), 1):
        usages.add(usage)
        if usage == split:
            labels.append(parse_int(emotion, path, line, "emotion", 0, len(FER2013_LABELS) - 1))
            images.append(parse_pixels(pixels, path, line))
            rows.append(n_rows - 1)
    check_split(split, [s for s in FER2013_SPLITS if s in usages] + sorted(usages - set(FER2013_SPLITS)), path)
    return np.asarray(rows, np.int64), np.asarray(labels, np.int64), np.stack(images), n_rows


class FER2013Csv(FaceDataset):
    """The Kaggle ``fer2013.csv`` (columns ``emotion,pixels,Usage``), 7 classes (:data:`FER2013_LABELS`).

    ``split`` is a ``Usage`` value: ``Training``, ``PublicTest`` or ``PrivateTest``.
    """

    def __init__(self, path, split: str, transform: Callable | None = None,
                 label_names: Sequence[str] | None = None):
        self.path, self.split, self.transform = Path(path), split, transform
        self.row_index, targets, self.images, _ = read_fer2013(self.path, split)
        self._set_labels(FER2013_LABELS, targets, label_names, str(self.path))

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


class FerPlusCsv(FaceDataset):
    """fer2013.csv joined row by row with Microsoft's FER+ ``fer2013new.csv``, under the FER+ protocol.

    Rows with an empty ``Image name`` (FER+ found no face) are dropped, then rows whose majority vote
    is unknown or not-a-face; ``target`` is ``"majority"`` or ``"soft"`` as in :class:`FerPlusNpz`.
    """

    def __init__(self, fer2013_csv, ferplus_csv, split: str, target: str = "majority",
                 transform: Callable | None = None, label_names: Sequence[str] | None = None):
        check_target(target)
        fer_path, plus_path = Path(fer2013_csv), existing_path(ferplus_csv)
        usage, names, votes = [], [], []
        for line, (use, name, *counts) in read_csv(plus_path, ("Usage", "Image name") + FERPLUS_VOTE_COLUMNS):
            usage.append(use)
            names.append(name.strip())
            votes.append([parse_int(c, plus_path, line, "vote count") for c in counts])
        row_index, _, images, n_rows = read_fer2013(fer_path, split)
        if n_rows != len(usage):
            raise DataError(f"{plus_path}: {len(usage)} rows, but {fer_path} has {n_rows}; the files are "
                            "joined row by row")
        in_split = np.flatnonzero(np.asarray(usage) == split)
        if not np.array_equal(in_split, row_index):
            row = np.setxor1d(in_split, row_index)[0]
            raise DataError(f"{plus_path}, line {row + 2}: Usage {usage[row]!r} disagrees with {fer_path}")
        has_image = np.asarray([names[i] != "" for i in row_index], dtype=bool)
        keep, targets, soft = ferplus_targets(np.asarray(votes, np.int64)[row_index[has_image]])
        rows = np.flatnonzero(has_image)[keep]
        self.path, self.split, self.transform = fer_path, split, transform
        self.row_index, self.images = row_index[rows], images[rows]
        self._set_labels(FERPLUS_LABELS, targets, label_names, str(plus_path), soft if target == "soft" else None)

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])



def open_fer2013(path, split: str, **kwargs) -> FaceDataset:
    """The 7-class FER2013 labels of ``split``: from ``fer2013.csv``, or from the project's ``.npz`` file."""
    if str(path).endswith(".npz"):
        return FerPlusNpz(path, split=split, labels="fer2013", **kwargs)
    return FER2013Csv(path, split=split, **kwargs)
