"""Latency, throughput and cost of models, measured the way users run them (``emozoo bench``).

For each model, backend and batch size, :func:`bench_model` reports the median, 90th and 99th
percentile time of one batch, throughput, parameters, MACs at the model's input size, peak memory and
the distance to a roofline bound. Definitions:

- **Timing.** Warm-up runs (at least 3, and at least a tenth of ``max_time``) are excluded. Timed runs
  go on until the 95 % confidence interval of the median is within ``target`` (2 %) of it and there
  are at least 100 runs (for a meaningful p99), or until ``max_time`` seconds are spent, never fewer
  than ``min_runs``. ``ci_pct`` is the half-width reached, ``stable`` whether it met the target, and
  ``iqr_pct`` the interquartile range as a share of the median (the spread of single runs).
- **Peak memory** (``mem_mib``). CPU: how much the process's peak resident memory (Linux ``VmHWM``,
  reset through ``/proc/self/clear_refs`` after freed heap is returned to the system) grew from just
  before the first inference to the end of the timed runs, over its resident memory with the backend
  already built: activations, workspaces and buffers a runtime allocates on its first call, not the
  weights (``params * 4`` bytes) nor, for ``compile``, the compilation. ``None`` off Linux. CUDA:
  growth of ``torch.cuda.max_memory_allocated`` over the allocation before the first call.
- **Roofline.** :func:`measure_peak_flops` times large float32 matrix products on the same threads;
  ``2 * MACs * batch / peak`` is a lower bound on a float32 batch's time. ``roofline_x`` is the
  measured median over that bound (1.0 would be a perfect kernel; int8 can go below 1).
- **Backends** (:data:`BACKENDS`): ``eager`` (plain PyTorch), ``channels_last`` (NHWC memory format),
  ``compile`` (``torch.compile``, inductor), ``onnx`` (ONNX Runtime, float32) and ``int8`` (ONNX
  Runtime static int8 quantization calibrated on training faces; CPU). The two ONNX backends go
  through :func:`emozoo.export.export_onnx`, which checks the exported outputs against PyTorch.

A model or backend that fails gives a :class:`BenchResult` whose ``error`` says why; the others go on.
"""
from __future__ import annotations

import copy
import ctypes
import json
import math
import os
import platform
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import EmozooError

BACKENDS = ("eager", "channels_last", "compile", "onnx", "int8")
#: runs needed before p99 means something; fast models get at least this many when time allows
P99_RUNS = 100


# ------------------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Seconds per batch of the timed runs, and their summary."""

    times: list[float]
    ci: float  # half-width of the median's 95 % confidence interval, relative to the median
    target: float

    @property
    def stable(self) -> bool:
        return self.ci <= self.target

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.times, q))

    @property
    def median(self) -> float:
        return self.percentile(50)

    @property
    def iqr(self) -> float:
        return self.percentile(75) - self.percentile(25)


def median_ci(times: Sequence[float]) -> float:
    """Half-width of the distribution-free 95 % confidence interval of the median, relative to it."""
    t = sorted(times)
    n = len(t)
    if n < 3:
        return math.inf
    k = 1.96 * math.sqrt(n) / 2
    lo, hi = max(0, math.floor(n / 2 - k)), min(n - 1, math.ceil(n / 2 + k))
    median = float(np.median(t))
    return (t[hi] - t[lo]) / 2 / median if median > 0 else math.inf


