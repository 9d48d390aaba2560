"""Data specs: how ``--data NAME:PATH`` (or a bare path) becomes a dataset, and where calibration faces come from.

The readers are registered by name through the ``register_datasets`` hook (the built-in ones by
:mod:`emozoo.builtins.datasets`); :data:`DATASETS` is that registry.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .._registry import DATASETS
from ..errors import DataError
from ..plugins import load_plugins
from .base import FaceDataset, existing_path

#: The FER2013 + FER+ file of this project (Training and PublicTest): ``$EMOZOO_FERPLUS_NPZ`` when set,
#: else ``<checkout>/../shared/data/fer2013/fer2013_ferplus_train_publictest.npz``, which exists only beside a
#: source checkout of emozoo (an installed wheel has no such folder).
DEFAULT_FERPLUS_NPZ = Path(os.environ.get("EMOZOO_FERPLUS_NPZ") or Path(__file__).resolve().parents[3].parent
                           / "shared" / "data" / "fer2013" / "fer2013_ferplus_train_publictest.npz")

#: environment variable naming the data spec that calibrates int8 exports when none is given
CALIBRATION_ENV = "EMOZOO_CALIBRATION_DATA"

_PREFIX = re.compile(r"^([A-Za-z][\w-]+):(.*)$")


def default_calibration_data() -> str | None:
    """The data spec whose training faces calibrate int8 (and check ONNX exports) when none is given.

    ``$EMOZOO_CALIBRATION_DATA`` when set (any spec ``--data`` takes); else the FER+ file
    :data:`DEFAULT_FERPLUS_NPZ` when it exists (``$EMOZOO_FERPLUS_NPZ``, or the one beside a source checkout);
    else None, and the caller falls back to random normal inputs and says so.
    """
    spec = os.environ.get(CALIBRATION_ENV, "").strip()
    if spec:
        return spec
    return str(DEFAULT_FERPLUS_NPZ) if DEFAULT_FERPLUS_NPZ.is_file() else None


def sniff(location: str) -> str:
    """The registered dataset name that reads the bare path ``location``.

    Two comma-separated files are FER+ csv (``ferplus-csv``); a directory with
    ``EmoLabel/list_patition_label.txt`` is RAF-DB, any other directory an image folder; ``.npz`` is FER+
    and ``.csv`` FER2013; another suffix goes to the reader registered with it in ``extensions=``.
    """
    if "," in location and not Path(location).exists():
        return "ferplus-csv"
    path = existing_path(location, "file or directory")
    if path.is_dir():
        return "rafdb" if (path / "EmoLabel" / "list_patition_label.txt").is_file() else "folder"
    if path.suffix == ".npz":
        return "ferplus"
    if path.suffix == ".csv":
        return "fer2013"
    for entry in DATASETS.entries():
        if path.suffix.lower() in entry.meta.get("extensions", ()):
            return entry.name
    raise DataError(f"{path}: cannot tell the dataset type; use a spec prefix ({', '.join(DATASETS.names())})")


def open_dataset(spec: str, split: str, **kwargs) -> FaceDataset:
    """Open the dataset that the data spec ``spec`` names, at ``split``; ``kwargs`` go to the reader.

    A spec is ``name:location`` with ``name`` a registered dataset (``emozoo plugins`` lists them;
    built in: ``ferplus:data.npz``, ``fer2013:fer2013.csv``, ``ferplus-csv:fer2013.csv,fer2013new.csv``,
    ``rafdb:RAF-DB/basic``, ``folder:faces/``), or a bare path whose type is sniffed (see :func:`sniff`).
    ``location`` is split at commas into the reader's positional arguments. ``fer2013:`` with an ``.npz``
    file reads its original 7-class labels; ``ferplus`` and ``fer2013`` alone use :data:`DEFAULT_FERPLUS_NPZ`.
    An unknown name is an :class:`emozoo.errors.UnknownDatasetError` listing the close matches.
    """
    load_plugins()
    match = _PREFIX.match(spec)
    if spec in ("ferplus", "fer2013"):
        name, location = spec, str(DEFAULT_FERPLUS_NPZ)
    elif match and (match[1] in DATASETS or not Path(spec).exists()):
        name, location = match[1], match[2]
        factory = DATASETS.get(name).factory  # an unknown name raises, listing the close matches
        if not location:
            raise DataError(f"data spec {spec!r} names no file or directory after {name + ':'!r}")
        return factory(*location.split(","), split=split, **kwargs)
    else:
        name, location = sniff(spec), spec
    return DATASETS.get(name).factory(*location.split(","), split=split, **kwargs)
