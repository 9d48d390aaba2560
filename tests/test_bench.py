"""``emozoo bench`` and ``emozoo export``: the commands run and their output is well-formed.

No timing is asserted anywhere: the numbers live in ``benchmarks/results/``.
"""
import csv
import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from torch import nn

import emozoo
from emozoo import bench as B

FAST = ("--min-runs", "3", "--max-time", "0.05", "--no-roofline", "--threads", "1")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two small saved models with a validation accuracy in their config: a narrow ResNet-10 and a mini-Xception."""
    out = {}
    for key, arch, args, accuracy in (("r10", "resnet10", {"width": 0.25}, 0.70),
                                      ("mx", "mini_xception", {"width": 0.5}, 0.60)):
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp(key)
        emozoo.save_pretrained(emozoo.create(arch, **args), folder, metrics={"PublicTest": {"accuracy": accuracy}})
        out[key] = str(folder)
    return out


def needs_onnx():
    for module in ("onnx", "onnxruntime", "onnxscript"):
        pytest.importorskip(module)


def test_bench_table_names_the_best_backend(cli, folders):
    result = cli("bench", folders["r10"], "--backend", "eager,channels_last", "--batch-size", "1,2", *FAST)
    assert result.exit_code == 0, result.output
    for text in ("median ms", "p99 ms", "img/s", "MACs M", "channels_last", f"best backend for {folders['r10']}:"):
        assert text in result.output
    assert result.output.count(" *  ") == 2  # one winner per batch size


def test_bench_json_is_well_formed(cli, folders):
    result = cli("bench", folders["r10"], "--backend", "eager,channels_last", "--batch-size", "1,2", "--json",
                 "--min-runs", "3", "--max-time", "0.05", "--threads", "1")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {"cpu", "cores", "threads", "torch"} <= set(doc["machine"]) and doc["peak_gflops"] > 0
    rows = doc["results"]
    assert [(r["backend"], r["batch_size"]) for r in rows] == [("eager", 1), ("eager", 2), ("channels_last", 1),
                                                               ("channels_last", 2)]
    for r in rows:
        assert r["error"] is None and r["runs"] >= 3 and r["weights"] == "pretrained"
        assert 0 < r["median_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput"] == pytest.approx(r["batch_size"] * 1000 / r["median_ms"])
        assert r["params"] > 0 and r["macs"] > 0 and r["input_shape"] == [1, 48, 48]
        assert r["roofline_ms"] > 0 and r["roofline_x"] == pytest.approx(r["median_ms"] / r["roofline_ms"])
        assert r["accuracy"] == 0.70 and r["accuracy_split"] == "PublicTest"
    assert sum(r["best"] for r in rows) == 2
    assert set(doc["best_backend"][folders["r10"]].values()) <= {"eager", "channels_last"}


def test_bench_csv_and_pattern_names(cli, tmp_path):
    out = tmp_path / "rows.csv"
    result = cli("bench", "resnet1?", "--input-size", "1x32x32", "--csv", out, *FAST)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["model"] for r in rows] == ["resnet10", "resnet18"]
    assert all(r["weights"] == "random" and r["input_shape"] == "1x32x32" and float(r["median_ms"]) > 0 for r in rows)
    assert list(rows[0]) == list(B.BenchResult.__dataclass_fields__)


def test_bench_reports_failures_in_their_rows_and_goes_on(cli, folders, tmp_path, user_registrations):
    needs_onnx()

    class Unexportable(nn.Module):  # eager runs; exporting it fails
        def __init__(self, num_classes=8, in_chans=1):
            super().__init__()
            self.fc = nn.Linear(in_chans, num_classes)

        def forward(self, x):
            if torch.compiler.is_exporting():
                raise RuntimeError("this model cannot be exported")
            return self.fc(x.mean((2, 3)))

    emozoo.register_backbone("unexportable", Unexportable)
    folder = tmp_path / "unexportable"
    emozoo.save_pretrained(emozoo.create("unexportable"), folder)
    result = cli("bench", folder, "no_such_model", "--backend", "eager,onnx", "--json", *FAST)
    assert result.exit_code == 1, result.output  # a model that does not load fails the run, after every row
    assert result.stderr.strip().splitlines() == [
        "Error: 1 model(s) could not be loaded, so nothing was measured for them: no_such_model "
        f"(no_such_model: {json.loads(result.stdout)['results'][-1]['error']})"]
    rows = {(r["model"], r["backend"]): r for r in json.loads(result.stdout)["results"]}
    assert rows[(str(folder), "eager")]["error"] is None and rows[(str(folder), "eager")]["median_ms"] > 0
    assert "cannot be exported" in rows[(str(folder), "onnx")]["error"]
    assert rows[(str(folder), "onnx")]["median_ms"] is None
    assert "Unknown model 'no_such_model'" in rows[("no_such_model", "eager")]["error"]
    text = cli("bench", "no_such_model", *FAST)
    assert text.exit_code == 1 and "error: Unknown model" in text.stdout
    assert text.stderr.splitlines()[-1].startswith(
        "Error: 1 model(s) could not be loaded, so nothing was measured for them: no_such_model (")


def test_bench_plot_writes_a_pareto_png(cli, folders, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "pareto.png"
    result = cli("bench", folders["r10"], folders["mx"], "--plot", png, "--json", *FAST)
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = json.loads(result.stdout)["pareto"]
    assert sorted(p["model"] for p in points) == sorted(folders.values())
    assert any(p["pareto"] for p in points)
    result = cli("bench", "resnet10", "--plot", tmp_path / "none.png", *FAST)
    assert result.exit_code == 1 and "no benchmarked model has a validation accuracy" in result.output


def test_bench_flip_switch_labels_the_rows_and_doubles_the_macs(cli):
    rows = {}
    for flag in ("--flip", "--no-flip"):
        result = cli("bench", "emoxnetlite.ferplus", flag, "--backend", "eager", "--json", *FAST)
        assert result.exit_code == 0, result.output
        (row,) = json.loads(result.stdout)["results"]
        rows[flag] = row
    assert rows["--flip"]["model"] == "emoxnetlite.ferplus (flip)" and rows["--no-flip"]["model"].endswith("(no flip)")
    assert rows["--flip"]["macs"] == 2 * rows["--no-flip"]["macs"]
    # the published accuracy was measured with flip (as it ships): the unflipped row does not claim it
    assert rows["--no-flip"]["accuracy"] is None and rows["--flip"]["accuracy"] > 0.8
    result = cli("bench", "resnet10", "--flip", "--backend", "eager", "--json", *FAST)
    assert "flip= is an option of emoxnet and emoxnetlite" in json.loads(result.stdout)["results"][0]["error"]


def test_bench_model_args_time_a_candidate_shape_before_training_it(cli):
    result = cli("bench", "resnet10", "emoxnetlite.ferplus", "--model-arg", "width=0.75", "--backend", "eager",
                 "--json", *FAST)
    # every row is shown; the run fails because one model could not be built as asked
    assert result.exit_code == 1 and "could not be loaded" in result.stderr and "emoxnetlite.ferplus" in result.stderr
    wide, pretrained = json.loads(result.stdout)["results"]
    assert wide["model"] == "resnet10 width=0.75" and wide["weights"] == "random"
    result = cli("bench", "resnet10", "--model-arg", "width=0.5", "--backend", "eager", "--json", *FAST)
    narrow = json.loads(result.stdout)["results"][0]
    assert wide["params"] > 2 * narrow["params"] and wide["macs"] > 2 * narrow["macs"]
    # trained weights fix their shape: that row says so, the other one ran
    assert "model args apply to an architecture name with random weights" in pretrained["error"]
    student = '{"backbone": "resnet10", "args": {"width": 0.75}}'
    result = cli("bench", "emoxnetlite", "--model-arg", f"student={student}", "--backend", "eager", "--json", *FAST)
    assert json.loads(result.stdout)["results"][0]["macs"] == wide["macs"]


def test_bench_onnx_and_int8_backends_run(cli, folders, fer_csv):
    needs_onnx()
    result = cli("bench", folders["mx"], "--backend", "onnx,int8", "--data", fer_csv, "--json", *FAST)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["results"]
    assert [r["backend"] for r in rows] == ["onnx", "int8"]
    assert all(r["error"] is None and r["median_ms"] > 0 for r in rows), rows


@pytest.mark.parametrize("int8", [False, True])
def test_export_onnx_round_trip_matches_pytorch(cli, folders, fer_csv, tmp_path, int8):
    needs_onnx()
    import onnxruntime as ort

    out = tmp_path / "model.onnx"
    result = cli("export", folders["r10"], "--format", "onnx", "--out", out, "--data", fer_csv, "--json",
                 *(["--int8"] if int8 else []))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_random"] > 0 and report["n_real"] > 0 and report["int8"] == int8
    model = emozoo.create(f"local-dir:{folders['r10']}", pretrained=True).eval()
    x = torch.randn(5, 1, 48, 48)  # another batch size than the export's example: the batch axis is dynamic
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        want = model(x)
    if int8:
        assert "training faces" in report["calibration"] and report["top1_agreement"] >= 0.9
        assert (got.softmax(1) - want.softmax(1)).abs().max() < 0.25
        import onnx

        graph = onnx.load(str(out)).graph
        made_by = {o: n.op_type for n in graph.node for o in n.output}
        convs = [n for n in graph.node if n.op_type == "Conv"]
        # the stem convolution keeps float32 weights and input; every later one reads dequantized int8 weights
        assert made_by.get(convs[0].input[1]) is None and made_by.get(convs[0].input[0]) != "DequantizeLinear"
        assert all(made_by.get(c.input[1]) == "DequantizeLinear" for c in convs[1:])
    else:
        assert report["max_abs_prob"] <= 1e-4 and "1e-04" in report["tolerance"]
        assert (got.softmax(1) - want.softmax(1)).abs().max() <= 1e-4
    text = cli("export", folders["r10"], "--out", tmp_path / "again.onnx", "--data", fer_csv)
    assert text.exit_code == 0 and "max |prob diff|" in text.output and "required:" in text.output


@pytest.mark.parametrize("fusion", ["mean_prob", "mean_logit"])
def test_an_ensemble_exports_to_int8_with_either_mean(fusion, tmp_path):
    """mean_prob exports to ReduceLogSumExp, which onnxruntime's symbolic shape inference has no rule for: the
    quantizer's pre-processing falls back to ONNX's shape inference instead of failing (emoxnet.ferplus fuses so)."""
    needs_onnx()
    from emozoo.export import export_onnx

    torch.manual_seed(0)
    model = emozoo.create("emoxnet", members=[{"backbone": "resnet10", "args": {"width": 0.25}}] * 2,
                          fusion=fusion).eval()
    report = export_onnx(model, tmp_path / "e.onnx", int8=True, data_spec=None)
    assert report.int8 and report.top1_agreement >= 0.9


def test_export_errors_are_one_line(cli, tmp_path):
    result = cli("export", "no_such_model", "--out", tmp_path / "x.onnx")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1


def test_eval_int8_reports_the_accuracy_change(cli, folders, fer_csv):
    needs_onnx()
    result = cli("eval", folders["r10"], "--data", fer_csv, "--backend", "int8", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["backend"] == "int8" and 0 <= doc["accuracy"] <= 1
    assert doc["accuracy_change"] == pytest.approx(doc["accuracy"] - doc["eager_accuracy"])
    text = cli("eval", folders["r10"], "--data", fer_csv, "--backend", "onnx")
    assert text.exit_code == 0 and "accuracy change vs PyTorch float32" in text.output


def test_timing_statistics_and_pareto_front():
    assert B.median_ci([1.0] * 50) == 0 and B.median_ci([1.0, 2.0]) == float("inf")
    calls = []
    timing = B.time_batches(lambda: calls.append(1), min_runs=7, max_time=0.0, warmup=2)
    assert len(timing.times) == 7 and len(calls) == 9
    rows = [B.BenchResult("a", "eager", 1, median_ms=1.0, accuracy=0.7, accuracy_split="PublicTest"),
            B.BenchResult("b", "eager", 1, median_ms=2.0, accuracy=0.8, accuracy_split="PublicTest"),
            B.BenchResult("c", "eager", 1, median_ms=3.0, accuracy=0.75, accuracy_split="PublicTest"),
            B.BenchResult("c", "onnx", 1, median_ms=0.5, accuracy=0.75, accuracy_split="PublicTest"),
            B.BenchResult("d", "eager", 1, error="boom")]
    B.mark_best(rows)
    assert [r.best for r in rows] == [True, True, False, True, False]
    points = {p["model"]: p for p in B.pareto_points(rows)}
    assert set(points) == {"a", "b", "c"} and points["c"]["backend"] == "onnx"
    assert {m: p["pareto"] for m, p in points.items()} == {"a": False, "b": True, "c": True}
    assert B.resolve_names(["resnet1*", "emoxnetlite.ferplus", "zzz"]) == ["resnet10", "resnet18",
                                                                          "emoxnetlite.ferplus", "zzz"]
    assert B.measure_peak_flops(1, sizes=(64, 128), min_time=0.01) > 0


@pytest.mark.slow
def test_bench_compile_backend(cli, folders):
    result = cli("bench", folders["r10"], "--backend", "compile", "--json", *FAST)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["results"][0]
    assert row["error"] is None and row["median_ms"] > 0, row["error"]


def test_train_speed_script_times_both_augmentation_paths(fer_csv, tmp_path):
    out = tmp_path / "speed.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_speed.py"), "resnet10", "--model-arg",
                          "width=0.25", "--data", str(fer_csv), "--images", "64", "--batch-size", "32",
                          "--num-workers", "0", "--threads", "1", "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert [r["path"] for r in report["rows"]] == ["loader (0 workers)", "batch_augment"]
    assert all(r["images_per_s"] > 0 and r["epoch_s"] > 0 for r in report["rows"])
    ratio = report["rows"][1]["images_per_s"] / report["rows"][0]["images_per_s"]
    assert report["speedup"] == round(ratio, 2) and "x the images/s of the loader path" in run.stdout


def test_export_calibration_data_is_explicit_or_a_documented_fallback(cli, folders, fer_csv, tmp_path, monkeypatch):
    needs_onnx()
    result = cli("export", folders["r10"], "--out", tmp_path / "a.onnx", "--calibration-data", tmp_path / "none.csv")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "calibration data" in result.output and "no training faces can be read" in result.output
    monkeypatch.setenv("EMOZOO_CALIBRATION_DATA", str(fer_csv))
    report = json.loads(cli("export", folders["r10"], "--out", tmp_path / "b.onnx", "--json").stdout)
    assert report["n_real"] > 0
    monkeypatch.delenv("EMOZOO_CALIBRATION_DATA")
    monkeypatch.setattr("emozoo.data.specs.DEFAULT_FERPLUS_NPZ", tmp_path / "absent.npz")
    report = json.loads(cli("export", folders["r10"], "--out", tmp_path / "c.onnx", "--json").stdout)
    assert report["n_real"] == 0  # no data anywhere: random inputs only, and the report counts none