def time_batches(run: Callable[[], Any], *, min_runs: int = 10, max_time: float = 3.0, target: float = 0.02,
                 warmup: int = 3, max_runs: int = 100_000) -> Timing:
    """Time ``run()`` (one batch) adaptively; see the module docstring for the stopping rule."""
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < max_time / 10:
        run()
        done += 1
    times: list[float] = []
    start = time.perf_counter()
    check = min_runs
    while True:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        n = len(times)
        if n >= max_runs:
            break
        if n >= check:
            ci = median_ci(times)
            spent = time.perf_counter() - start
            if (ci <= target and n >= P99_RUNS) or spent >= max_time:
                break
            check = n + max(1, n // 10)
    return Timing(times, median_ci(times), target)


# ------------------------------------------------------------------------------------------- memory
def _status_kib(key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """Growth of peak memory over a baseline, in MiB (see the module docstring); ``mib`` is None when unknown."""

    def __init__(self, device: str = "cpu"):
        self.device, self.mib = device, None
        self.reset()

    def reset(self) -> None:
        """Start measuring from now."""
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap goes back to the system, so reuse counts
        except (OSError, AttributeError):
            pass
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
            self.base = _status_kib("VmRSS")
        except OSError:
            self.base = None

    def stop(self) -> float | None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            peak = _status_kib("VmHWM") if self.base is not None else None
            self.mib = None if peak is None else max(0, peak - self.base) / 1024
        return self.mib


@contextmanager
def peak_memory(device: str = "cpu"):
    """``with peak_memory() as mem: ...``, then ``mem.mib`` is the block's peak memory growth."""
    mem = PeakMemory(device)
    try:
        yield mem
    finally:
        mem.stop()


# ------------------------------------------------------------------------------------------- roofline
def measure_peak_flops(threads: int | None = None, device: str = "cpu", sizes: Sequence[int] = (512, 1024, 2048),
                       min_time: float = 0.3) -> float:
    """Float32 FLOP/s of square matrix products on ``threads`` threads: the best run over ``sizes``.

    The best of many short products, rather than the mean of long ones, so that a run that other
    processes interrupted does not lower the peak (the bound must stay a lower bound on time).
    """
    best = 0.0
    with num_threads(threads):
        for size in sizes:
            a = torch.randn(size, size, device=device)
            b = torch.randn(size, size, device=device)
            start = time.perf_counter()
            for i in range(100_000):
                t0 = time.perf_counter()
                a @ b
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                if i:  # the first product warms up
                    best = max(best, 2 * size**3 / (time.perf_counter() - t0))
                if i >= 3 and time.perf_counter() - start >= min_time:
                    break
    return best


@contextmanager
def num_threads(threads: int | None):
    """Run the block with ``torch.set_num_threads(threads)`` (unchanged when None)."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def machine_info(threads: int | None = None, device: str = "cpu") -> dict:
    """CPU model, cores, threads used, load average, OS and library versions: what a result depends on."""
    cpu = platform.processor() or platform.machine()
    try:
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": threads or torch.get_num_threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "os": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


# ------------------------------------------------------------------------------------------- results
@dataclass
class BenchResult:
    """One row of ``emozoo bench``: one model, backend and batch size. Times are per batch, in ms."""

    model: str
    backend: str
    batch_size: int
    device: str = "cpu"
    threads: int = 0
    input_shape: tuple[int, ...] = ()
    #: "pretrained", "random" (architecture only) or what else the weights are
    weights: str = ""
    params: int | None = None
    #: multiply-accumulates of one image at ``input_shape``
    macs: int | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    iqr_pct: float | None = None
    ci_pct: float | None = None
    runs: int = 0
    stable: bool | None = None
    throughput: float | None = None  # images per second at the median
    mem_mib: float | None = None
    setup_s: float | None = None  # building the backend: export, quantization, compilation (first call)
    roofline_ms: float | None = None
    roofline_x: float | None = None
    #: validation accuracy stored in the model's config (float32 weights), and its split
    accuracy: float | None = None
    accuracy_split: str | None = None
    best: bool = False  # the fastest backend of this model at this batch size
    error: str | None = None
    note: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def set_timing(result: BenchResult, timing: Timing, peak_flops: float | None = None) -> BenchResult:
    """Fill ``result``'s time, spread, throughput and roofline figures from ``timing``."""
    ms = 1e3
    result.median_ms, result.p90_ms, result.p99_ms = (timing.median * ms, timing.percentile(90) * ms,
                                                      timing.percentile(99) * ms)
    result.iqr_pct, result.ci_pct = 100 * timing.iqr / timing.median, 100 * timing.ci
    result.runs, result.stable = len(timing.times), timing.stable
    result.throughput = result.batch_size / timing.median
    if peak_flops and result.macs:
        result.roofline_ms = 2 * result.macs * result.batch_size / peak_flops * ms
        result.roofline_x = result.median_ms / result.roofline_ms
    return result


def bench_callable(run: Callable[[], Any], result: BenchResult, *, peak_flops: float | None = None,
                   min_runs: int = 10, max_time: float = 3.0, target: float = 0.02) -> BenchResult:
    """Time ``run()`` (one batch of ``result.batch_size``) into ``result``; anything, e.g. a TFLite interpreter."""
    with peak_memory(result.device) as mem:
        timing = time_batches(run, min_runs=min_runs, max_time=max_time, target=target)
    result.mem_mib = mem.mib
    return set_timing(result, timing, peak_flops)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, EmozooError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def validation_accuracy(config) -> tuple[str | None, float | None]:
    """``(split, accuracy)`` stored in a config's metrics (PublicTest first), or ``(None, None)``."""
    metrics = getattr(config, "metrics", None) or {}
    splits = sorted(metrics, key=lambda s: s != "PublicTest")
    for split in splits:
        if isinstance(metrics[split], dict) and isinstance(metrics[split].get("accuracy"), (int, float)):
            return split, float(metrics[split]["accuracy"])
    return None, None


# ------------------------------------------------------------------------------------------- backends
def prepare_backend(model: nn.Module, backend: str, *, device: str = "cpu", threads: int | None = None,
                    workdir: str | Path | None = None, data_spec: str | None = "ferplus",
                    input_shape: tuple[int, ...] | None = None) -> tuple[Callable, Callable, str]:
    """``(forward, to_input, note)`` for ``backend``: ``forward(to_input(x))`` runs a batch ``x`` (a CPU tensor).

    ``note`` says how an ONNX export compares with PyTorch. A float32 export that does not match
    raises; an int8 one whose top-1 agreement is low only says so (random weights give near-ties).
    """
    if backend == "eager":
        m = model.to(device)
        return m, lambda x: x.to(device), ""
    if backend == "channels_last":
        m = copy.deepcopy(model).to(device, memory_format=torch.channels_last)
        return m, lambda x: x.to(device).contiguous(memory_format=torch.channels_last), ""
    if backend == "compile":
        return torch.compile(model.to(device), dynamic=False), lambda x: x.to(device), ""
    if backend in ("onnx", "int8"):
        from .export import OnnxRuntimeModel, export_onnx

        if backend == "int8" and device != "cpu":
            raise EmozooError("int8 runs on the CPU only: use --device cpu")
        path = Path(workdir or tempfile.mkdtemp(prefix="emozoo-bench-")) / f"{backend}.onnx"
        report = export_onnx(model.cpu(), path, int8=backend == "int8", data_spec=data_spec, input_shape=input_shape,
                             strict=False)
        note = (f"vs PyTorch: max |prob diff| {report.max_abs_prob:.2g}, top-1 agreement {report.top1_agreement:.0%}"
                + (f"; calibrated on {report.calibration}" if report.calibration else ""))
        runner = OnnxRuntimeModel(path, threads=threads, device=device)
        return runner.run_numpy, lambda x: x.cpu().contiguous().numpy(), note
    raise EmozooError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


def load_model(name: str, input_shape: tuple[int, ...] | None = None,
               flip: bool | None = None, model_args: dict[str, Any] | None = None) -> tuple[nn.Module, str]:
    """The model ``name`` names, and its weights: "pretrained" (arch.tag or a folder) or "random" (an architecture).

    ``flip`` turns an emoxnet / emoxnetlite's test-time flip on or off (None: as saved); ``model_args``
    build an architecture with random weights in another shape (e.g. ``{"width": 0.75}``), to time a
    candidate before training it."""
    from ._builder import HUB_PREFIX, LOCAL_PREFIX, as_folder, create

    name = f"{LOCAL_PREFIX}{as_folder(name)}" if as_folder(name) is not None else name
    pretrained = name.startswith((LOCAL_PREFIX, HUB_PREFIX)) or "." in name.split("/")[-1]
    if model_args and pretrained:
        raise EmozooError(f"{name} has trained weights, whose shape its config fixes; model args apply to an "
                          "architecture name with random weights (e.g. resnet10 --model-arg width=0.75)")
    kwargs: dict[str, Any] = dict(model_args or {})
    if input_shape:
        kwargs["input_size"] = input_shape[1:]
        if not pretrained:
            kwargs["in_chans"] = input_shape[0]
    model = create(name, pretrained=pretrained, flip=flip, **kwargs)
    if pretrained and input_shape and model.config.input.in_chans != input_shape[0]:
        raise EmozooError(f"{name} takes {model.config.input.in_chans}-channel input; give --input-size "
                          f"{model.config.input.in_chans}x{input_shape[1]}x{input_shape[2]}")
    return model.eval(), "pretrained" if pretrained else "random"


def bench_model(model: str | nn.Module, *, name: str | None = None, backends: Sequence[str] = ("eager",),
                batch_sizes: Sequence[int] = (1,), threads: int | None = None, device: str = "cpu",
                input_shape: tuple[int, ...] | None = None, weights: str | None = None,
                peak_flops: float | None = None, min_runs: int = 10, max_time: float = 3.0, target: float = 0.02,
                data_spec: str | None = "ferplus", flip: bool | None = None,
                model_args: dict[str, Any] | None = None) -> list[BenchResult]:
    """Benchmark one model (a name, or a module made by :func:`emozoo.create`) on each backend and batch size.

    ``name`` labels a module; ``input_shape`` (C, H, W) overrides the model's input size; ``flip``
    turns a named emoxnet / emoxnetlite's test-time flip on or off (the label says so); ``model_args``
    shape a named architecture with random weights (the label shows them);
    ``peak_flops`` (from :func:`measure_peak_flops`) adds the roofline figures. Failures become rows
    with ``error`` set. The fastest backend per batch size gets ``best=True``.
    """
    label = name or (model if isinstance(model, str) else getattr(getattr(model, "config", None), "name", None)
                     or type(model).__name__)
    if model_args and isinstance(model, str) and not name:
        label += " " + ",".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in model_args.items())
    if flip is not None and isinstance(model, str) and not name:
        label += " (flip)" if flip else " (no flip)"
    threads = threads or torch.get_num_threads()
    rows = [BenchResult(label, b, bs, device, threads) for b in backends for bs in batch_sizes]
    with num_threads(threads):
        try:
            if isinstance(model, str):
                model, kind = load_model(model, input_shape, flip, model_args)
                weights = weights or kind
            model = model.eval()
            shape = tuple(input_shape or model.config.input.shape)
            from ._profile import count_macs, count_params

            params, macs = count_params(model), count_macs(model, shape)
            split, accuracy = validation_accuracy(getattr(model, "config", None))
        except Exception as exc:  # noqa: BLE001 - the row reports it and the run goes on
            for r in rows:
                r.error = _one_line(exc)
            return rows
        for r in rows:
            r.input_shape, r.weights, r.params, r.macs = shape, weights or "", params, macs
            r.accuracy, r.accuracy_split = accuracy, split
        with tempfile.TemporaryDirectory(prefix="emozoo-bench-") as workdir:
            for backend in backends:
                _bench_backend(model, backend, [r for r in rows if r.backend == backend], shape, workdir,
                               data_spec, peak_flops, min_runs, max_time, target)
    mark_best(rows)
    return rows


def _bench_backend(model, backend, rows, shape, workdir, data_spec, peak_flops, min_runs, max_time, target):
    device, threads = rows[0].device, rows[0].threads
    start = time.perf_counter()
    try:
        forward, to_input, note = prepare_backend(model, backend, device=device, threads=threads, workdir=workdir,
                                                  data_spec=data_spec, input_shape=shape)
    except Exception as exc:  # noqa: BLE001
        for r in rows:
            r.error = _one_line(exc)
        return
    setup = time.perf_counter() - start
    for r in rows:
        r.note = note
        try:
            x = to_input(torch.randn(r.batch_size, *shape))
            sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
            with torch.inference_mode(), peak_memory(device) as mem:
                if backend == "compile":  # compilation happens on the first call: not counted as memory
                    mem.reset()
                t0 = time.perf_counter()
                forward(x)  # compiles (torch.compile) or allocates runtime buffers on the first call
                sync()
                r.setup_s = setup + time.perf_counter() - t0
                if backend == "compile":
                    mem.reset()
                set_timing(r, time_batches(lambda: (forward(x), sync()), min_runs=min_runs, max_time=max_time,
                                           target=target), peak_flops)
            r.mem_mib = mem.mib
        except Exception as exc:  # noqa: BLE001
            r.error = _one_line(exc)
        setup = 0.0


def mark_best(rows: Iterable[BenchResult]) -> None:
    """Set ``best`` on the fastest successful row of each (model, batch size)."""
    groups: dict[tuple[str, int], list[BenchResult]] = {}
    for r in rows:
        r.best = False
        if r.error is None and r.median_ms is not None:
            groups.setdefault((r.model, r.batch_size), []).append(r)
    for group in groups.values():
        min(group, key=lambda r: r.median_ms).best = True


def resolve_names(patterns: Sequence[str]) -> list[str]:
    """Model names for ``patterns``: known names (and folders, ``local-dir:``, ``hf-hub:``, ``timm/`` names) as
    they are; any other name is an fnmatch pattern over architectures and published weights. A name
    matching nothing is kept, so that its row reports the error."""
    from ._builder import list_models

    known = set(list_models()) | set(list_models(pretrained=True))
    out: list[str] = []
    for p in patterns:
        if p in known or ":" in p or p.startswith("timm/") or Path(p).is_dir():
            matches = [p]
        else:
            matches = list_models(p) + list_models(p, pretrained=True) or [p]
        out += [m for m in matches if m not in out]
    return out


# ------------------------------------------------------------------------------------------- output
def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def format_table(rows: Sequence[BenchResult], markdown: bool = False) -> str:
    """The results as an aligned text table (or a markdown table); errors are shown in their rows."""
    head = ["model", "backend", "batch", "median ms", "p90 ms", "p99 ms", "spread", "img/s", "params M",
            "MACs M", "mem MiB", "vs roofline", "runs"]
    lines = []
    for r in rows:
        if r.error:
            cells = [r.model, r.backend, str(r.batch_size), f"error: {r.error}"] + [""] * (len(head) - 4)
        else:
            cells = [r.model + (" *" if r.best else ""), r.backend, str(r.batch_size), _fmt(r.median_ms, ".3f"),
                     _fmt(r.p90_ms, ".3f"), _fmt(r.p99_ms, ".3f"),
                     "-" if r.iqr_pct is None else f"±{r.iqr_pct / 2:.1f}%",
                     _fmt(r.throughput, ",.0f"), _fmt(r.params and r.params / 1e6, ".2f"),
                     _fmt(r.macs and r.macs / 1e6, ".1f"), _fmt(r.mem_mib, ".1f"),
                     f"{r.roofline_x:.1f}x" if r.roofline_x else "-", f"{r.runs}" + ("" if r.stable else "~")]
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
        return "\n".join(out + ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in lines])
    widths = [max([len(h)] + [len(c[i]) for c in lines if not c[3].startswith("error")]) for i, h in enumerate(head)]
    text = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    for cells in lines:
        if cells[3].startswith("error"):
            text.append("  ".join(c.ljust(w) for c, w in zip(cells[:3], widths)) + "  " + cells[3])
        else:
            text.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    return "\n".join(text)


