"""The ways a model can run (:data:`BACKENDS`): eager, channels_last, compile, ONNX Runtime float32 and int8."""
from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import EmozooError

BACKENDS = ("eager", "channels_last", "compile", "onnx", "int8")


def prepare_backend(model: nn.Module, backend: str, *, device: str = "cpu", threads: int | None = None,
                    workdir: str | Path | None = None, data_spec: str | None = "ferplus",
                    input_shape: tuple[int, ...] | None = None,
                    require_data: bool = False) -> tuple[Callable, Callable, str]:
    """``(forward, to_input, note)`` for ``backend``: ``forward(to_input(x))`` runs a batch ``x`` (a CPU tensor).

    ``note`` says how an ONNX export compares with PyTorch. A float32 export that does not match
    raises; an int8 one whose top-1 agreement is low only says so (random weights give near-ties).
    ``data_spec`` calibrates int8 and checks the export; with ``require_data`` it must be readable.
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
        from ..export import OnnxRuntimeModel, export_onnx

        if backend == "int8" and device != "cpu":
            raise EmozooError("int8 runs on the CPU only: use --device cpu")
        path = Path(workdir or tempfile.mkdtemp(prefix="emozoo-bench-")) / f"{backend}.onnx"
        report = export_onnx(model.cpu(), path, int8=backend == "int8", data_spec=data_spec, input_shape=input_shape,
                             strict=False, require_data=require_data)
        note = (f"vs PyTorch: max |prob diff| {report.max_abs_prob:.2g}, top-1 agreement {report.top1_agreement:.0%}"
                + (f"; calibrated on {report.calibration}" if report.calibration else ""))
        runner = OnnxRuntimeModel(path, threads=threads, device=device)
        return runner.run_numpy, lambda x: x.cpu().contiguous().numpy(), note
    raise EmozooError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
