"""``emozoo bench`` and ``emozoo export``: the commands run and their output is well-formed.

No timing is asserted anywhere: the numbers live in ``benchmarks/results/``.
"""
import csv
import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import emozoo
import emozoo.workflows
from emozoo import bench as B
from emozoo.cli import build_cli
from emozoo.data import FER2013_LABELS

from conftest import REPO

FAST = ("--min-runs", "3", "--max-time", "0.05", "--no-roofline", "--threads", "1")


@pytest.fixture(scope="module")
def cli():
    root = build_cli()

    def run(*args):
        return CliRunner().invoke(root, [str(a) for a in args])

    return run


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
    assert result.exit_code == 0, result.output
    rows = {(r["model"], r["backend"]): r for r in json.loads(result.stdout)["results"]}
    assert rows[(str(folder), "eager")]["error"] is None and rows[(str(folder), "eager")]["median_ms"] > 0
    assert "cannot be exported" in rows[(str(folder), "onnx")]["error"]
    assert rows[(str(folder), "onnx")]["median_ms"] is None
    assert "Unknown model 'no_such_model'" in rows[("no_such_model", "eager")]["error"]
    text = cli("bench", "no_such_model", *FAST)
    assert text.exit_code == 0 and "error: Unknown model" in text.output


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
    assert result.exit_code == 0, result.output
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


def test_tta_views_script_scores_each_view_like_eval(fer_csv, tmp_path):
    torch.manual_seed(0)
    lite = emozoo.save_pretrained(emozoo.create("emoxnetlite", student=("resnet10", {"width": 0.25}),
                                                label_names=FER2013_LABELS), tmp_path / "lite")
    out = tmp_path / "tta.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tta_views.py"), str(lite), "--data", str(fer_csv),
                          "--threads", "1", "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    plain = emozoo.workflows.evaluate_model(str(lite), str(fer_csv), "PublicTest", progress=False)
    assert result["n"] == plain["n"] == 64
    assert result["views"]["identity"]["alone"] == round(plain["accuracy"], 4)
    assert result["sets"]["all 4px, zooms, rotations"]["views"] == 18
    assert result["sets"]["identity + mirror"]["views"] == 2 and result["sets"]["+ 1px shifts"]["views"] == 10
    assert "identity + mirror" in run.stdout
    # --views computes only those; sets that need others are left out, an unknown name is refused
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tta_views.py"), str(lite), "--data", str(fer_csv),
                          "--threads", "1", "--views", "identity,right 1px,left 1px,down 1px,up 1px",
                          "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    subset = json.loads(out.read_text())
    assert sorted(subset["sets"]) == ["+ 1px shifts", "identity + mirror"]
    assert subset["sets"]["+ 1px shifts"] == result["sets"]["+ 1px shifts"]
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tta_views.py"), str(lite), "--data", str(fer_csv),
                          "--views", "sideways"], capture_output=True, text=True)
    assert run.returncode == 2 and "unknown view(s) ['sideways']" in run.stderr


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


def _two_members(tmp_path, **provenance):
    """A width-0.25 ResNet-10 and a width-0.5 mini-Xception saved as member folders (random weights)."""
    torch.manual_seed(0)
    return [emozoo.save_pretrained(emozoo.create(name, label_names=FER2013_LABELS, **args), tmp_path / name,
                                   **provenance)
            for name, args in (("resnet10", {"width": 0.25}), ("mini_xception", {"width": 0.5}))]


def _member_script(script, members, fer_csv, *args):
    """Run ``benchmarks/<script> --members ...`` on the small FER2013 csv, one thread."""
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--members", *map(str, members),
                           "--data", str(fer_csv), "--threads", "1", *args], capture_output=True, text=True)


