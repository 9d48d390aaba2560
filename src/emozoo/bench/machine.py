"""What a benchmark depends on: the machine, its float32 peak (the roofline bound) and the threads used."""
from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch


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
