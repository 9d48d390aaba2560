"""The repository holds the library, not its lab notebook: no experiment weights or large outputs are tracked."""
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

LIMIT = 1_000_000  # bytes
#: where large files belong: the weights shipped with emozoo and its plugins, and the example photos
ALLOWED = ("src/emozoo/weights/", "examples/", "plugins/emozoo-blazeface/src/emozoo_blazeface/models/")


def tracked_files():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def too_large(files, size_of):
    return sorted(f for f in files if not f.startswith(ALLOWED) and size_of(f) > LIMIT)


def test_no_tracked_file_over_1_mb_outside_the_shipped_weights_and_examples():
    files = tracked_files()
    assert "pyproject.toml" in files
    offenders = too_large(files, lambda f: (REPO / f).stat().st_size if (REPO / f).is_file() else 0)
    assert offenders == [], f"tracked files over 1 MB (move them out of the tree; git history keeps them): {offenders}"


def test_the_size_rule_catches_a_checkpoint_in_results():
    sizes = {"results/emoxnet.ferplus/run7/model.safetensors": 4_000_000, "src/emozoo/weights/x/model.safetensors":
             77_000_000, "examples/face.png": 2_000_000, "benchmarks/results/pareto.png": 50_000}
    assert too_large(sizes, sizes.get) == ["results/emoxnet.ferplus/run7/model.safetensors"]


def test_each_shipped_model_card_is_short_and_names_its_held_out_test_split():
    import emozoo
    from emozoo._pretrained import published

    emozoo.load_plugins()
    cards = [Path(cfg.folder) / "README.md" for cfg in published().values()]
    assert len(cards) == 2
    for card in cards:
        text = card.read_text()
        assert len(text.splitlines()) <= 160, f"{card}: {len(text.splitlines())} lines"
        assert "## Intended use and limitations" in text and "PrivateTest" in text and "## What was tried" in text
