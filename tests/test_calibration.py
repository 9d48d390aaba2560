"""Calibrated probabilities (issue 34, point 2): fitting a temperature, storing it, applying it everywhere scores are
returned, the calibration metrics and the `emozoo calibrate` command."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

import emozoo
import emozoo.workflows
from emozoo.calibration import fit_temperature, probabilities
from emozoo.data.labels import FERPLUS_VOTE_COLUMNS
from emozoo.errors import ConfigError
from emozoo.metrics import calibration_metrics, classification_metrics, reliability


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny resnet10 folder (random weights, FER+'s 8 labels), T = 1."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / "r10"
    emozoo.save_pretrained(emozoo.create("resnet10", width=0.25), folder)
    return folder


def with_temperature(folder, out, t):
    """A copy of the model folder ``folder`` at ``out`` whose config.json stores temperature ``t``."""
    model = emozoo.create(folder, pretrained=True)
    model.config.calibration = {"temperature": t}
    emozoo.save_pretrained(model, out)
    return out


@pytest.mark.parametrize("true_t", [0.7, 2.5])
def test_a_fitted_temperature_recovers_the_one_that_generated_the_logits(true_t):
    """Logits ``z * T`` of a model whose right probabilities are ``softmax(z)``: the fit finds ``T`` again, from
    sampled labels (within 3 %) and from the exact distributions (within 0.1 %)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(20000, 8, generator=g) * 2.0
    truth = z.softmax(1)
    labels = torch.multinomial(truth, 1, generator=g).squeeze(1)
    logits = z * true_t
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.03)
    assert fit_temperature(logits, truth) == pytest.approx(true_t, rel=1e-3)
    assert fit_temperature(logits, labels) != pytest.approx(1.0, rel=0.1)  # the fit moved


def test_metrics_against_hand_computed_values():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.05, 0.65, 0.3]])
    targets = torch.tensor([0, 2])
    votes = torch.tensor([[0.8, 0.2, 0.0], [0.0, 0.5, 0.5]])
    m = classification_metrics(probs, targets, ["a", "b", "c"], votes=votes)
    assert m["accuracy"] == 0.5
    assert m["nll"] == pytest.approx(-(math.log(0.7) + math.log(0.3)) / 2)
    assert m["brier"] == pytest.approx((0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2 + 0.05 ** 2 + 0.65 ** 2 + 0.7 ** 2) / 2)
    assert m["vote_ce"] == pytest.approx(-(0.8 * math.log(0.7) + 0.2 * math.log(0.2)
                                           + 0.5 * math.log(0.65) + 0.5 * math.log(0.3)) / 2)
    assert m["ece"] == pytest.approx(0.5 * (1 - 0.7) + 0.5 * 0.65)
    assert "vote_ce" not in classification_metrics(probs, targets, ["a", "b", "c"])
    rows = reliability(probs, targets)
    assert [(r["count"], r["accuracy"]) for r in rows] == [(1, 0.0), (1, 1.0)]
    perfect = calibration_metrics(torch.eye(3), torch.arange(3))
    assert perfect["brier"] == 0 and perfect["ece"] == 0 and perfect["nll"] == pytest.approx(0, abs=1e-9)
    with pytest.raises(emozoo.DataError, match="target='soft'"):
        calibration_metrics(probs, targets, votes=votes[:1])


