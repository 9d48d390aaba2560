"""Uncertainty users can act on (issue 34 point 3): the margin, an ensemble's members and their agreement,
``min_confidence`` / ``--min-confidence`` and the coverage benchmark. Tiny random models, generated images."""
import csv
import importlib.util
import json

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

import emozoo
from emozoo.inference import draw_faces
from emozoo.inference.results import UNCERTAIN, FacePrediction

TINY = [("resnet10", {"width": 0.25}), ("mini_xception", {"width": 0.5}), ("resnet10", {"width": 0.25})]
LABELS = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]


def images(n, seed=0, size=48):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(n)]


def voting(classes, bias=4.0, flip=False):
    """A tiny EmoXNet (mean of probabilities) whose member k always votes ``classes[k]``: zero head weights, a bias."""
    torch.manual_seed(0)
    model = emozoo.create("emoxnet", members=TINY[:len(classes)], fusion="mean_prob", flip=flip).eval()
    with torch.no_grad():
        for member, k in zip(model.members, classes):
            member.head.fc.weight.zero_()
            member.head.fc.bias.copy_(bias * torch.nn.functional.one_hot(torch.tensor(k), 8).float())
    return model


def test_margin_members_and_agreement_of_an_ensemble_from_one_forward_pass():
    model = voting([2, 2, 5], bias=4.0)
    calls = []
    for member in model.members:
        member.head.register_forward_pre_hook(lambda *_: calls.append(1))
    preds = emozoo.predict(images(3), model, detector="full", batch_size=8)
    assert len(calls) == 3  # one batch, each member's head ran once: no second pass for the members
    hot, cold = np.exp(4.0) / (np.exp(4.0) + 7), 1 / (np.exp(4.0) + 7)
    for pred in preds:
        face = pred.faces[0]
        assert face.label == face.top_label == "surprise" and not face.uncertain
        assert face.members == [{"name": "0:resnet10", "label": "surprise"}, {"name": "1:mini_xception", "label": "surprise"},
                                {"name": "2:resnet10", "label": "disgust"}]
        assert face.agreement == pytest.approx(2 / 3)
        # fused: (2 hot + cold) / 3 for surprise, (hot + 2 cold) / 3 for disgust
        assert face.scores["surprise"] == pytest.approx((2 * hot + cold) / 3, abs=1e-5)
        assert face.margin == pytest.approx((hot - cold) / 3, abs=1e-5)
        record = face.as_dict()
        assert record["agreement"] == 0.6667 and record["members"][2] == {"name": "2:resnet10", "label": "disgust"}
    unanimous = emozoo.predict(images(1), voting([6, 6]), detector="full")[0].faces[0]
    assert unanimous.agreement == 1.0 and [m["label"] for m in unanimous.members] == ["fear", "fear"]


def test_member_labels_come_from_the_same_flipped_views_as_the_fused_output():
    torch.manual_seed(0)
    model = emozoo.create("emoxnet", members=TINY[:2], flip=True).eval()
    with torch.no_grad():
        for member in model.members:
            member.head.fc.weight.mul_(50)  # labels that vary with the image (random heads are nearly uniform)
    faces = images(8)
    x = torch.stack([emozoo.face_transform(model)(f) for f in faces])
    with torch.no_grad():
        want = [((m(x) + m(x.flip(-1))) / 2).argmax(1) for m in model.members]
        one_view = [m(x).argmax(1) for m in model.members]
        fused = model(x).softmax(1)
    assert any((w != o).any() for w, o in zip(want, one_view))  # so the check below can tell the views apart
    preds = emozoo.predict(faces, model, detector="full", batch_size=3)
    for i, pred in enumerate(preds):
        face = pred.faces[0]
        assert [m["label"] for m in face.members] == [LABELS[int(w[i])] for w in want]
        assert face.agreement == pytest.approx(np.mean([int(w[i]) == int(fused[i].argmax()) for w in want]))
        np.testing.assert_allclose(list(face.scores.values()), fused[i].numpy(), atol=1e-5)


def test_a_model_that_is_not_an_ensemble_has_no_members():
    torch.manual_seed(0)
    model = emozoo.create("resnet10", width=0.25)
    face = emozoo.predict(images(1), model, detector="full")[0].faces[0]
    assert face.members is None and face.agreement is None
    assert face.as_dict()["members"] is None and face.as_dict()["agreement"] is None
    top, second = sorted(face.scores.values())[-1:-3:-1]
    assert face.margin == pytest.approx(top - second) and face.margin >= 0


