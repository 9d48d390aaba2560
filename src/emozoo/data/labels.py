"""Label sets of the supported datasets and the mapping of one label set onto another.

Datasets name the same expression differently (FER2013 ``angry``, FER+ ``anger``); :func:`map_labels`
matches names through :data:`SYNONYMS` so a dataset can be read in any model's output order.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._config import FERPLUS_LABELS  # the output order of emozoo's models
from ..errors import DataError

#: The ten FER+ vote columns: the eight classes, then "unknown" and "NF" (not a face).
FERPLUS_VOTE_COLUMNS = FERPLUS_LABELS + ("unknown", "NF")
#: Original FER2013 classes, indexed by the ``emotion`` column of fer2013.csv.
FER2013_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: RAF-DB basic-expression classes; label ``k`` of ``list_patition_label.txt`` is index ``k - 1``.
RAFDB_LABELS = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")

#: Other spellings of an expression, mapped to the FER+ name.
SYNONYMS = {
    "angry": "anger", "mad": "anger",
    "happy": "happiness", "joy": "happiness",
    "sad": "sadness",
    "surprised": "surprise",
    "fearful": "fear", "afraid": "fear", "scared": "fear",
    "disgusted": "disgust",
    "contemptuous": "contempt",
}


def canonical_label(name: str) -> str:
    """The FER+ spelling of an expression name (case- and space-insensitive); other names unchanged."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    return SYNONYMS.get(key, key)


def map_labels(source: Sequence[str], target: Sequence[str], where: str = "") -> np.ndarray:
    """Index into ``target`` of every name in ``source``, matching names through :data:`SYNONYMS`.

    Raises :class:`~emozoo.errors.DataError` naming the first source label with no counterpart;
    ``where`` (e.g. the data file) prefixes the message.
    """
    index = {}
    for i, name in enumerate(target):
        index.setdefault(canonical_label(name), i)
    mapped = []
    for name in source:
        if canonical_label(name) not in index:
            prefix = f"{where}: " if where else ""
            raise DataError(f"{prefix}label {name!r} has no counterpart in the target labels {list(target)}")
        mapped.append(index[canonical_label(name)])
    return np.asarray(mapped, dtype=np.int64)
