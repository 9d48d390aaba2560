"""A class-per-folder tree of images (``root/<split>/<class>/*.jpg``)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .base import FaceDataset, check_split, existing_path, open_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


class ImageFolderDataset(FaceDataset):
    """A class-per-folder tree: ``root/<split>/<class>/*.jpg``, or ``root/<class>/*`` when ``split=None``.

    Class names are the folder names in sorted order (mapped onto ``label_names`` by synonyms when given,
    so folders named ``angry`` or ``Happy`` fit FER+ models). Images are ``"L"`` when the file is
    grayscale, else ``"RGB"``.
    """

    def __init__(self, root, split: str | None = None, transform: Callable | None = None,
                 label_names: Sequence[str] | None = None):
        self.root = existing_path(root, "directory")
        base = self.root
        if split is not None:
            check_split(split, [p.name for p in self._subdirs(self.root)], self.root)
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
        return open_image(self.files[index])