def test_fusion_search_over_member_folders_scores_rows_like_eval(fer_csv, tmp_path):
    dirs = _two_members(tmp_path)

    def search(*args, members=dirs):
        return _member_script("fusion_search.py", members, fer_csv, *args)

    out = tmp_path / "rows.jsonl"
    run = search("--fusions", "mean_logit", "--flip", "on", "--out", str(out))
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(len(r["members"]), r["fusion"], r["flip"], r["n"]) for r in rows] == [
        (1, "mean_logit", True, 64), (1, "mean_logit", True, 64), (2, "mean_logit", True, 64)]
    members = [emozoo.create(f"local-dir:{d}", pretrained=True) for d in dirs]
    pair = emozoo.workflows.assemble_ensemble(members, "mean_logit", flip=True)
    assert rows[2]["accuracy"] == round(emozoo.workflows.evaluate_model(pair, str(fer_csv), "PublicTest",
                                                                         progress=False)["accuracy"], 4)
    run = search("--fusions", "learned_weights")
    assert run.returncode != 0 and "no training holdout" in run.stderr
    run = search("--fusions", "mean_logt")
    assert run.returncode == 2 and "unknown mean_logt; choose from" in run.stderr
    other = emozoo.save_pretrained(emozoo.create("resnet10", width=0.25, label_names=FER2013_LABELS[::-1]),
                                   tmp_path / "reversed")
    run = search(members=[dirs[0], other])
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert f"{other}: its labels or input spec differ from {dirs[0]}'s" in run.stderr


def test_fusion_search_holdout_scores_the_faces_every_member_kept_aside(fer_csv, tmp_path):
    """--holdout: the second split a row picked on PublicTest can be checked on (majority labels, no fitting)."""
    from torch.utils.data import Subset

    from emozoo.data.transforms import eval_transform
    from emozoo.train import holdout_split, preload

    dirs = _two_members(tmp_path, recipe={"holdout": 0.25})

    def search(*args, members=dirs):
        return _member_script("fusion_search.py", members, fer_csv, *args)

    out = tmp_path / "rows.jsonl"
    run = search("--holdout", "--fusions", "mean_prob", "--flip", "off", "--out", str(out))
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(len(r["members"]), r["n"], r["split"]) for r in rows] == [(1, 80, "Training holdout (0.25)")] * 2 + [
        (2, 80, "Training holdout (0.25)")]
    members = [emozoo.create(f"local-dir:{d}", pretrained=True).eval() for d in dirs]
    data = emozoo.workflows.open_split(str(fer_csv), "Training", eval_transform(members[0].config.input),
                                       list(FER2013_LABELS))
    x, y = preload(Subset(data, holdout_split(len(data), 0.25)[1]))
    with torch.no_grad():
        probs = sum(m(x).softmax(-1) for m in members) / 2
    assert rows[2]["accuracy"] == round((probs.argmax(1) == y).float().mean().item(), 4)
    run = search("--holdout", "--fusions", "learned_weights")
    assert run.returncode == 2 and "search --fusions mean_prob,mean_logit" in run.stderr
    bare = [emozoo.save_pretrained(emozoo.create("resnet10", width=0.25, label_names=FER2013_LABELS), tmp_path / "b")]
    run = search("--holdout", "--fusions", "mean_prob", members=bare)
    assert run.returncode == 1 and "--holdout has nothing to score on" in run.stderr


def test_fitted_fusions_script_fits_on_the_holdout_and_scores_the_plain_means_like_eval(fer_csv, tmp_path):
    dirs = _two_members(tmp_path, recipe={"holdout": 0.25})

    def run_script(*members, out=None):
        return _member_script("fitted_fusions.py", members, fer_csv, *(["--out", str(out)] if out else []))

    out = tmp_path / "rows.jsonl"
    run = run_script(*dirs, out=out)
    assert run.returncode == 0, run.stderr
    rows = {r["fusion"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(rows) == ["class_bias", "mean_logit", "mean_prob", "scaled_logit", "temperature_prob"]
    assert all(r["n"] == 64 and r["accuracy"] == round(r["correct"] / 64, 4) for r in rows.values())
    members = [emozoo.create(f"local-dir:{d}", pretrained=True) for d in dirs]
    for fusion in ("mean_logit", "mean_prob"):
        pair = emozoo.workflows.assemble_ensemble(members, fusion, flip=True)
        expected = emozoo.workflows.evaluate_model(pair, str(fer_csv), "PublicTest", progress=False)["accuracy"]
        assert rows[fusion]["accuracy"] == round(expected, 4)
    bare = emozoo.save_pretrained(emozoo.create("resnet10", width=0.25, label_names=FER2013_LABELS), tmp_path / "b")
    run = run_script(dirs[0], bare)
    assert run.returncode == 1 and "share no training holdout" in run.stderr and "Traceback" not in run.stderr


def test_weight_soup_script_scores_the_mean_of_the_weights(fer_csv, tmp_path):
    folders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = emozoo.create("resnet10", width=0.25, label_names=FER2013_LABELS)
        folders.append(emozoo.save_pretrained(model, tmp_path / f"m{seed}"))
    out = tmp_path / "soup.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "weight_soup.py"), *map(str, folders), "--data",
                          str(fer_csv), "--recount", "32", "--threads", "1", "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    a, b = (emozoo.create(f"local-dir:{f}", pretrained=True) for f in folders)
    a.load_state_dict({k: (v + b.state_dict()[k]) / 2 if v.is_floating_point() else v for k, v in a.state_dict().items()})
    expected = emozoo.workflows.evaluate_model(a, str(fer_csv), "PublicTest", progress=False)["accuracy"]
    assert result["soup"] == round(expected, 4) and set(result["models"]) == set(map(str, folders))
    other = emozoo.save_pretrained(emozoo.create("resnet10", width=0.5, label_names=FER2013_LABELS), tmp_path / "w")
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "weight_soup.py"), str(folders[0]), str(other),
                          "--data", str(fer_csv)], capture_output=True, text=True)
    assert run.returncode == 1 and "not the same architecture" in run.stderr


