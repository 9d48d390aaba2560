"""Readers of facial-expression datasets, all plain ``torch.utils.data.Dataset`` objects.

Every reader yields ``(image, target)``: ``image`` is a PIL image (mode ``"L"`` for grayscale sources,
``"RGB"`` for colour) passed through ``transform`` when one is given; ``target`` is a class index into
``label_names``, or for FER+ with ``target="soft"`` a float32 vote distribution. Every reader has the
attributes ``label_names``, ``split``, ``targets`` (hard labels, int64) and ``transform``; with
``label_names=...`` its labels are mapped onto that list (see :func:`~emozoo.data.labels.map_labels`).

:func:`open_dataset` picks a reader from a data spec string; :data:`DATASETS` lists the readers by name.
"""
from __future__ import annotations

import csv
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError
from .labels import FER2013_LABELS, FERPLUS_LABELS, FERPLUS_VOTE_COLUMNS, RAFDB_LABELS, map_labels

#: The FER2013 + FER+ file of this project (Training and PublicTest): ``$EMOZOO_FERPLUS_NPZ`` when set,
#: else ``<repo>/../shared/data/fer2013/fer2013_ferplus_train_publictest.npz``.
DEFAULT_FERPLUS_NPZ = Path(os.environ.get("EMOZOO_FERPLUS_NPZ") or Path(__file__).resolve().parents[3].parent
                           / "shared" / "data" / "fer2013" / "fer2013_ferplus_train_publictest.npz")

FER2013_SPLITS = ("Training", "PublicTest", "PrivateTest")
RAFDB_SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
_FER_PIXELS = 48 * 48


