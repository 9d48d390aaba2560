"""Camera and detector corruptions (emozoo.data.corruptions), ``emozoo eval --corrupt`` and the robustness benchmark."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import emozoo
from emozoo.data import FER2013_LABELS, FERPLUS_LABELS, eval_transform, map_labels
from emozoo.data.corruptions import CORRUPTIONS, REPORT, TRAINING, Corrupt, canonical, corrupt, parse, random_corrupt
from emozoo.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
#: kinds whose result depends on the generator's draws
RANDOM = ("noise", "rotate", "shift", "patch")
#: a strength of each kind that leaves the image as it is
TRIVIAL = {"blur": 0, "downscale": 48, "noise": 0, "lowlight": 1, "contrast": 1, "rotate": 0, "shift": 0, "scale": 1,
           "eyes": 0, "mouth": 0, "patch": 0}


def faces(n=6, channels=1, size=48, seed=0) -> torch.Tensor:
    """Face-like float batches in [0, 1]: a smooth gradient with a random texture, so every corruption shows."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.1, 0.9, size)
    base = (ramp.view(1, -1) + ramp.view(-1, 1)) / 2
    x = (base + 0.2 * torch.rand(n, 1, size, size, generator=g) - 0.1).clamp(0, 1)
    return x.repeat(1, channels, 1, 1)


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_each_corruption_keeps_shape_dtype_range_and_changes_the_image(kind, channels):
    x = faces(channels=channels)
    y = corrupt(x, kind, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    changed = (y - x).abs().flatten(1).amax(1)
    assert (changed > 1e-3).all(), f"{kind} left {int((changed <= 1e-3).sum())} images unchanged"
    one = corrupt(x[0], kind, torch.Generator().manual_seed(0))  # one (C, H, W) image: the same shape back
    assert one.shape == x[0].shape


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_each_corruption_is_deterministic_with_a_seed(kind):
    x = faces(n=16)
    a = corrupt(x, kind, torch.Generator().manual_seed(3))
    b = corrupt(x, kind, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    if kind in RANDOM:  # another seed draws otherwise (16 images: the turn direction differs for one at least)
        assert not torch.equal(a, corrupt(x, kind, torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("kind", list(TRIVIAL))
def test_trivial_strengths_leave_the_image_unchanged(kind):
    x = faces()
    assert torch.equal(corrupt(x, f"{kind}:{TRIVIAL[kind]}", torch.Generator().manual_seed(0)), x)


def test_strengths_scale_with_the_face_size():
    """blur:1.5 on a 96 px face is sigma 3 px: the same picture as on the 48 px face, enlarged."""
    small, large = faces(n=2, size=48), faces(n=2, size=96)
    up = torch.nn.functional.interpolate(corrupt(small, "downscale:12"), 96, mode="bilinear", align_corners=False)
    assert (corrupt(large, "downscale:12") - up).abs().mean() < 0.02
    assert (corrupt(large, "blur:3") - large).abs().mean() > (corrupt(large, "blur:1.5") - large).abs().mean()


def test_jpeg_compresses_a_grey_face_alike_in_1_or_3_channels_and_keeps_colour():
    grey = faces(n=3)
    assert torch.equal(corrupt(grey.repeat(1, 3, 1, 1), "jpeg:20"), corrupt(grey, "jpeg:20").repeat(1, 3, 1, 1))
    colour = torch.cat([grey, grey.flip(-1), 1 - grey], 1)
    out = corrupt(colour, "jpeg:20")
    assert (out[:, 0] - out[:, 2]).abs().mean() > 0.1 and (out - colour).abs().mean() > 0.005
    assert (corrupt(grey, "jpeg:10") - grey).abs().mean() > (corrupt(grey, "jpeg:90") - grey).abs().mean()
    with pytest.raises(ConfigError, match="1 or 3 channels"):
        corrupt(torch.rand(1, 2, 8, 8), "jpeg")


def test_the_occluders_cover_the_eyes_the_mouth_and_a_patch_of_the_asked_size():
    x = faces(n=4)
    eyes, mouth = corrupt(x, "eyes:0.2"), corrupt(x, "mouth:0.2")
    grey_rows = lambda y: sorted({int(r) for r in (y == 0.5).all(-1).all(1).nonzero()[:, 1]})  # noqa: E731
    assert grey_rows(eyes) == list(range(12, 22)) and grey_rows(mouth) == list(range(31, 41))
    patch = corrupt(x, "patch:0.25", torch.Generator().manual_seed(0))
    assert ((patch == 0.5) & (x != 0.5)).flatten(1).sum(1).tolist() == [24 * 24] * 4


def test_parse_reads_kind_and_strength_and_names_the_fix():
    assert parse("blur") == ("blur", 1.5) and parse(" JPEG:10 ") == ("jpeg", 10.0) and parse("rotate:") == ("rotate", 20)
    assert canonical("downscale") == "downscale:24" and canonical("noise:0.050") == "noise:0.05"
    assert all(parse(spec) for spec in REPORT) and len(set(REPORT)) == len(REPORT)
    for spec, words in (("blr:2", "unknown corruption 'blr'"), ("blur:x", "must be a number, e.g. blur:1.5"),
                        ("blur:11", "between 0 and 10"), ("jpeg:0", "between 1 and 100"), ("noise:nan", "between"),
                        ("scale:3", "between 0.5 and 2")):
        with pytest.raises(ConfigError, match=words) as info:
            parse(spec)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="float"):
        corrupt(torch.zeros(1, 8, 8, dtype=torch.uint8), "blur")


def test_corrupt_transform_gives_a_face_the_same_draws_whatever_the_order_batch_or_channels():
    x = faces(n=8, seed=5)
    step = Corrupt("patch:0.2", seed=1)
    forward = [step(img) for img in x]
    backward = [step(img) for img in reversed(x)][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    assert len({tuple((f == 0.5).nonzero()[0].tolist()) for f in forward}) > 1  # each face its own place
    rgb = [Corrupt("patch:0.2", seed=1)(img.repeat(3, 1, 1)) for img in x]  # same grey face in 3 channels
    assert all(torch.equal(a.repeat(3, 1, 1), b) for a, b in zip(forward, rgb))
    other = [Corrupt("patch:0.2", seed=2)(img) for img in x]
    assert not all(torch.equal(a, b) for a, b in zip(forward, other))
    assert Corrupt("noise", seed=-1).key(x[0]) >= 0 and "noise:0.08" in repr(Corrupt("noise"))


def test_eval_transform_corrupts_before_normalising():
    spec = {"in_chans": 1, "size": [48, 48], "mean": [0.5], "std": [0.25]}
    face = (faces(n=1)[0, 0] * 255).round().to(torch.uint8).numpy()
    clean = eval_transform(spec)(face)
    dark = eval_transform(spec, corrupt="lowlight:0.5")(face)
    assert torch.allclose(dark * 0.25 + 0.5, (clean * 0.25 + 0.5) * 0.5, atol=1e-5)
    chain = eval_transform(spec, corrupt=["lowlight:0.5", "lowlight:0.5"])(face)
    assert torch.allclose(chain * 0.25 + 0.5, (clean * 0.25 + 0.5) * 0.25, atol=1e-5)
    noisy = [eval_transform(spec, corrupt="noise", seed=s)(face) for s in (0, 0, 1)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], noisy[2])
    with pytest.raises(ConfigError, match="unknown corruption"):
        eval_transform(spec, corrupt="fog")


def test_random_corrupt_passes_everything_at_p0_and_spoils_every_image_at_p1():
    x = faces(n=24)
    assert torch.equal(random_corrupt(x, 0.0, torch.Generator().manual_seed(0)), x)
    y = random_corrupt(x, 1.0, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert ((y - x).abs().flatten(1).amax(1) > 1e-3).all()
    assert torch.equal(y, random_corrupt(x, 1.0, torch.Generator().manual_seed(0)))
    assert set(TRAINING) <= set(CORRUPTIONS)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny")
    emozoo.save_pretrained(emozoo.create("resnet10", width=0.25), folder)
    return str(folder)


def test_eval_corrupt_reports_the_corruption_and_differs_from_clean(cli, tiny_model, fer_csv):
    args = ("eval", tiny_model, "--data", fer_csv, "--split", "PublicTest", "--json")
    clean = json.loads(cli(*args).output)
    result = cli(*args, "--corrupt", "blur:1.5")
    assert result.exit_code == 0, result.output
    blurred = json.loads(result.output)
    assert blurred["corrupt"] == ["blur:1.5"] and blurred["seed"] == 0 and blurred["n"] == clean["n"] == 64
    assert "corrupt" not in clean
    assert (blurred["accuracy"], blurred["ece"]) != (clean["accuracy"], clean["ece"])
    again = json.loads(cli(*args, "--corrupt", "blur:1.5").output)
    assert again["ece"] == blurred["ece"]
    text = cli(*args[:-1], "--corrupt", "downscale", "--corrupt", "jpeg:30", "--seed", "2", "--limit", "16")
    assert text.exit_code == 0 and "under downscale:24 + jpeg:30 (seed 2)" in text.output
    assert "first 16 (16 faces)" in text.output
    for bad, words in (("fog", "unknown corruption 'fog'"), ("blur:20", "between 0 and 10")):
        result = cli(*args, "--corrupt", bad)
        assert result.exit_code == 1 and words in result.output and len(result.output.strip().splitlines()) == 1


def test_fer_classes_map_onto_seven_ferplus_classes():
    mapped = [FERPLUS_LABELS[i] for i in map_labels(FER2013_LABELS, FERPLUS_LABELS)]
    assert mapped == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    assert set(FERPLUS_LABELS) - set(mapped) == {"contempt"}


def test_robustness_benchmark_writes_its_report(tiny_model, fer_csv, tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "robustness.py"), "--model", tiny_model,
                          "--no-peer", "--data", str(fer_csv), "--limit", "12", "--corrupt", "blur:1.5", "--corrupt",
                          "mouth", "--threads", "1", "--out", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / "robustness.json").read_text())
    assert [r["corruption"] for r in doc["rows"]] == ["clean", "blur:1.5", "mouth:0.2"]
    cells = [r["results"][tiny_model] for r in doc["rows"]]
    assert all(c["n"] == 12 for c in cells) and cells[0]["drop"] == 0
    assert all(np.isclose(c["drop"], 100 * (cells[0]["accuracy"] - c["accuracy"])) for c in cells)
    assert doc["training"][tiny_model]["corrupt"] == 0 and doc["split"] == "PublicTest"
    md = (tmp_path / "robustness.md").read_text()
    assert f"| corruption | {tiny_model} |" in md and "| blur:1.5 |" in md and "| mouth:0.2 |" in md
    assert "## What training used" in md
    if (tmp_path / "robustness.png").exists():
        assert (tmp_path / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "robustness.py"), "--corrupt", "fog", "--no-peer",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown corruption 'fog'" in bad.stderr and not (tmp_path / "x").exists()


def test_fer_peer_sees_the_same_spoilt_faces_at_64_px_and_is_scored_on_the_shared_classes(fer_csv):
    """fer's column without fer's model: a stand-in that always answers 'happy' must score the share of happy faces."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("robustness", REPO / "benchmarks" / "robustness.py")
    robustness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(robustness)
    peer = object.__new__(robustness.FerPeer)
    peer.size, peer.to_ferplus = (64, 64), map_labels(FER2013_LABELS, FERPLUS_LABELS)
    face = (faces(n=1)[0, 0] * 255).round().to(torch.uint8).numpy()
    x = peer.transform("mouth:0.2", 0)(face)
    assert x.shape == (1, 64, 64) and float(x.min()) >= -1 and float(x.max()) <= 1
    same = eval_transform({"in_chans": 1, "size": [48, 48], "mean": [0.0], "std": [1.0]}, corrupt="mouth:0.2")(face)
    assert torch.allclose(torch.nn.functional.interpolate(same[None], 64, mode="bilinear")[0] * 2 - 1, x, atol=1e-6)
    happy = np.eye(7)[FER2013_LABELS.index("happy")]
    peer.scores = lambda batch: np.tile(happy, (len(batch), 1))
    args = argparse.Namespace(data=str(fer_csv), split="PublicTest", holdout=None, limit=20, seed=0, batch_size=8)
    cell = peer.score("blur", args)
    assert cell["n"] == 20 and cell["dropped_contempt"] == 0
    assert np.isclose(cell["accuracy"], sum(i % 7 == FER2013_LABELS.index("happy") for i in range(20)) / 20)


def test_corrupt_batch_keeps_the_normalisation_and_spares_or_spoils_every_image():
    from emozoo.data.transforms import corrupt_batch

    spec = {"in_chans": 1, "size": [48, 48], "mean": [0.5], "std": [0.25]}
    x = (torch.rand(8, 1, 48, 48, generator=torch.Generator().manual_seed(0)) - 0.5) / 0.25
    assert torch.equal(corrupt_batch(x, spec, 0.0), x)
    out = corrupt_batch(x, spec, 1.0, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and all(not torch.allclose(a, b) for a, b in zip(out, x))
    assert out.min() >= -2 - 1e-5 and out.max() <= 2 + 1e-5  # pixels in [0, 1] under mean 0.5, std 0.25


def test_training_with_corrupt_shows_the_teacher_the_clean_faces_and_the_student_the_spoilt_ones(tmp_path):
    """Recipe.corrupt ("clean teaching"): the online teacher scores each batch before it is corrupted."""
    import emozoo
    from emozoo.builtins.distill import KDLoss
    from emozoo.train import Recipe, fit

    torch.manual_seed(0)
    images = torch.rand(32, 1, 48, 48)
    data = torch.utils.data.TensorDataset((images - 0.5) / 0.5, torch.randint(0, 8, (32,)))
    student = emozoo.create("resnet10", width=0.25)
    teacher = emozoo.create("resnet10", width=0.25).eval()
    seen = {"student": [], "teacher": []}
    student.register_forward_pre_hook(lambda m, args: seen["student"].append(args[0].detach().clone()))
    teacher.register_forward_pre_hook(lambda m, args: seen["teacher"].append(args[0].detach().clone()))
    recipe = Recipe(epochs=1, batch_size=16, augment="none", batch_augment=True, corrupt=1.0, num_workers=0,
                    amp=False, warmup_epochs=0)
    fit(student, data, None, recipe, tmp_path, progress=False, distill_loss=KDLoss(), teacher=teacher)
    pairs = list(zip(seen["student"], seen["teacher"]))
    assert len(pairs) == 2
    for spoilt, clean in pairs:
        assert all(any(torch.equal(face, d) for d in data.tensors[0]) for face in clean)  # as the data holds them
        assert all(not torch.allclose(a, b) for a, b in zip(spoilt, clean))  # every student face corrupted
    with pytest.raises(emozoo.ConfigError, match="batch_augment"):
        Recipe(corrupt=0.5)