def test_bn_recount_script_measures_the_statistics_afresh(fer_csv, tmp_path):
    torch.manual_seed(0)
    folder = emozoo.save_pretrained(emozoo.create("resnet10", width=0.25, label_names=FER2013_LABELS), tmp_path / "m")
    out, saved = tmp_path / "bn.json", tmp_path / "bn.safetensors"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bn_recount.py"), str(folder), "--data", str(fer_csv),
                          "--faces", "200", "--threads", "1", "--save", str(saved), "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    model = emozoo.create(f"local-dir:{folder}", pretrained=True)
    before = emozoo.workflows.evaluate_model(model, str(fer_csv), "PublicTest", progress=False)
    assert result["before"]["accuracy"] == round(before["accuracy"], 4) and result["faces"] == 200
    # the first BatchNorm's recounted mean is the mean of its input over the 200 faces (one batch)
    from safetensors.torch import load_file
    from torch.utils.data import Subset
    from emozoo.data import eval_transform
    from emozoo.workflows import open_split
    train = open_split(str(fer_csv), "Training", eval_transform(model.config.input), model.config.label_names)
    faces = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:200].tolist()
    x = torch.stack([train[i][0] for i in faces])
    name, bn = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    seen = []
    handle = bn.register_forward_hook(lambda m, inp, o: seen.append(inp[0]))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    recounted = load_file(str(saved))
    assert torch.allclose(recounted[f"{name}.running_mean"], seen[0].mean(dim=(0, 2, 3)), atol=1e-5)
    assert not torch.allclose(recounted[f"{name}.running_mean"], bn.running_mean)
    model.load_state_dict(recounted)
    after = emozoo.workflows.evaluate_model(model, str(fer_csv), "PublicTest", progress=False)
    assert result["after"]["accuracy"] == round(after["accuracy"], 4)


def test_bn_recount_script_recounts_only_the_chosen_members(fer_csv, tmp_path):
    torch.manual_seed(0)
    model = emozoo.create("emoxnet", members=[("resnet10", {"width": 0.25}), ("mini_xception", {"width": 0.5})],
                          flip=True, label_names=FER2013_LABELS)
    folder = emozoo.save_pretrained(model, tmp_path / "ens")
    saved = tmp_path / "bn.safetensors"

    def recount(*args):
        return subprocess.run([sys.executable, str(REPO / "benchmarks" / "bn_recount.py"), str(folder), "--data",
                               str(fer_csv), "--faces", "64", "--threads", "1", *args], capture_output=True, text=True)

    run = recount("--members", "1", "--save", str(saved))
    assert run.returncode == 0, run.stderr
    from safetensors.torch import load_file
    recounted, trained = load_file(str(saved)), model.state_dict()
    stats = [k for k in trained if k.endswith("running_mean")]
    assert all(torch.equal(recounted[k], trained[k]) for k in stats if k.startswith("members.0."))
    assert not any(torch.equal(recounted[k], trained[k]) for k in stats if k.startswith("members.1."))
    run = recount("--members", "2")
    assert run.returncode == 1 and "has members 0-1, not 2" in run.stderr and "Traceback" not in run.stderr
    run = recount("--members", "0,x")
    assert run.returncode == 2 and "member numbers, e.g. 2 or 0,3, not '0,x'" in run.stderr and "Traceback" not in run.stderr
    run = recount("--faces", "-1")
    assert run.returncode == 2 and "--faces must be 0 (all) or a positive number" in run.stderr


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