class FaceDataset(Dataset):
    """Base of emozoo's readers: subclasses call :meth:`_set_labels` and implement :meth:`load_image`."""

    label_names: tuple[str, ...]
    split: str | None
    targets: np.ndarray
    soft_targets: np.ndarray | None = None
    transform: Callable | None = None

    def _set_labels(self, names: Sequence[str], targets: np.ndarray, label_names: Sequence[str] | None,
                    where: str, soft: np.ndarray | None = None):
        """Store labels, mapped onto ``label_names`` when given (``soft`` columns follow ``names``)."""
        if label_names is not None:
            mapping = map_labels(names, label_names, where)
            targets = mapping[targets]
            if soft is not None:
                mapped = np.zeros((len(soft), len(label_names)), np.float32)
                for column, k in enumerate(mapping):
                    mapped[:, k] += soft[:, column]
                soft = mapped
            names = label_names
        self.label_names = tuple(names)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.soft_targets = soft

    def load_image(self, index: int) -> Image.Image:
        """The ``index``-th image as a PIL image, before ``transform``."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        if self.soft_targets is not None:
            return image, torch.from_numpy(self.soft_targets[index].copy())
        return image, int(self.targets[index])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, len={len(self)}, label_names={list(self.label_names)})"


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


def _check_split(split: str, valid: Sequence[str], where) -> None:
    if split not in valid:
        raise DataError(f"{where}: unknown split {split!r}; valid splits: {', '.join(valid) or '(none)'}")


def _check_target(target: str) -> None:
    if target not in ("majority", "soft"):
        raise DataError(f"target must be 'majority' or 'soft', not {target!r}")


def _existing(path, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such {what}")
    return path


def _open_image(path: Path, mode: str | None = None) -> Image.Image:
    """Decode ``path`` to mode ``mode`` (default: ``"L"`` for grayscale files, else ``"RGB"``)."""
    try:
        with Image.open(path) as image:
            return image.convert(mode or ("L" if image.mode in _GRAY_MODES else "RGB"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from e


# ----------------------------------------------------------------------------------------- FER2013 / FER+
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
        _check_target(target)
        if labels not in ("ferplus", "fer2013"):
            raise DataError(f"labels must be 'ferplus' or 'fer2013', not {labels!r}")
        if labels == "fer2013" and target == "soft":
            raise DataError("FER2013 labels have no vote distribution: use target='majority'")
        path = _existing(path)
        with _open_npz(path, self.KEYS) as npz:
            usage = npz["usage"]
            _check_split(split, [s for s in FER2013_SPLITS if s in set(usage.tolist())], path)
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


def _open_npz(path: Path, keys: Sequence[str]) -> np.lib.npyio.NpzFile:
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array, not the named arrays of an .npz file")
    missing = [k for k in keys if k not in npz.files]
    if missing:
        npz.close()
        raise DataError(f"{path}: missing arrays {missing}; expected {list(keys)}")
    return npz


def _read_csv(path: Path, columns: Sequence[str]):
    """Yield ``(line_number, row)`` of a csv file with ``columns``; ``row`` holds those columns in order."""
    path = _existing(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; expected columns {list(columns)}, "
                            f"found {header}")
        index = [header.index(c) for c in columns]
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}, line {reader.line_num}: {len(row)} fields, expected {len(header)}")
            yield reader.line_num, [row[i] for i in index]


def _parse_int(text: str, path: Path, line: int, what: str, lo: int = 0, hi: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise DataError(f"{path}, line {line}: {what} {text!r} is not an integer") from None
    if value < lo or (hi is not None and value > hi):
        raise DataError(f"{path}, line {line}: {what} {value} is outside {lo}..{'' if hi is None else hi}")
    return value


def _parse_pixels(text: str, path: Path, line: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            pixels = np.fromstring(text, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            pixels = None
    if pixels is None or len(pixels) != _FER_PIXELS or pixels.min() < 0 or pixels.max() > 255:
        found = text.split()
        raise DataError(f"{path}, line {line}: pixels must be {_FER_PIXELS} space-separated integers 0..255 "
                        f"(a 48x48 image); found {len(found)} values beginning {' '.join(found[:5])!r}")
    return pixels.astype(np.uint8).reshape(48, 48)


def _read_fer2013(path: Path, split: str):
    """``(row_index, labels, images, n_rows)`` of the ``split`` rows of fer2013.csv."""
    rows, labels, images, usages, n_rows = [], [], [], set(), 0
    for n_rows, (line, (emotion, pixels, usage)) in enumerate(_read_csv(path, ("emotion", "pixels", "Usage")), 1):
        usages.add(usage)
        if usage == split:
            labels.append(_parse_int(emotion, path, line, "emotion", 0, len(FER2013_LABELS) - 1))
            images.append(_parse_pixels(pixels, path, line))
            rows.append(n_rows - 1)
    _check_split(split, [s for s in FER2013_SPLITS if s in usages] + sorted(usages - set(FER2013_SPLITS)), path)
    return np.asarray(rows, np.int64), np.asarray(labels, np.int64), np.stack(images), n_rows


class FER2013Csv(FaceDataset):
    """The Kaggle ``fer2013.csv`` (columns ``emotion,pixels,Usage``), 7 classes (:data:`FER2013_LABELS`).

    ``split`` is a ``Usage`` value: ``Training``, ``PublicTest`` or ``PrivateTest``.
    """

    def __init__(self, path, split: str, transform: Callable | None = None,
                 label_names: Sequence[str] | None = None):
        self.path, self.split, self.transform = Path(path), split, transform
        self.row_index, targets, self.images, _ = _read_fer2013(self.path, split)
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
        _check_target(target)
        fer_path, plus_path = Path(fer2013_csv), _existing(ferplus_csv)
        usage, names, votes = [], [], []
        for line, (use, name, *counts) in _read_csv(plus_path, ("Usage", "Image name") + FERPLUS_VOTE_COLUMNS):
            usage.append(use)
            names.append(name.strip())
            votes.append([_parse_int(c, plus_path, line, "vote count") for c in counts])
        row_index, _, images, n_rows = _read_fer2013(fer_path, split)
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


# ------------------------------------------------------------------------------------------------ RAF-DB
class RafDB(FaceDataset):
    """RAF-DB basic expressions: ``root/EmoLabel/list_patition_label.txt`` and ``root/Image/aligned/``.

    Label lines read ``train_00001.jpg 5`` (labels 1..7, :data:`RAFDB_LABELS`); ``split`` is ``train``
    or ``test``. ``aligned=False`` reads ``root/Image/original/<name>`` instead of the aligned crops.
    Images are RGB.
    """

    def __init__(self, root, split: str, aligned: bool = True, transform: Callable | None = None,
                 label_names: Sequence[str] | None = None):
        self.root = _existing(root, "directory")
        list_file = _existing(self.root / "EmoLabel" / "list_patition_label.txt")
        _check_split(split, RAFDB_SPLITS, list_file)
        self.image_dir = _existing(self.root / "Image" / ("aligned" if aligned else "original"), "directory")
        files, targets = [], []
        for line, text in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
            parts = text.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise DataError(f"{list_file}, line {line}: expected '<image name> <label>', got {text!r}")
            name, label = parts
            if name.split("_")[0] == split:
                targets.append(_parse_int(label, list_file, line, "label", 1, len(RAFDB_LABELS)) - 1)
                files.append(f"{Path(name).stem}_aligned.jpg" if aligned else name)
        if not files:
            raise DataError(f"{list_file}: no images in split {split!r}")
        self.files, self.split, self.transform = files, split, transform
        self._set_labels(RAFDB_LABELS, np.asarray(targets), label_names, str(list_file))

    def load_image(self, index: int) -> Image.Image:
        return _open_image(self.image_dir / self.files[index], "RGB")


# ------------------------------------------------------------------------------------------ image folder
class ImageFolderDataset(FaceDataset):
    """A class-per-folder tree: ``root/<split>/<class>/*.jpg``, or ``root/<class>/*`` when ``split=None``.

    Class names are the folder names in sorted order (mapped onto ``label_names`` by synonyms when given,
    so folders named ``angry`` or ``Happy`` fit FER+ models). Images are ``"L"`` when the file is
    grayscale, else ``"RGB"``.
    """

    def __init__(self, root, split: str | None = None, transform: Callable | None = None,
                 label_names: Sequence[str] | None = None):
        self.root = _existing(root, "directory")
        base = self.root
        if split is not None:
            _check_split(split, [p.name for p in self._subdirs(self.root)], self.root)
            base = self.root / split
        classes = [p.name for p in self._subdirs(base)]
        self.files, targets = [], []
        for k, name in enumerate(classes):
            for path in sorted((base / name).iterdir()):
                if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                    self.files.append(path)
                    targets.append(k)
        if not self.files:
            hint = " (pass split= when it holds split folders)" if split is None and classes else ""
            raise DataError(f"{base}: no images in class folders {classes}{hint}")
        self.split, self.transform = split, transform
        self._set_labels(classes, np.asarray(targets), label_names, str(base))

    @staticmethod
    def _subdirs(path: Path) -> list[Path]:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))

    def load_image(self, index: int) -> Image.Image:
        return _open_image(self.files[index])


# ------------------------------------------------------------------------------------------------- specs
#: Readers by data-spec prefix; add an entry to make ``name:location`` specs open another reader.
#: ``location`` is split at commas into the reader's positional arguments.
DATASETS: dict[str, type[FaceDataset]] = {
    "ferplus": FerPlusNpz,
    "fer2013": FER2013Csv,
    "ferplus-csv": FerPlusCsv,
    "rafdb": RafDB,
    "folder": ImageFolderDataset,
}

_PREFIX = re.compile(r"^([A-Za-z][\w-]+):(.*)$")


def _sniff(location: str) -> str:
    if "," in location and not Path(location).exists():
        return "ferplus-csv"
    path = _existing(location, "file or directory")
    if path.is_dir():
        return "rafdb" if (path / "EmoLabel" / "list_patition_label.txt").is_file() else "folder"
    if path.suffix == ".npz":
        return "ferplus"
    if path.suffix == ".csv":
        return "fer2013"
    raise DataError(f"{path}: cannot tell the dataset type; use a spec prefix ({', '.join(DATASETS)})")


def open_dataset(spec: str, split: str, **kwargs) -> FaceDataset:
    """Open the dataset that the data spec ``spec`` names, at ``split``; ``kwargs`` go to the reader.

    A spec is ``name:location`` with ``name`` a key of :data:`DATASETS` (``ferplus:data.npz``,
    ``fer2013:fer2013.csv``, ``ferplus-csv:fer2013.csv,fer2013new.csv``, ``rafdb:RAF-DB/basic``,
    ``folder:faces/``), or a bare path whose type is sniffed: ``.npz`` is FER+, ``.csv`` FER2013, a
    directory with ``EmoLabel/list_patition_label.txt`` RAF-DB, any other directory an image folder.
    ``fer2013:`` with an ``.npz`` file reads its original 7-class labels; ``ferplus`` and ``fer2013``
    alone use :data:`DEFAULT_FERPLUS_NPZ`.
    """
    match = _PREFIX.match(spec)
    if spec in ("ferplus", "fer2013"):
        name, location = spec, str(DEFAULT_FERPLUS_NPZ)
    elif match and (match[1] in DATASETS or not Path(spec).exists()):
        name, location = match[1], match[2]
        if name not in DATASETS:
            raise DataError(f"unknown data spec prefix {name!r} in {spec!r}; known prefixes: {', '.join(DATASETS)}")
        if not location:
            raise DataError(f"data spec {spec!r} names no file or directory after {name + ':'!r}")
    else:
        name, location = _sniff(spec), spec
    if name == "fer2013" and location.endswith(".npz"):
        return FerPlusNpz(location, split=split, labels="fer2013", **kwargs)
    return DATASETS[name](*location.split(","), split=split, **kwargs)
