"""The pretrained weights shipped inside emozoo: layout, model cards, offline loading, and their accuracy."""
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import ModelCard

import emozoo
from emozoo._pretrained import published
from emozoo._publish import write_repo
from emozoo.cli import build_cli
from emozoo.data import DEFAULT_FERPLUS_NPZ

SHIPPED = emozoo.list_models(pretrained=True)
SHIPPED_DIR = Path(emozoo.__file__).parent / "weights"


@pytest.mark.parametrize("name", SHIPPED)
def test_each_published_name_is_shipped_in_the_layout_of_its_hub_repo(name):
    cfg = published()[name]
    folder = SHIPPED_DIR / name
    assert cfg.is_shipped() and Path(cfg.folder) == folder and cfg.hf_hub_id == f"emozoo/{name}"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["name"] == name and config["architecture"] == name.partition(".")[0]
    assert config["weights_sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert config["label_names"] == list(emozoo.FERPLUS_LABELS)
    assert config["license"] and config["dataset"].startswith("ferplus")
    assert 0 < config["metrics"]["PublicTest"]["accuracy"] < 1 and config["metrics"]["PublicTest"]["n"] == 3553


@pytest.mark.parametrize("name", SHIPPED)
def test_the_model_card_states_results_labels_input_recipe_terms_and_citation(name):
    folder = SHIPPED_DIR / name
    config = json.loads((folder / "config.json").read_text())
    card = ModelCard((folder / "README.md").read_text())
    meta = card.data.to_dict()
    assert meta["library_name"] == "emozoo" and meta["license"] == config["license"]
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == config["metrics"]["PublicTest"]["accuracy"]
    accuracy = config["metrics"]["PublicTest"]["accuracy"]
    for text in (f"| PublicTest | {accuracy:.4f} |", "| 7 contempt |", "resized to 48x48, 1 channel(s)",
                 "## Training recipe", "FER2013", "MIT licence", "arXiv:2106.16126",
                 f"`emozoo eval {name} --data ferplus --split PublicTest`", f'emozoo.create("{name}", pretrained=True)'):
        assert text in card.text, text


@pytest.mark.ensemble_weights
def test_pretrained_true_works_offline_with_an_empty_cache(tmp_path):
    """A fresh clone: no network, nothing in the Hugging Face cache; the shipped copies are used."""
    code = textwrap.dedent("""
        import json, torch, emozoo
        out = {}
        for arch in ("emoxnetlite", "emoxnet"):
            model = emozoo.create(arch, pretrained=True).eval()
            x = torch.randn(2, *model.config.input.shape)
            with torch.no_grad():
                probs = model(x).softmax(-1)
            out[arch] = [model.config.name, model.weights_origin, list(probs.shape), float(probs.sum(-1).mean())]
        print(json.dumps(out))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for arch in ("emoxnetlite", "emoxnet"):
        name, origin, shape, total = data[arch]
        assert name == f"{arch}.ferplus" and origin == "shipped with emozoo"
        assert shape == [2, 8] and total == pytest.approx(1.0)
    assert not (tmp_path / "hf" / "hub").exists() or not any((tmp_path / "hf" / "hub").iterdir())


@pytest.mark.ensemble_weights
def test_the_shipped_ensembles_members_keep_their_training_holdout_when_unpacked(tmp_path):
    """So that a learned fusion can be fitted over them again."""
    result = CliRunner().invoke(build_cli(), ["unpack", "emoxnet.ferplus", "--out", str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0, result.output
    paths = json.loads(result.stdout)["members"]
    members = json.loads((SHIPPED_DIR / "emoxnet.ferplus" / "config.json").read_text())["model_args"]["members"]
    assert len(paths) == len(members) >= 2
    for path in paths:
        assert json.loads((tmp_path / "m" / path.rsplit("/", 1)[-1] / "config.json").read_text())["recipe"]["holdout"] == 0.05


def test_write_repo_mirrors_what_push_would_commit(tmp_path):
    torch.manual_seed(0)
    model = emozoo.create("resnet10", width=0.25)
    model.config.dataset = "ferplus (Training)"
    folder = emozoo.save_pretrained(model, tmp_path / "trained")
    out = write_repo(folder, "acme/resnet10.ferplus", tmp_path / "repo", notes="## Tried\n\nnothing else", license="apache-2.0")
    config = json.loads((out / "config.json").read_text())
    assert config["name"] == "resnet10.ferplus" and config["license"] == "apache-2.0"
    assert config["weights_sha256"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    card = (out / "README.md").read_text()
    assert "## Tried\n\nnothing else" in card and "MIT licence" in card
    assert (out / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    loaded = emozoo.create(f"local-dir:{out}", pretrained=True)
    x = torch.randn(2, 1, 48, 48)
    assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_push_to_dir_from_the_cli(tmp_path):
    folder = emozoo.save_pretrained(emozoo.create("resnet10", width=0.25), tmp_path / "trained")
    result = CliRunner().invoke(build_cli(), ["push", str(folder), "--repo", "acme/x", "--to-dir", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["README.md", "config.json", "model.safetensors"]


@pytest.mark.skipif(not DEFAULT_FERPLUS_NPZ.is_file(), reason="the shared FER+ data file is not here")
@pytest.mark.parametrize("name", ["emoxnetlite.ferplus",
                                  pytest.param("emoxnet.ferplus", marks=pytest.mark.slow)])
def test_the_shipped_weights_score_what_their_card_says(name):
    """The card's numbers were measured on the training output; the stored copy (float16 for the ensemble's
    members, float32 for the student), loaded as float32, must match them."""
    from emozoo.workflows import evaluate_model

    model = emozoo.create(name, pretrained=True)
    assert {t.dtype for t in model.state_dict().values() if t.is_floating_point()} == {torch.float32}
    result = evaluate_model(model, "ferplus", "PublicTest", progress=False)
    assert result["n"] == 3553
    assert result["accuracy"] == pytest.approx(model.config.metrics["PublicTest"]["accuracy"], abs=0.5 / 3553)