def test_a_stored_temperature_is_reloaded_and_applied_by_predict_proba_and_predict(tiny, tmp_path):
    calibrated = emozoo.create(with_temperature(tiny, tmp_path / "cal", 2.0), pretrained=True)
    raw = emozoo.create(tiny, pretrained=True)
    assert calibrated.config.calibration == {"temperature": 2.0}
    assert json.loads((tmp_path / "cal" / "config.json").read_text())["calibration"] == {"temperature": 2.0}
    x = torch.randn(4, *calibrated.config.input.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = raw.eval()(x)
    p = emozoo.predict_proba(calibrated, x)
    assert torch.allclose(p, (logits / 2.0).softmax(1), atol=1e-6)
    assert not torch.allclose(p, logits.softmax(1), atol=1e-3)
    assert torch.equal(p.argmax(1), logits.argmax(1))
    # emozoo.predict on an image: the calibrated scores are the raw ones taken to the power 1/T, renormalised
    image = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    face_raw = emozoo.predict(image, raw, detector="full")[0].faces[0]
    face_cal = emozoo.predict(image, calibrated, detector="full")[0].faces[0]
    names = raw.config.label_names
    s_raw = torch.tensor([face_raw.scores[n] for n in names], dtype=torch.float64)
    s_cal = torch.tensor([face_cal.scores[n] for n in names], dtype=torch.float64)
    assert torch.allclose(s_cal, (s_raw.log() / 2.0).softmax(0), atol=1e-5)
    assert face_cal.label == face_raw.label


@pytest.mark.parametrize("value", [{"temperature": -1}, {"temperature": 0}, {"temperature": "1.5"},
                                   {"temperature": True}, [1.5], 1.5])
def test_bad_calibration_in_config_json_is_a_config_error(tiny, tmp_path, value):
    folder = with_temperature(tiny, tmp_path / "bad", 1.5)
    config = json.loads((folder / "config.json").read_text())
    config["calibration"] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="'calibration' must be an object with a positive 'temperature'"):
        emozoo.create(folder, pretrained=True)


def test_calibrate_refuses_test_splits_and_the_whole_training_split(cli, tiny, fer_csv, tmp_path):
    result = cli("calibrate", tiny, "--data", fer_csv, "--split", "PublicTest", "--out", tmp_path / "o")
    assert result.exit_code != 0 and "refuses PublicTest" in result.output
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="--holdout"):
        emozoo.workflows.calibrate_model(str(tiny), str(fer_csv), tmp_path / "o", split="Training", holdout=None)


