"""RAF-DB's basic expressions: ``EmoLabel/list_patition_label.txt`` and the aligned (or original) images."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .base import FaceDataset, check_split, existing_path, open_image, parse_int
from .labels import RAFDB_LABELS

RAFDB_SPLITS = ("train", "test")


class RafDB(FaceDataset):
    """RAF-DB basic expressions: ``root/EmoLabel/list_patition_label.txt`` and ``root/Image/aligned/``.

    Label lines read ``train_00001.jpg 5`` (labels 1..7, :data:`RAFDB_LABELS`); ``split`` is ``train``
    or ``test``. ``aligned=False`` reads ``root/Image/original/<name>`` instead of the aligned crops.
    Images are RGB.
    """

    def __init__(self, root, split: str, aligned: bool = True, transform: Callable | None = None,
                 label_names: Sequence[str] | None = None):
        self.root = existing_path(root, "directory")
        list_file = existing_path(self.root / "EmoLabel" / "list_patition_label.txt")
        check_split(split, RAFDB_SPLITS, list_file)
        self.image_dir = existing_path(self.root / "Image" / ("aligned" if aligned else "original"), "directory")
        files, targets = [], []
        for line, text in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
            parts = text.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise DataError(f"{list_file}, line {line}: expected '<image name> <label>', got {text!r}")
            name, label = parts
            if name.split("_")[0] == split:
                targets.append(parse_int(label, list_file, line, "label", 1, len(RAFDB_LABELS)) - 1)
                files.append(f"{Path(name).stem}_aligned.jpg" if aligned else name)
        if not files:
            raise DataError(f"{list_file}: no images in split {split!r}")
        self.files, self.split, self.transform = files, split, transform
        self._set_labels(RAFDB_LABELS, np.asarray(targets), label_names, str(list_file))

    def load_image(self, index: int) -> Image.Image:
        return open_image(self.image_dir / self.files[index], "RGB")
