"""Dataset readers, label mapping and transforms (emozoo.data), on fixtures in the published formats."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from emozoo import InputSpec
from emozoo.data import (
    AUGMENT_STRENGTHS,
    DEFAULT_FERPLUS_NPZ,
    FER2013_LABELS,
    FERPLUS_LABELS,
    FERPLUS_VOTE_COLUMNS,
    RAFDB_LABELS,
    FER2013Csv,
    FerPlusCsv,
    FerPlusNpz,
    ImageFolderDataset,
    RafDB,
    augment_batch,
    eval_transform,
    map_labels,
    open_dataset,
    train_transform,
)
from emozoo.errors import ConfigError, DataError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def face(k):
    """The 48x48 uint8 image of fixture row ``k`` (a gradient, so orientation errors show)."""
    r, c = np.mgrid[:48, :48]
    return ((k * 20 + r + 2 * c) % 256).astype(np.uint8)


def votes(**counts):
    return [counts.get(name, 0) for name in FERPLUS_VOTE_COLUMNS]


# (Usage, FER2013 emotion, FER+ image name, FER+ votes): what each row tests is noted beside it
ROWS = [
    ("Training", 3, "fer0000000.png", votes(neutral=2, happiness=8)),        # happiness
    ("Training", 0, "fer0000001.png", votes(surprise=5, anger=5)),           # tie: first column wins
    ("Training", 6, "fer0000002.png", votes(neutral=4, unknown=6)),          # unknown majority: dropped
    ("Training", 2, "", votes(NF=10)),                                       # no FER+ image: dropped
    ("Training", 4, "fer0000004.png", votes(sadness=4, NF=6)),               # NF majority: dropped
    ("PublicTest", 5, "fer0000005.png", votes(surprise=6, fear=3)),          # 9 votes, like row 10435
    ("PublicTest", 1, "fer0000006.png", votes(disgust=3, contempt=3, anger=3, unknown=1)),  # tie: anger
    ("PrivateTest", 6, "fer0000007.png", votes(neutral=10)),
]


def pixels(k):
    return " ".join(map(str, face(k).ravel()))


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def fer_csv(tmp_path):
    rows = [(emotion, pixels(k), usage) for k, (usage, emotion, _, _) in enumerate(ROWS)]
    return write_csv(tmp_path / "fer2013.csv", ["emotion", "pixels", "Usage"], rows)


@pytest.fixture
def ferplus_csv(tmp_path):
    rows = [(usage, name, *v) for usage, _, name, v in ROWS]
    return write_csv(tmp_path / "fer2013new.csv", ["Usage", "Image name", *FERPLUS_VOTE_COLUMNS], rows)


@pytest.fixture
def npz(tmp_path):
    """The project's npz layout; PrivateTest is not in it, and row 1 is not ``row_index_exact``."""
    rows = [r for r in ROWS if r[0] != "PrivateTest"]
    path = tmp_path / "ferplus.npz"
    np.savez_compressed(
        path, images=np.stack([face(k) for k in range(len(rows))]),
        fer_label=np.array([r[1] for r in rows], np.int8), ferplus_votes=np.array([r[3] for r in rows], np.uint8),
        usage=np.array([r[0] for r in rows]), row_index=np.arange(len(rows), dtype=np.int32),
        row_index_exact=np.array([k != 1 for k in range(len(rows))]),
        ferplus_image_name=np.array([r[2] for r in rows]), ferplus_classes=np.array(FERPLUS_VOTE_COLUMNS))
    return path


@pytest.fixture
def rafdb(tmp_path):
    root = tmp_path / "RAF-DB" / "basic"
    (root / "EmoLabel").mkdir(parents=True)
    labels = {"train_00001.jpg": 5, "train_00002.jpg": 1, "test_0001.jpg": 4, "test_0002.jpg": 7}
    (root / "EmoLabel" / "list_patition_label.txt").write_text(
        "".join(f"{name} {label}\n" for name, label in labels.items()))
    for kind, size in (("aligned", 100), ("original", 120)):
        (root / "Image" / kind).mkdir(parents=True)
        for i, name in enumerate(labels):
            file = name.replace(".jpg", "_aligned.jpg") if kind == "aligned" else name
            Image.new("RGB", (size, size), (40 * i, 100, 200)).save(root / "Image" / kind / file)
    return root


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "faces"
    for split, cls, name, mode in [("train", "angry", "a.jpg", "RGB"), ("train", "Happy", "b.png", "L"),
                                   ("train", "Happy", "c.jpg", "L"), ("test", "sad", "d.png", "RGB")]:
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        Image.new(mode, (60, 50), 90).save(root / split / cls / name)
    (root / "train" / "Happy" / "notes.txt").write_text("not an image")
    return root


