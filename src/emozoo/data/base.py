"""What every reader shares: :class:`FaceDataset` and the checks and parsers that give one-line errors."""
from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError
from .labels import map_labels

_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


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


def check_split(split: str, valid: Sequence[str], where) -> None:
    """A :class:`DataError` naming ``where`` unless ``split`` is one of ``valid``."""
    if split not in valid:
        raise DataError(f"{where}: unknown split {split!r}; valid splits: {', '.join(valid) or '(none)'}")


def check_target(target: str) -> None:
    """A :class:`DataError` unless ``target`` is ``"majority"`` or ``"soft"``."""
    if target not in ("majority", "soft"):
        raise DataError(f"target must be 'majority' or 'soft', not {target!r}")


def existing_path(path, what: str = "file") -> Path:
    """``path`` as a :class:`Path`; a :class:`DataError` "PATH: no such WHAT" when it does not exist."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such {what}")
    return path


def open_image(path: Path, mode: str | None = None) -> Image.Image:
    """Decode ``path`` to mode ``mode`` (default: ``"L"`` for grayscale files, else ``"RGB"``)."""
    try:
        with Image.open(path) as image:
            return image.convert(mode or ("L" if image.mode in _GRAY_MODES else "RGB"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from e


def read_csv(path: Path, columns: Sequence[str]):
    """Yield ``(line_number, row)`` of a csv file with ``columns``; ``row`` holds those columns in order."""
    path = existing_path(path)
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


def parse_int(text: str, path: Path, line: int, what: str, lo: int = 0, hi: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise DataError(f"{path}, line {line}: {what} {text!r} is not an integer") from None
    if value < lo or (hi is not None and value > hi):
        raise DataError(f"{path}, line {line}: {what} {value} is outside {lo}..{'' if hi is None else hi}")
    return value
