"""The repository holds the library, not its lab notebook: no experiment weights or large outputs are tracked."""
import json
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


def test_gpu_scripts_parse_and_name_recipes_that_exist():
    import re

    scripts = sorted((REPO / "recipes").glob("gpu_*.sh"))
    assert {s.name for s in scripts} >= {"gpu_common.sh", "gpu_ferplus.sh", "gpu_families.sh"}
    for script in scripts:
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, f"{script.name}: {check.stderr}"
    runs = re.search(r"MEMBER_RUNS=\(([^)]*)\)", (REPO / "recipes" / "gpu_families.sh").read_text()).group(1).split()
    assert len(runs) == 7 and all((REPO / "recipes" / f"{name}.ferplus.json").is_file() for name in runs)


STUB = """#!/bin/bash
# stands in for emozoo: records the call and makes its --out a copy of a small model folder
out=""; prev=""
for a in "$@"; do [ "$prev" = "--out" ] && out=$a; prev=$a; done
echo "$*" >> "$CALLS"
mkdir -p "$out" && cp "$TEMPLATE"/* "$out"/
case " $* " in
*" --search "*) echo '{"search": {"best": {"members": ["m/a"], "fusion": "mean_prob", "flip": false, "accuracy": 0.85,
  "macs": 1}, "best_any_cost": {"members": ["m/a", "m/b"], "fusion": "mean_logit", "flip": true, "accuracy": 0.86,
  "macs": 4}}}' ;;
*) echo '{"event": "done"}' ;;
esac
"""


@pytest.mark.parametrize("script", ["gpu_ferplus.sh", "gpu_families.sh"])
def test_gpu_script_runs_every_stage_in_order(script, tmp_path):
    """The GPU scripts' control flow with emozoo stubbed out: members, ensemble(s), students, (the pack)."""
    import os

    import emozoo

    template = tmp_path / "template"
    emozoo.save_pretrained(emozoo.create("resnet10", width=0.25), template, recipe={"members": []},
                           metrics={"holdout": {"accuracy": 0.5, "n": 10}})
    stub = tmp_path / "emozoo"
    stub.write_text(STUB)
    stub.chmod(0o755)
    calls = tmp_path / "calls.log"
    env = {**os.environ, "EMOZOO": str(stub), "CALLS": str(calls), "TEMPLATE": str(template), "MEMBER_EPOCHS": "3",
           "PACK_TO": str(tmp_path / "pack")}
    run = subprocess.run(["bash", f"recipes/{script}", str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "done;" in run.stdout, run.stdout + run.stderr
    lines = calls.read_text().splitlines()
    commands = [line.split()[0] for line in lines]
    trains, distills = commands.count("train"), commands.count("distill")
    unpacks = commands.count("unpack")  # gpu_families.sh: the shipped ensemble's members join the search
    assert commands == (["train"] * trains + ["unpack"] * unpacks + ["ensemble"] * (len(commands) - trains - distills
                                                                                    - unpacks) + ["distill"] * distills)
    assert all("--epochs 3 " in line for line in lines if line.startswith("train"))
    if script == "gpu_families.sh":
        assert trains == 7 and distills == 2
        assert [line for line in lines if line.startswith("unpack")] == [
            f"unpack emoxnet.ferplus --out {tmp_path / 'out' / 'shipped'}"]
        # one search within the budget; its best at any cost (1 point better) built from its row, and the teacher
        assert [line for line in lines if line.startswith("ensemble")][1].startswith(
            "ensemble m/a m/b --fusion mean_logit --flip --out ")
        assert [("--search --search-flip" in line, "--max-macs" in line) for line in lines
                if line.startswith("ensemble")] == [(True, True), (False, False)]
        assert all(f"--teacher {tmp_path / 'out' / 'emoxnet_any'} " in line for line in lines if "distill" in line)
        assert sorted((tmp_path / "pack").glob("results.tar.xz.part-*")) and (tmp_path / "pack" / "manifest.txt").is_file()
    else:
        assert trains == 5 and distills == 5 and unpacks == 0 and "teacher: " not in run.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_families_script_runs_end_to_end_on_a_few_faces(tmp_path):
    """The whole GPU plan on 96 faces and one epoch each, on the CPU: members, both searches, students, the pack."""
    import os
    import tarfile

    from emozoo.data import DEFAULT_FERPLUS_NPZ

    if not DEFAULT_FERPLUS_NPZ.is_file():
        pytest.skip("the shared FER+ data file is not here")
    env = {**os.environ, "LIMIT": "96", "MEMBER_EPOCHS": "1", "STUDENT_EPOCHS": "1", "DEADLINE": "5000",
           "PACK_TO": str(tmp_path / "pack")}
    run = subprocess.run(["bash", "recipes/gpu_families.sh", str(tmp_path / "out")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=3600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "teacher: " in run.stdout and "teacher: none" not in run.stdout, run.stdout
    parts = sorted((tmp_path / "pack").glob("results.tar.xz.part-*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    (tmp_path / "all.tar.xz").write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tmp_path / "all.tar.xz") as tar:
        names = tar.getnames()
    assert "./emoxnetlite/model.safetensors" in names and "./logs/emoxnet_cheap/config.json" in names
    assert "./logs/search.png" in names  # the search's candidates, drawn
    search = json.loads((tmp_path / "out" / "emoxnet_cheap.jsonl").read_text())["search"]
    searched = [m["member"] for m in search["members"]]  # the shipped ensemble's members were candidates too
    assert any(m.endswith("shipped/0_esr") for m in searched) and any(m.endswith("shipped/1_resnet10") for m in searched)