# --------------------------------------------------------------------------------------------- labels
def test_label_sets_and_synonyms():
    assert FERPLUS_LABELS == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
    assert map_labels(FER2013_LABELS, FERPLUS_LABELS).tolist() == [4, 5, 6, 1, 3, 2, 0]
    assert map_labels(RAFDB_LABELS, FERPLUS_LABELS).tolist() == [2, 6, 5, 1, 3, 4, 0]
    assert map_labels(["Angry", "HAPPY", " Sad "], FER2013_LABELS).tolist() == [0, 3, 4]
    with pytest.raises(DataError, match="'contempt'"):
        map_labels(FERPLUS_LABELS, FER2013_LABELS)


# ------------------------------------------------------------------------------------------ FER2013 csv
def test_fer2013_csv(fer_csv):
    data = FER2013Csv(fer_csv, "Training")
    assert (len(data), data.split, data.label_names) == (5, "Training", FER2013_LABELS)
    assert data.targets.dtype == np.int64 and data.targets.tolist() == [3, 0, 6, 2, 4]
    image, target = data[1]
    assert image.mode == "L" and image.size == (48, 48) and target == 0
    np.testing.assert_array_equal(np.asarray(image), face(1))
    private = FER2013Csv(fer_csv, "PrivateTest", label_names=FERPLUS_LABELS)
    assert private.label_names == FERPLUS_LABELS and private[0][1] == FERPLUS_LABELS.index("neutral")
    np.testing.assert_array_equal(np.asarray(private[0][0]), face(7))


# ------------------------------------------------------------------------------------------- FER+ csv
def test_ferplus_csv_majority_and_dropping(fer_csv, ferplus_csv):
    train = FerPlusCsv(fer_csv, ferplus_csv, "Training")
    assert train.label_names == FERPLUS_LABELS
    # rows 2 (unknown), 3 (no image name) and 4 (NF) are dropped; row 1's anger/surprise tie goes to surprise
    assert train.row_index.tolist() == [0, 1]
    assert train.targets.tolist() == [1, 2]
    np.testing.assert_array_equal(np.asarray(train[1][0]), face(1))
    assert FerPlusCsv(fer_csv, ferplus_csv, "PublicTest").targets.tolist() == [2, 4]


def test_ferplus_csv_soft_targets(fer_csv, ferplus_csv):
    data = FerPlusCsv(fer_csv, ferplus_csv, "PublicTest", target="soft")
    _, target = data[0]
    assert target.dtype == torch.float32 and target.shape == (8,)
    torch.testing.assert_close(target, torch.tensor([0, 0, 6 / 9, 0, 0, 0, 3 / 9, 0]))
    torch.testing.assert_close(data[1][1].sum(), torch.tensor(1.0))
    assert data.targets.tolist() == [2, 4]


def test_ferplus_csv_row_mismatch(fer_csv, tmp_path):
    rows = [(usage, name, *v) for usage, _, name, v in ROWS[:-1]]
    short = write_csv(tmp_path / "short_new.csv", ["Usage", "Image name", *FERPLUS_VOTE_COLUMNS], rows)
    with pytest.raises(DataError, match="short_new.csv: 7 rows"):
        FerPlusCsv(fer_csv, short, "Training")


# -------------------------------------------------------------------------------------------- FER+ npz
def test_ferplus_npz(npz):
    train = FerPlusNpz(npz, "Training")
    # row 1 is not row_index_exact, so its votes are not trusted; rows 2-4 have unknown/NF majority
    assert train.row_index.tolist() == [0] and train.targets.tolist() == [1]
    assert isinstance(train.images, np.ndarray) and train.images.dtype == np.uint8
    image, target = train[0]
    assert image.mode == "L" and target == 1
    np.testing.assert_array_equal(np.asarray(image), face(0))
    soft = FerPlusNpz(npz, "PublicTest", target="soft")
    assert soft.targets.tolist() == [2, 4]
    torch.testing.assert_close(torch.stack([t for _, t in soft]).sum(1), torch.ones(2))
    fer = FerPlusNpz(npz, "Training", labels="fer2013")
    assert fer.label_names == FER2013_LABELS and fer.targets.tolist() == [3, 0, 6, 2, 4]
    with pytest.raises(DataError, match="contempt"):
        FerPlusNpz(npz, "Training", label_names=FER2013_LABELS)