def test_calibrate_stores_the_temperature_and_eval_reports_before_and_after(cli, tiny, fer_csv, tmp_path):
    out = tmp_path / "cal"
    result = cli("calibrate", tiny, "--data", fer_csv, "--holdout", 0.2, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    stored = json.loads((out / "config.json").read_text())
    cal = stored["calibration"]
    assert cal["temperature"] == report["temperature"] > 0 and cal["n"] == 64 and cal["split"] == "Training"
    assert cal["holdout"] == 0.2 and cal["nll_after"] <= cal["nll_before"] + 1e-9 and "emozoo calibrate" in cal["command"]
    assert report["before"]["nll"] == cal["nll_before"] and report["after"]["ece"] == cal["ece_after"]
    assert report["after"]["brier"] != report["before"]["brier"] and "vote_ce" not in report["after"]  # FER2013: no votes
    # the weights are the source's, byte for byte
    assert report["weights_unchanged"] and stored["weights_sha256"] == json.loads((tiny / "config.json").read_text())[
        "weights_sha256"]
    assert (out / "model.safetensors").read_bytes() == (tiny / "model.safetensors").read_bytes()
    # another model already in --out is refused; the same folder in place is not
    again = cli("calibrate", tiny, "--data", fer_csv, "--holdout", 0.2, "--out", out)
    assert again.exit_code != 0 and "--force" in again.output
    in_place = cli("calibrate", out, "--data", fer_csv, "--holdout", 0.2, "--out", out)
    assert in_place.exit_code == 0 and "Brier" in in_place.output and f"saved: {out}" in in_place.output

    plot = tmp_path / "cm.png"
    after = json.loads(cli("eval", out, "--data", fer_csv, "--split", "PublicTest", "--json", "--plot", plot).output)
    before = json.loads(cli("eval", tiny, "--data", fer_csv, "--split", "PublicTest", "--json").output)
    assert after["temperature"] == pytest.approx(cal["temperature"]) and before["temperature"] == 1.0
    assert after["accuracy"] == before["accuracy"] and after["confusion"] == before["confusion"]
    for key in ("ece", "nll", "brier"):
        assert after["before"][key] == pytest.approx(before[key]) == pytest.approx(before["before"][key])
    assert after["nll"] != pytest.approx(after["before"]["nll"])
    assert plot.stat().st_size > 0 and (tmp_path / "cm_reliability.png").stat().st_size > 0
    assert after["reliability_plot"] == str(tmp_path / "cm_reliability.png")
    text = cli("eval", out, "--data", fer_csv, "--split", "PublicTest").output
    assert "T = 1" in text and f"T = {cal['temperature']:.3g}" in text and "Brier" in text and "NLL" in text


def test_eval_on_ferplus_reports_the_cross_entropy_against_the_votes(tiny, tmp_path):
    """FER+ csv with votes: the vote distributions line up with the faces of the holdout, and eval reports vote_ce."""
    rng = np.random.default_rng(0)
    n = 40
    with open(tmp_path / "fer2013.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        w.writerows([(0, " ".join(map(str, rng.integers(0, 255, 48 * 48))), "Training") for _ in range(n)])
    votes = rng.integers(0, 4, (n, len(FERPLUS_VOTE_COLUMNS)))
    votes[:, 8:] = 0
    votes[np.arange(n), rng.integers(0, 8, n)] += 5  # a clear majority on one of the eight emotions
    with open(tmp_path / "fer2013new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Usage", "Image name", *FERPLUS_VOTE_COLUMNS])
        w.writerows([("Training", f"fer{i:07d}.png", *v) for i, v in enumerate(votes)])
    spec = f"ferplus-csv:{tmp_path / 'fer2013.csv'},{tmp_path / 'fer2013new.csv'}"
    from emozoo.workflows.splits import open_holdout, open_votes

    held = open_votes(spec, "Training", 0.25)
    targets = torch.tensor([open_holdout(spec, "Training", 0.25)[i][1] for i in range(len(held))])
    assert len(held) == 10 and torch.equal(held.argmax(1), targets)
    assert torch.allclose(held.sum(1), torch.ones(10))
    model = emozoo.create(with_temperature(tiny, tmp_path / "cal", 1.7), pretrained=True)
    result = emozoo.workflows.evaluate_model(model, spec, "Training", holdout=0.25, progress=False)
    assert result["n"] == 10 and "vote_ce" in result and "vote_ce" in result["before"]
    assert result["vote_ce"] != pytest.approx(result["before"]["vote_ce"])
    assert open_votes(str(tmp_path / "fer2013.csv"), "Training") is None  # FER2013 alone has no votes
    report = emozoo.workflows.calibrate_model(str(tiny), spec, tmp_path / "fit", holdout=0.25, progress=False)
    assert report["n"] == 10 and report["after"]["vote_ce"] != pytest.approx(report["before"]["vote_ce"])


def test_probabilities_default_to_the_raw_softmax():
    logits = torch.randn(3, 8)
    config = emozoo.ModelConfig(architecture="resnet10")
    assert torch.allclose(probabilities(config, logits), logits.softmax(1))


def test_calibrate_saves_a_module_given_without_its_folder(fer_csv, tmp_path):
    torch.manual_seed(1)
    module = emozoo.create("resnet10", width=0.25)
    assert module.weights_dir is None
    report = emozoo.workflows.calibrate_model(module, str(fer_csv), tmp_path / "m", holdout=0.2, progress=False)
    loaded = emozoo.create(tmp_path / "m", pretrained=True)
    assert loaded.config.calibration["temperature"] == report["temperature"] and not report["weights_unchanged"]
    assert loaded.weights_dir == tmp_path / "m"
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), loaded.state_dict().values()))


def test_info_says_what_the_scores_are(cli, tiny, tmp_path):
    assert "raw softmax (no temperature fitted" in cli("info", tiny).output
    assert "softmax(logits / T), T = 2.5" in cli("info", with_temperature(tiny, tmp_path / "cal", 2.5)).output


def test_training_from_a_calibrated_model_drops_its_temperature(cli, tiny, fer_csv, tmp_path):
    """New weights make the temperature fitted to the old ones stale: a trained model is saved without it."""
    labels = emozoo.data.open_dataset(str(fer_csv), "Training").label_names  # the same classes: no new head
    model = emozoo.create("resnet10", width=0.25, label_names=labels)
    model.config.calibration = {"temperature": 2.5}
    start = emozoo.save_pretrained(model, tmp_path / "cal")
    out = tmp_path / "tuned"
    result = cli("train", "--init", start, "--data", fer_csv, "--epochs", 1, "--limit", 32, "--val-split", "none",
                 "--batch-size", 16, "--num-workers", 0, "--out", out)
    assert result.exit_code == 0, result.output
    assert emozoo.create(start, pretrained=True).config.calibration["temperature"] == 2.5
    assert json.loads((out / "config.json").read_text()).get("calibration", {}) == {}
