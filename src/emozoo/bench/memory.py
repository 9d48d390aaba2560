"""Peak memory growth of a block of code: resident memory on the CPU (Linux), allocated memory on CUDA."""
from __future__ import annotations

import ctypes
import re
from contextlib import contextmanager
from pathlib import Path

import torch


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