def test_soft_targets_map_onto_label_names(npz):
    order = tuple(reversed(FERPLUS_LABELS))
    plain, mapped = FerPlusNpz(npz, "PublicTest", target="soft"), FerPlusNpz(npz, "PublicTest", "soft",
                                                                                 label_names=order)
    assert mapped.label_names == order
    torch.testing.assert_close(mapped[0][1], plain[0][1].flip(0))
    assert mapped.targets.tolist() == [7 - t for t in plain.targets]


def test_dataloader_batches(npz):
    data = FerPlusNpz(npz, "Training", target="soft", labels="ferplus",
                      transform=eval_transform({"in_chans": 1, "size": [48, 48], "mean": [0.5], "std": [0.25]}))
    images, targets = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert images.shape == (1, 1, 48, 48) and images.dtype == torch.float32 and targets.shape == (1, 8)


# ------------------------------------------------------------------------------------- RAF-DB, folders
def test_rafdb(rafdb):
    train = RafDB(rafdb, "train")
    assert train.label_names == RAFDB_LABELS and train.targets.tolist() == [4, 0]
    image, target = train[0]
    assert image.mode == "RGB" and image.size == (100, 100) and target == 4
    test = RafDB(rafdb, "test", aligned=False, label_names=FERPLUS_LABELS)
    assert test.targets.tolist() == [FERPLUS_LABELS.index("happiness"), FERPLUS_LABELS.index("neutral")]
    assert test[1][0].size == (120, 120)


def test_image_folder(folder):
    train = ImageFolderDataset(folder, "train")
    assert train.label_names == ("Happy", "angry") and train.targets.tolist() == [0, 0, 1]
    assert [train[i][0].mode for i in range(3)] == ["L", "L", "RGB"]
    mapped = ImageFolderDataset(folder / "train", label_names=FERPLUS_LABELS)
    assert mapped.targets.tolist() == [1, 1, 4]
    with pytest.raises(DataError, match="pass split="):
        ImageFolderDataset(folder)


def test_open_dataset(tmp_path, fer_csv, ferplus_csv, npz, rafdb, folder):
    assert type(open_dataset(str(npz), "Training")) is FerPlusNpz
    assert open_dataset(f"fer2013:{npz}", "Training").label_names == FER2013_LABELS
    assert type(open_dataset(f"ferplus:{npz}", "PublicTest", target="soft")) is FerPlusNpz
    assert type(open_dataset(str(fer_csv), "Training")) is FER2013Csv
    assert len(open_dataset(f"ferplus-csv:{fer_csv},{ferplus_csv}", "Training")) == 2
    assert type(open_dataset(str(rafdb), "test")) is RafDB
    assert type(open_dataset(f"folder:{folder}", "test")) is ImageFolderDataset
    assert type(open_dataset(str(folder), "train")) is ImageFolderDataset
    with pytest.raises(DataError, match="unknown data spec prefix 'nosuch'"):
        open_dataset("nosuch:/data/x.npz", "Training")
    with pytest.raises(DataError, match="missing.npz"):
        open_dataset(str(tmp_path / "missing.npz"), "Training")


# ------------------------------------------------------------------------------------------- bad input
def bad_fer_csv(tmp_path, header=("emotion", "pixels", "Usage"), emotion="0", pix=None):
    rows = [(0, pixels(0), "Training"), (emotion, pixels(1) if pix is None else pix, "Training")]
    return write_csv(tmp_path / "bad.csv", header, rows)


@pytest.mark.parametrize("kwargs, message", [
    (dict(header=("label", "pixels", "Usage")), r"bad.csv: missing column\(s\) \['emotion'\]"),
    (dict(pix=" ".join(["1"] * 2303)), r"bad.csv, line 3: pixels must be 2304 .* found 2303 values"),
    (dict(pix="1 2 x " + " ".join(["1"] * 2301)), r"bad.csv, line 3: pixels must be 2304 .*'1 2 x 1 1'"),
    (dict(pix=" ".join(["256"] * 2304)), r"bad.csv, line 3: pixels must be 2304 space-separated integers 0\.\.255"),
    (dict(emotion="7"), r"bad.csv, line 3: emotion 7 is outside 0..6"),
    (dict(emotion="happy"), r"bad.csv, line 3: emotion 'happy' is not an integer"),
])
def test_bad_fer2013_csv(tmp_path, kwargs, message):
    with pytest.raises(DataError, match=message):
        FER2013Csv(bad_fer_csv(tmp_path, **kwargs), "Training")


