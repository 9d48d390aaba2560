"""Benchmark output: the text or markdown table, the CSV file, and accuracy against latency (Pareto front)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .._plot import pyplot, save_figure
from ..errors import EmozooError
from .result import BenchResult


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
    plt = pyplot()
    import matplotlib.ticker
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
    return save_figure(fig, path)


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