def flat(temperature=1000.0):
    """A model whose stored temperature makes every score about 1/8."""
    torch.manual_seed(0)
    model = emozoo.create("resnet10", width=0.25)
    model.config.calibration = {"temperature": temperature}
    return model


def test_min_confidence_labels_low_confidence_faces_uncertain():
    model = flat()
    faces = images(2)
    sure = emozoo.predict(faces, model, detector="full")
    unsure = emozoo.predict(faces, model, detector="full", min_confidence=0.2)
    for a, b in zip(sure, unsure):
        fa, fb = a.faces[0], b.faces[0]
        assert max(fb.scores.values()) < 0.2 and fb.label == UNCERTAIN and fb.uncertain
        assert fb.scores == fa.scores and fb.top_label == fa.label and fa.label in LABELS and not fa.uncertain
    # the threshold is compared with the top probability: just above it, uncertain; at it, labelled
    face = sure[0].faces[0]
    top = max(face.scores.values())
    assert emozoo.predict(faces, model, detector="full", min_confidence=np.nextafter(top, 1))[0].faces[0].uncertain
    assert emozoo.predict(faces, model, detector="full", min_confidence=top)[0].faces[0].label == face.label
    ensemble = voting([1, 1, 3])  # top probability (2 hot + cold) / 3, about 0.6
    assert [p.faces[0].label for p in emozoo.iter_predict(faces, ensemble, detector="full", min_confidence=0.99)] == \
        [UNCERTAIN] * 2
    assert all(p.faces[0].label == "happiness" for p in emozoo.Predictor(ensemble, "full", min_confidence=0.5)(faces))


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan"), "x"])
def test_min_confidence_outside_0_1_is_refused_on_one_line(bad, cli, tmp_path):
    with pytest.raises(emozoo.ConfigError, match=r"min_confidence \(--min-confidence\) must be in \[0, 1\)"):
        emozoo.predict(images(1), flat(), detector="full", min_confidence=bad)
    if bad == "x":
        return  # not a number: click refuses it as a usage error
    Image.fromarray(images(1)[0]).save(tmp_path / "face.png")
    result = cli("predict", tmp_path / "face.png", "--detector", "full", "--min-confidence", bad)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "--min-confidence" in result.output and "[0, 1)" in result.output


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A flat single model and a voting ensemble saved as folders, and two face images."""
    d = tmp_path_factory.mktemp("unc")
    emozoo.save_pretrained(flat(), d / "flat")
    emozoo.save_pretrained(voting([2, 2, 5]), d / "ensemble")
    paths = []
    for i, img in enumerate(images(2)):
        paths.append(d / f"face{i}.png")
        Image.fromarray(img).save(paths[-1])
    return {"flat": f"local-dir:{d / 'flat'}", "ensemble": f"local-dir:{d / 'ensemble'}", "faces": paths}


def test_cli_json_and_csv_label_uncertain_faces(cli, saved, tmp_path):
    args = ["predict", *saved["faces"], "--detector", "full", "--model", saved["flat"], "--min-confidence", 0.5]
    result = cli(*args, "--json", "--csv", tmp_path / "faces.csv")
    assert result.exit_code == 0, result.output
    faces = [r["faces"][0] for r in json.loads(result.stdout)]
    assert [f["label"] for f in faces] == [UNCERTAIN] * 2 and all(f["uncertain"] for f in faces)
    assert all(abs(sum(f["scores"].values()) - 1) < 1e-3 and f["margin"] < 0.01 for f in faces)
    assert all(f["members"] is None and f["agreement"] is None for f in faces)
    rows = list(csv.DictReader((tmp_path / "faces.csv").open()))
    assert [(r["label"], r["uncertain"]) for r in rows] == [(UNCERTAIN, "1")] * 2
    assert [float(r["margin"]) for r in rows] == pytest.approx([f["margin"] for f in faces], abs=1e-4)
    assert all(r["agreement"] == "" and float(r["neutral"]) > 0 for r in rows)
    text = cli(*args).stdout
    assert text.count("uncertain (") == 2 and "margin 0.00" in text
    plain = json.loads(cli(*args[:-2], "--json").stdout)
    assert all(r["faces"][0]["label"] in LABELS and not r["faces"][0]["uncertain"] for r in plain)


def test_cli_csv_and_text_carry_each_member_and_the_agreement(cli, saved, tmp_path):
    out, empty = tmp_path / "members.csv", tmp_path / "empty.png"
    empty.write_bytes(b"")
    result = cli("predict", *saved["faces"], empty, "--detector", "full", "--model", saved["ensemble"], "--csv", out)
    assert result.exit_code == 1, result.output  # the empty file failed; the faces did not
    assert "surprise 0." in result.stdout and "2/3 members agree" in result.stdout
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[-5:] == ["agreement", "member:0:resnet10", "member:1:mini_xception", "member:2:resnet10",
                                  "error"]
    failed = rows.pop()  # a row without a face keeps every column in place
    assert failed["error"] and failed["member:2:resnet10"] == "" and failed["label"] == "" and None not in failed
    for row in rows:
        assert row["label"] == "surprise" and row["uncertain"] == "0" and row["agreement"] == "0.6667"
        assert (row["member:0:resnet10"], row["member:1:mini_xception"], row["member:2:resnet10"]) == \
            ("surprise", "surprise", "disgust")


def test_an_uncertain_face_is_drawn_as_uncertain():
    scores = dict(zip(LABELS, [0.2, 0.3] + [0.5 / 6] * 6))
    image = np.zeros((96, 96, 3), np.uint8)
    face = FacePrediction((10, 40, 60, 90), 1.0, scores, UNCERTAIN, margin=0.1, uncertain=True)
    drawn = draw_faces(image, [face])
    assert tuple(drawn[65, 10]) == (60, 60, 60)  # the box's left edge, in the colour of "uncertain"
    sure = draw_faces(image, [FacePrediction((10, 40, 60, 90), 1.0, scores, "happiness", margin=0.1)])
    assert tuple(sure[65, 10]) == (0, 170, 0)
    assert face.top_label == "happiness" and face.as_dict()["uncertain"] is True


def load_benchmark():
    spec = importlib.util.spec_from_file_location("coverage_benchmark", REPO / "benchmarks" / "coverage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_coverage_curve_counts_the_faces_at_or_above_each_threshold():
    bench = load_benchmark()
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    curve = bench.coverage_curve(probs, np.array([0, 1, 1, 0]), thresholds=(0.0, 0.56, 0.7, 0.95))
    assert [(r["faces"], r["coverage"], r["accuracy"]) for r in curve] == [
        (4, 1.0, 0.5), (3, 0.75, pytest.approx(2 / 3)), (2, 0.5, 1.0), (0, 0.0, None)]


def test_coverage_benchmark_writes_its_table_and_plot_with_the_stored_temperature(fer_csv, tmp_path):
    bench = load_benchmark()
    torch.manual_seed(0)
    model = emozoo.create("resnet10", width=0.25)
    emozoo.save_pretrained(model, tmp_path / "plain")
    model.config.calibration = {"temperature": 1000.0}
    emozoo.save_pretrained(model, tmp_path / "flat")
    out = tmp_path / "out"
    report = bench.main(["--model", str(tmp_path / "plain"), "--model", str(tmp_path / "flat"), "--data", str(fer_csv),
                         "--split", "PublicTest", "--limit", "40", "--out", str(out)])
    assert json.loads((out / "coverage.json").read_text()) == json.loads(json.dumps(report))
    plain, hot = report["models"]
    assert plain["faces"] == hot["faces"] == 40 and hot["temperature"] == 1000.0 and hot["temperature_stored"]
    assert plain["temperature"] == 1.0 and not plain["temperature_stored"]
    assert [r["threshold"] for r in plain["curve"]] == [round(0.05 * i, 2) for i in range(20)]
    assert plain["curve"][0]["coverage"] == 1.0 and plain["accuracy"] == hot["accuracy"]  # argmax unchanged
    coverage = [r["coverage"] for r in plain["curve"]]
    assert coverage == sorted(coverage, reverse=True)
    # every score is about 1/8 at T = 1000: nothing reaches P = 0.15, so the stored temperature was applied
    assert [r["faces"] for r in hot["curve"][:4]] == [40, 40, 40, 0] and hot["curve"][3]["accuracy"] is None
    table = (out / "coverage.md").read_text()
    assert "| 0.95 |" in table and "temperature 1000" in table and (out / "coverage.png").stat().st_size > 10_000