def test_missing_files_and_splits(tmp_path, fer_csv, npz, rafdb, folder):
    with pytest.raises(DataError, match="nope.csv: no such file"):
        FER2013Csv(tmp_path / "nope.csv", "Training")
    with pytest.raises(DataError, match="fer2013.csv: unknown split 'Validation'; valid splits: Training, "
                                        "PublicTest, PrivateTest"):
        FER2013Csv(fer_csv, "Validation")
    with pytest.raises(DataError, match="ferplus.npz: unknown split 'PrivateTest'; valid splits: Training, "
                                        "PublicTest$"):
        FerPlusNpz(npz, "PrivateTest")
    with pytest.raises(DataError, match="list_patition_label.txt: unknown split 'val'; valid splits: train, test"):
        RafDB(rafdb, "val")
    with pytest.raises(DataError, match="faces: unknown split 'valid'; valid splits: test, train"):
        ImageFolderDataset(folder, "valid")
    (rafdb / "Image" / "original").rename(rafdb / "Image" / "gone")
    with pytest.raises(DataError, match="original: no such directory"):
        RafDB(rafdb, "train", aligned=False)


def test_bad_npz(tmp_path):
    np.savez(tmp_path / "partial.npz", images=np.zeros((1, 48, 48), np.uint8))
    with pytest.raises(DataError, match=r"partial.npz: missing arrays \['fer_label'"):
        FerPlusNpz(tmp_path / "partial.npz", "Training")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(DataError, match="single.npy: holds a single array"):
        FerPlusNpz(tmp_path / "single.npy", "Training")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match="text.npz: not a readable .npz file"):
        FerPlusNpz(tmp_path / "text.npz", "Training")


@pytest.mark.parametrize("line, message", [
    ("train_00003.jpg 8", "line 3: label 8 is outside 1..7"),
    ("train_00003.jpg", "line 3: expected '<image name> <label>'"),
])
def test_bad_rafdb_labels(rafdb, line, message):
    list_file = rafdb / "EmoLabel" / "list_patition_label.txt"
    list_file.write_text("train_00001.jpg 5\ntest_0001.jpg 4\n" + line + "\n")
    with pytest.raises(DataError, match="list_patition_label.txt, " + message):
        RafDB(rafdb, "train")


def test_undecodable_image_fails_on_access(folder):
    (folder / "train" / "angry" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    data = ImageFolderDataset(folder, "train")
    assert data[0][1] == 0
    with pytest.raises(DataError, match="broken.jpg: cannot read image"):
        data[len(data) - 1]


# ------------------------------------------------------------------------------------------ transforms
SPEC1 = {"in_chans": 1, "size": [48, 48], "mean": [0.5], "std": [0.25]}


def test_eval_transform_one_channel():
    x = eval_transform(SPEC1)(Image.new("L", (48, 48), 204))
    assert type(x) is torch.Tensor and x.shape == (1, 48, 48) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.full((1, 48, 48), (0.8 - 0.5) / 0.25))
    red = eval_transform(SPEC1)(Image.new("RGB", (96, 80), (255, 0, 0)))  # luminance 0.299 * 255 = 76
    assert red.shape == (1, 48, 48)
    assert abs(red.mean().item() * 0.25 + 0.5 - 76 / 255) < 2 / 255


