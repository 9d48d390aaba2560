"""Fine-tuning the timm way: published weights on a user's own classes (an image folder, colour or grey)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import emozoo

LABELS = ("calm", "grin", "scowl")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A generated 3-class image folder (``train/`` 40 a class, ``test/`` 8 a class), colour, 64x64: class k
    is brighter in horizontal band k, so a few steps can learn it."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 8)):
        for k, label in enumerate(LABELS):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 110, (64, 64, 3), dtype=np.uint8)
                img[k * 21:(k + 1) * 21] += 120
                Image.fromarray(img).save(root / split / label / f"{i}.png")
    return root


def test_train_init_fine_tunes_the_pretrained_student_on_a_folder_of_other_classes(cli, faces, tmp_path):
    out = tmp_path / "mine"
    result = cli("train", "--init", "emoxnetlite.ferplus", "--data", f"folder:{faces}", "--split", "train",
                 "--holdout", 0.2, "--epochs", 3, "--lr", 0.01, "--warmup-epochs", 0, "--batch-size", 20,
                 "--num-workers", 0, "--augment", "none", "--seed", 0, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    epochs = [e for e in map(json.loads, result.stdout.splitlines()) if e.get("event") == "epoch"]
    assert len(epochs) == 3 and epochs[-1]["train"]["loss"] < epochs[0]["train"]["loss"]

    tuned = emozoo.create(out, pretrained=True).eval()
    assert tuned.config.label_names == LABELS and tuned.config.architecture == "emoxnetlite"
    assert "--init emoxnetlite.ferplus" in tuned.config.recipe["command"]
    published = emozoo.create("emoxnetlite.ferplus", pretrained=True).state_dict()
    state = tuned.state_dict()
    assert state["head.fc.weight"].shape == (3, published["head.fc.weight"].shape[1])
    assert not torch.equal(state["stem.0.weight"], published["stem.0.weight"])  # the body was fine-tuned too

    preds = emozoo.predict(sorted((faces / "test").rglob("*.png")), tuned, detector="full")
    assert {p.faces[0].label for p in preds} <= set(LABELS)
    right = sum(p.faces[0].label == Path(p.source).parent.name for p in preds)
    assert right >= 0.8 * len(preds), right


def test_init_without_a_model_refuses_model_args(cli, faces, tmp_path):
    result = cli("train", "--init", "emoxnetlite.ferplus", "--model-arg", "width=1", "--data", f"folder:{faces}",
                 "--split", "train", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "--model-arg and --grow need the MODEL" in result.output
    result = cli("train", "--data", f"folder:{faces}", "--out", tmp_path / "y")
    assert result.exit_code == 1 and "--init emoxnetlite.ferplus" in result.output
