"""Datasets and transforms: FER2013, FER+, RAF-DB and image folders, read as ``(image, target)`` pairs.

Open a dataset with :func:`open_dataset` (``open_dataset("ferplus", "PublicTest")``) or a reader class,
and give it :func:`eval_transform` / :func:`train_transform` of the model's input spec.
"""
from .datasets import (
    DATASETS,
    DEFAULT_FERPLUS_NPZ,
    FER2013_SPLITS,
    RAFDB_SPLITS,
    FaceDataset,
    FER2013Csv,
    FerPlusCsv,
    FerPlusNpz,
    ImageFolderDataset,
    RafDB,
    ferplus_targets,
    open_dataset,
)
from .labels import (
    FER2013_LABELS,
    FERPLUS_LABELS,
    FERPLUS_VOTE_COLUMNS,
    RAFDB_LABELS,
    SYNONYMS,
    canonical_label,
    map_labels,
)
from .transforms import AUGMENT_STRENGTHS, augment_batch, eval_transform, train_transform

__all__ = [
    "AUGMENT_STRENGTHS", "DATASETS", "DEFAULT_FERPLUS_NPZ", "FER2013_LABELS", "FER2013_SPLITS", "FERPLUS_LABELS",
    "FERPLUS_VOTE_COLUMNS", "RAFDB_LABELS", "RAFDB_SPLITS", "SYNONYMS", "FaceDataset", "FER2013Csv", "FerPlusCsv",
    "FerPlusNpz", "ImageFolderDataset", "RafDB", "augment_batch", "canonical_label", "eval_transform",
    "ferplus_targets", "map_labels", "open_dataset", "train_transform",
]