def test_eval_transform_three_channels():
    spec = InputSpec(in_chans=3, size=(64, 56), mean=(0.5,), std=(0.5,))
    x = eval_transform(spec)(Image.fromarray(face(3)))
    assert x.shape == (3, 64, 56) and x.dtype == torch.float32
    torch.testing.assert_close(x[0], x[2])
    rgb = eval_transform({"in_chans": 3, "size": [48, 48], "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]})
    torch.testing.assert_close(rgb(Image.new("RGB", (48, 48), (0, 0, 0)))[:, 0, 0], torch.tensor([-0.2, -0.4, -0.6]))


def test_train_transform():
    torch.manual_seed(0)
    image = Image.fromarray(face(5))
    assert torch.equal(train_transform(SPEC1, "none")(image), eval_transform(SPEC1)(image))
    augment = train_transform(SPEC1)
    outputs = torch.stack([augment(image) for _ in range(8)])
    assert outputs.shape == (8, 1, 48, 48) and outputs.dtype == torch.float32 and outputs.isfinite().all()
    assert not torch.equal(outputs[0], outputs[1])
    assert train_transform({**SPEC1, "in_chans": 3, "size": [64, 64]}, "strong")(image).shape == (3, 64, 64)
    with pytest.raises(ConfigError, match="'extreme'"):
        train_transform(SPEC1, "extreme")



def _batch(n=6, spec=SPEC1):
    return torch.stack([eval_transform(spec)(Image.fromarray(face(i))) for i in range(n)])


def test_augment_batch_mirrors_each_image_or_leaves_it(monkeypatch):
    monkeypatch.setitem(AUGMENT_STRENGTHS, "flip_only", dict(degrees=0, translate=0, scale=0, jitter=0, erase=0))
    x = _batch(16)
    y = augment_batch(x, SPEC1, "flip_only", torch.Generator().manual_seed(0))
    mirrored = [torch.allclose(a, b.flip(-1), atol=1e-5) for a, b in zip(y, x)]
    kept = [torch.allclose(a, b, atol=1e-5) for a, b in zip(y, x)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


def test_augment_batch_erases_one_rectangle(monkeypatch):
    monkeypatch.setitem(AUGMENT_STRENGTHS, "erase_only", dict(degrees=0, translate=0, scale=0, jitter=0, erase=1.0))
    x = torch.full((32, 1, 48, 48), 1.0)
    y = augment_batch(x, SPEC1, "erase_only", torch.Generator().manual_seed(1))
    for image in y:
        zero = image[0] == 0
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert zero.sum() == len(rows) * len(cols)  # a filled rectangle
        assert 0.005 * 48 * 48 <= zero.sum() <= 0.15 * 48 * 48  # of about 2-10 % of the area


def test_augment_batch_is_repeatable_and_keeps_shape_and_range():
    x = _batch(8)
    spec3 = {**SPEC1, "in_chans": 3, "mean": [0.5, 0.4, 0.3]}
    a = augment_batch(x, SPEC1, "default", torch.Generator().manual_seed(5))
    b = augment_batch(x, SPEC1, "default", torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype and not torch.equal(a, x)
    assert a.min() >= (0 - 0.5) / 0.25 - 1e-6 and a.max() <= (1 - 0.5) / 0.25 + 1e-6  # pixels stay in [0, 1]
    assert augment_batch(_batch(2, spec3), spec3, "strong").shape == (2, 3, 48, 48)
    assert torch.equal(augment_batch(x, SPEC1, "none"), x)
    with pytest.raises(ConfigError, match="'extreme'"):
        augment_batch(x, SPEC1, "extreme")
    with pytest.raises(ConfigError, match=r"\(B, C, H, W\)"):
        augment_batch(x[0], SPEC1)


# ------------------------------------------------------------------------------- the project's npz file
needs_npz = pytest.mark.skipif(not DEFAULT_FERPLUS_NPZ.is_file(), reason=f"{DEFAULT_FERPLUS_NPZ} is absent")


@needs_npz
@pytest.mark.parametrize("split, majority, fer_counts", [
    ("Training", [10309, 7528, 3562, 3515, 2467, 191, 652, 165], [3995, 436, 4097, 7215, 4830, 3171, 4965]),
    ("PublicTest", [1335, 899, 456, 412, 319, 34, 74, 24], [467, 56, 496, 895, 653, 415, 607]),
])
def test_real_ferplus_npz(split, majority, fer_counts):
    data = FerPlusNpz(DEFAULT_FERPLUS_NPZ, split, target="soft")
    # The README's majority table counts all rows. The rows with row_index_exact False (149 Training,
    # 10 PublicTest) carry NF=10 votes, except that one Training row got row 5274's votes, whose majority
    # is neutral. So the exact-row filter removes NF rows only, except one neutral row in Training:
    # PublicTest keeps 1335+899+456+412+319+34+74+24 = 3553, Training 28389 - 1 = 28388.
    expected = np.array(majority) - (np.eye(8, dtype=int)[0] if split == "Training" else 0)
    np.testing.assert_array_equal(np.bincount(data.targets, minlength=8), expected)
    assert len(data) == {"Training": 28388, "PublicTest": 3553}[split]
    np.testing.assert_allclose(data.soft_targets.sum(1), 1, rtol=1e-6)
    assert data.images.shape == (len(data), 48, 48) and data.images.dtype == np.uint8
    fer = FerPlusNpz(DEFAULT_FERPLUS_NPZ, split, labels="fer2013")
    assert np.bincount(fer.targets, minlength=7).tolist() == fer_counts


@needs_npz
def test_real_npz_first_row():
    data = open_dataset("fer2013", "Training")
    assert data.row_index[0] == 0 and data.targets[:10].tolist() == [0, 0, 2, 4, 6, 2, 4, 3, 3, 2]
    assert np.asarray(data[0][0]).ravel()[:10].tolist() == [70, 80, 82, 72, 58, 58, 60, 63, 54, 58]
