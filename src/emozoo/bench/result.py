"""One benchmark row (:class:`BenchResult`), how a timing fills it, and which backend won."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from .timing import Timing


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

def validation_accuracy(config) -> tuple[str | None, float | None]:
    """``(split, accuracy)`` stored in a config's metrics (PublicTest first), or ``(None, None)``."""
    metrics = getattr(config, "metrics", None) or {}
    splits = sorted(metrics, key=lambda s: s != "PublicTest")
    for split in splits:
        if isinstance(metrics[split], dict) and isinstance(metrics[split].get("accuracy"), (int, float)):
            return split, float(metrics[split]["accuracy"])
    return None, None


def mark_best(rows: Iterable[BenchResult]) -> None:
    """Set ``best`` on the fastest successful row of each (model, batch size)."""
    groups: dict[tuple[str, int], list[BenchResult]] = {}
    for r in rows:
        r.best = False
        if r.error is None and r.median_ms is not None:
            groups.setdefault((r.model, r.batch_size), []).append(r)
    for group in groups.values():
        min(group, key=lambda r: r.median_ms).best = True


def best_backends(rows: Sequence[BenchResult]) -> dict[str, dict[int, str]]:
    """``{model: {batch_size: fastest backend}}``."""
    out: dict[str, dict[int, str]] = {}
    for r in rows:
        if r.best:
            out.setdefault(r.model, {})[r.batch_size] = r.backend
    return out