TABLE_LEGEND = ("* = fastest backend for that model and batch size; times are per batch; spread = half the "
                "interquartile range; vs roofline = median / (2 x MACs x batch / measured float32 peak); "
                "mem = growth of peak resident memory from the first call on (activations and runtime buffers, "
                "not the weights); runs ending in ~ did not reach a ±2% confidence interval on the median within "
                "the time budget.")


def best_backends(rows: Sequence[BenchResult]) -> dict[str, dict[int, str]]:
    """``{model: {batch_size: fastest backend}}``."""
    out: dict[str, dict[int, str]] = {}
    for r in rows:
        if r.best:
            out.setdefault(r.model, {})[r.batch_size] = r.backend
    return out


def pareto_points(rows: Sequence[BenchResult]) -> list[dict]:
    """Per model with a validation accuracy: its fastest result at its smallest batch size, and whether it is on
    the Pareto front (no other model is both at least as fast and at least as accurate, one strictly)."""
    chosen: dict[str, BenchResult] = {}
    for r in rows:
        if r.error or r.accuracy is None or r.median_ms is None:
            continue
        c = chosen.get(r.model)
        if c is None or (r.batch_size, r.median_ms) < (c.batch_size, c.median_ms):
            chosen[r.model] = r
    points = [{"model": m, "latency_ms": r.median_ms, "accuracy": r.accuracy, "split": r.accuracy_split,
               "backend": r.backend, "batch_size": r.batch_size} for m, r in chosen.items()]
    for p in points:
        p["pareto"] = not any(q is not p and q["latency_ms"] <= p["latency_ms"] and q["accuracy"] >= p["accuracy"]
                              and (q["latency_ms"], q["accuracy"]) != (p["latency_ms"], p["accuracy"])
                              for q in points)
    return sorted(points, key=lambda p: p["latency_ms"])


