"""The built-in dataset readers, registered through the ``register_datasets`` hook like a plugin's."""
from __future__ import annotations

from ..hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    """FER+ (npz and csv), FER2013 csv, RAF-DB and class-per-folder image trees."""
    from ..data.fer import FerPlusCsv, FerPlusNpz, open_fer2013
    from ..data.folder import ImageFolderDataset
    from ..data.rafdb import RafDB

    register("ferplus", FerPlusNpz, "FER2013 with FER+ labels from the project's .npz file")
    register("fer2013", open_fer2013, "Kaggle's fer2013.csv (7 classes), or the .npz file's original labels")
    register("ferplus-csv", FerPlusCsv, "fer2013.csv joined with Microsoft's fer2013new.csv (FER+ protocol)")
    register("rafdb", RafDB, "RAF-DB basic: EmoLabel/list_patition_label.txt and Image/aligned/")
    register("folder", ImageFolderDataset, "a class-per-folder image tree: root/<split>/<class>/*.jpg")
