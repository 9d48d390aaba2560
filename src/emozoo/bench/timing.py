"""Adaptive timing of one batch: warm-up, then timed runs until the median is known well enough."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: runs needed before p99 means something; fast models get at least this many when time allows
P99_RUNS = 100



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