def plot_pareto(points: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Accuracy against latency (log scale) for :func:`pareto_points`, the Pareto front drawn as a line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EmozooError("plots need matplotlib: pip install 'emozoo[plot]'") from None
    if not points:
        raise EmozooError("no benchmarked model has a validation accuracy in its config.json; bench trained "
                          "models (arch.tag, a folder or local-dir:PATH) to plot accuracy against latency")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    front = [p for p in points if p["pareto"]]
    ax.step([p["latency_ms"] for p in front], [100 * p["accuracy"] for p in front], where="post", color="tab:blue",
            alpha=0.5, label="Pareto front")
    for p in points:
        ax.scatter(p["latency_ms"], 100 * p["accuracy"], s=40, color="tab:blue",
                   facecolors="tab:blue" if p["pareto"] else "none")
        ax.annotate(f"{p['model']} ({p['backend']})", (p["latency_ms"], 100 * p["accuracy"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    # minor ticks labelled at 2x and 5x each decade only: all eight overlap when the axis spans a decade or more
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.margins(x=0.3, y=0.15)
    splits = sorted({p["split"] for p in points})
    ax.set_xlabel(f"median latency, batch {points[0]['batch_size']} (ms, log scale; fastest backend)")
    ax.set_ylabel(f"{'/'.join(splits)} accuracy (%)")
    ax.set_title(title or "Accuracy against latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_csv(rows: Sequence[BenchResult], path: str | Path) -> Path:
    """Write one CSV line per result (the fields of :class:`BenchResult`)."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(BenchResult.__dataclass_fields__))
        writer.writeheader()
        for r in rows:
            d = r.as_dict()
            d["input_shape"] = "x".join(map(str, d["input_shape"]))
            writer.writerow(d)
    return path


__all__ = ["BACKENDS", "BenchResult", "Timing", "bench_model", "bench_callable", "time_batches", "median_ci",
           "measure_peak_flops", "machine_info", "peak_memory", "PeakMemory", "num_threads", "prepare_backend",
           "load_model",
           "resolve_names", "format_table", "mark_best", "best_backends", "pareto_points", "plot_pareto",
           "write_csv", "validation_accuracy", "set_timing", "TABLE_LEGEND"]
