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

from .backends import BACKENDS, prepare_backend
from .machine import machine_info, measure_peak_flops, num_threads
from .memory import PeakMemory, peak_memory
from .report import TABLE_LEGEND, format_table, pareto_points, plot_pareto, write_csv
from .result import BenchResult, best_backends, mark_best, set_timing, validation_accuracy
from .run import bench_callable, bench_model, build_model, resolve_names
from .timing import P99_RUNS, Timing, median_ci, time_batches

__all__ = ["BACKENDS", "BenchResult", "Timing", "bench_model", "bench_callable", "time_batches", "median_ci",
           "measure_peak_flops", "machine_info", "peak_memory", "PeakMemory", "num_threads", "prepare_backend",
           "build_model", "resolve_names", "format_table", "mark_best", "best_backends", "pareto_points",
           "plot_pareto", "write_csv", "validation_accuracy", "set_timing", "TABLE_LEGEND", "P99_RUNS"]
