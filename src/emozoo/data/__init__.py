"""Datasets and transforms: FER2013, FER+, RAF-DB and image folders, read as ``(image, target)`` pairs.

Open a dataset with :func:`open_dataset` (``open_dataset("ferplus", "PublicTest")``) or a reader class,
and give it :func:`eval_transform` / :func:`train_transform` of the model's input spec. Readers are
plugins (the ``register_datasets`` hook); :data:`DATASETS` is their registry.

Every reader yields ``(image, target)``: ``image`` is a PIL image (mode ``"L"`` for grayscale sources,
``"RGB"`` for colour) passed through ``transform`` when one is given; ``target`` is a class index into
``label_names``, or for FER+ with ``target="soft"`` a float32 vote distribution. Every reader has the
attributes ``label_names``, ``split``, ``targets`` (hard labels, int64) and ``transform``; with
``label_names=...`` its labels are mapped onto that list (see :func:`~emozoo.data.labels.map_labels`).
"""
from .base import FaceDataset
from .fer import FER2013_SPLITS, FER2013Csv, FerPlusCsv, FerPlusNpz, ferplus_targets, open_fer2013
from .folder import IMAGE_EXTENSIONS, ImageFolderDataset
from .labels import (
    FER2013_LABELS,
    FERPLUS_LABELS,
    FERPLUS_VOTE_COLUMNS,
    RAFDB_LABELS,
    SYNONYMS,
    canonical_label,
    map_labels,
)
from .rafdb import RAFDB_SPLITS, RafDB
from .specs import CALIBRATION_ENV, DATASETS, DEFAULT_FERPLUS_NPZ, default_calibration_data, open_dataset, sniff
from .transforms import AUGMENT_STRENGTHS, augment_batch, eval_transform, train_transform

__all__ = [
    "AUGMENT_STRENGTHS", "CALIBRATION_ENV", "DATASETS", "DEFAULT_FERPLUS_NPZ", "FER2013_LABELS", "FER2013_SPLITS",
    "FERPLUS_LABELS", "FERPLUS_VOTE_COLUMNS", "IMAGE_EXTENSIONS", "RAFDB_LABELS", "RAFDB_SPLITS", "SYNONYMS",
    "FaceDataset", "FER2013Csv", "FerPlusCsv", "FerPlusNpz", "ImageFolderDataset", "RafDB", "augment_batch",
    "canonical_label", "default_calibration_data", "eval_transform", "ferplus_targets", "map_labels",
    "open_dataset", "open_fer2013", "sniff", "train_transform",
]
