"""Benchmarking models: build one, time it on each backend and batch size, and turn names into models."""
from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import EmozooError
from .backends import prepare_backend
from .machine import num_threads
from .memory import peak_memory
from .result import BenchResult, mark_best, set_timing, validation_accuracy
from .timing import time_batches


def bench_callable(run: Callable[[], Any], result: BenchResult, *, peak_flops: float | None = None,
                   min_runs: int = 10, max_time: float = 3.0, target: float = 0.02) -> BenchResult:
    """Time ``run()`` (one batch of ``result.batch_size``) into ``result``; anything, e.g. a TFLite interpreter."""
    with peak_memory(result.device) as mem:
        timing = time_batches(run, min_runs=min_runs, max_time=max_time, target=target)
    result.mem_mib = mem.mib
    return set_timing(result, timing, peak_flops)


def one_line_error(exc: BaseException) -> str:
    """``exc`` as the one line a failed row shows."""
    if isinstance(exc, EmozooError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def has_weights(name: str) -> bool:
    """Whether ``name`` names trained weights (``arch.tag``, a folder, ``local-dir:``, ``hf-hub:``) rather than
    an architecture, which :func:`build_model` builds with random weights."""
    last = name.replace("\\", "/").split("/")[-1]
    if ":" in name or "." in last:
        return True
    if name.startswith("timm/"):
        return False
    return "/" in name or "\\" in name or name.startswith(".") or Path(name).is_dir()


def build_model(name: str, input_shape: tuple[int, ...] | None = None,
                flip: bool | None = None, model_args: dict[str, Any] | None = None) -> tuple[nn.Module, str]:
    """The model ``name`` names, from :func:`emozoo.create`, and its weights: "pretrained" (arch.tag or a folder)
    or "random" (an architecture, timed before anyone trains it).

    ``flip`` turns an emoxnet / emoxnetlite's test-time flip on or off (None: as saved); ``model_args``
    build an architecture with random weights in another shape (e.g. ``{"width": 0.75}``), to time a
    candidate before training it; ``input_shape`` (C, H, W) runs it at another input size."""
    from .._builder import check_model_arg_names, create

    check_model_arg_names(model_args or {}, "--model-arg",
                          ["name", "pretrained", "revision", "flip", *(("in_chans", "input_size") if input_shape else ())])
    pretrained = has_weights(name)
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
                model_args: dict[str, Any] | None = None, require_data: bool = False) -> list[BenchResult]:
    """Benchmark one model (a name, or a module made by :func:`emozoo.create`) on each backend and batch size.

    ``name`` labels a module; ``input_shape`` (C, H, W) overrides the model's input size; ``flip``
    turns a named emoxnet / emoxnetlite's test-time flip on or off (the label says so); ``model_args``
    shape a named architecture with random weights (the label shows them);
    ``peak_flops`` (from :func:`measure_peak_flops`) adds the roofline figures; ``data_spec`` calibrates int8
    and checks ONNX exports (``require_data``: it must be readable, else random inputs stand in and the note
    says so). Failures become rows with ``error`` set. The fastest backend per batch size gets ``best=True``.
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
                model, kind = build_model(model, input_shape, flip, model_args)
                weights = weights or kind
            model = model.eval()
            shape = tuple(input_shape or model.config.input.shape)
            from .._profile import count_macs, count_params

            params, macs = count_params(model), count_macs(model, shape)
            split, accuracy = validation_accuracy(getattr(model, "config", None))
        except Exception as exc:  # noqa: BLE001 - the row reports it and the run goes on
            for r in rows:
                r.error = one_line_error(exc)
            return rows
        for r in rows:
            r.input_shape, r.weights, r.params, r.macs = shape, weights or "", params, macs
            r.accuracy, r.accuracy_split = accuracy, split
        with tempfile.TemporaryDirectory(prefix="emozoo-bench-") as workdir:
            for backend in backends:
                _bench_backend(model, backend, [r for r in rows if r.backend == backend], shape, workdir,
                               data_spec, peak_flops, min_runs, max_time, target, require_data)
    mark_best(rows)
    return rows


def _bench_backend(model, backend, rows, shape, workdir, data_spec, peak_flops, min_runs, max_time, target,
                   require_data=False):
    device, threads = rows[0].device, rows[0].threads
    start = time.perf_counter()
    try:
        forward, to_input, note = prepare_backend(model, backend, device=device, threads=threads, workdir=workdir,
                                                  data_spec=data_spec, input_shape=shape,
                                                  require_data=require_data)
    except Exception as exc:  # noqa: BLE001
        for r in rows:
            r.error = one_line_error(exc)
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
                set_timing(r, time_batches(lambda x=x, sync=sync: (forward(x), sync()), min_runs=min_runs, max_time=max_time,
                                           target=target), peak_flops)
            r.mem_mib = mem.mib
        except Exception as exc:  # noqa: BLE001
            r.error = one_line_error(exc)
        setup = 0.0


def resolve_names(patterns: Sequence[str]) -> list[str]:
    """Model names for ``patterns``: known names (and folders, ``local-dir:``, ``hf-hub:``, ``timm/`` names) as
    they are; any other name is an fnmatch pattern over architectures and published weights. A name
    matching nothing is kept, so that its row reports the error."""
    from .._builder import list_models

    known = set(list_models()) | set(list_models(pretrained=True))
    out: list[str] = []
    for p in patterns:
        if p in known or ":" in p or p.startswith("timm/") or Path(p).is_dir():
            matches = [p]
        else:
            matches = list_models(p) + list_models(p, pretrained=True) or [p]
        out += [m for m in matches if m not in out]
    return out
