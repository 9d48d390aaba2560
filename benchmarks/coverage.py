"""Coverage against accuracy: what ``emozoo predict --min-confidence P`` keeps, and how much more often it is right.

For each threshold P = 0, 0.05, ..., 0.95 and each model: the fraction of faces whose top calibrated probability is
at least P (the faces ``predict`` labels; it calls the rest ``uncertain``) and the accuracy on those faces. The logits
are ``emozoo.train.predict_logits`` over the split as ``emozoo eval`` reads it, the scores
``emozoo.calibration.probabilities`` (softmax of the logits over the temperature stored in the model's
``config.json``; T = 1 when none is stored), so the curve is the one ``predict`` users get::

    python benchmarks/coverage.py --model emoxnetlite.ferplus --model emoxnet.ferplus     # FER+ PublicTest
    python benchmarks/coverage.py --model emoxnetlite.ferplus --split Training --holdout 0.05 --out /tmp/cov

Reporting on PublicTest is allowed; choosing a default P must use the validation split (``--split Training --holdout
0.05``). Writes ``coverage.json``, ``coverage.md`` (the table) and ``coverage.png`` (the curves of all models on one
plot) into ``--out`` (default ``benchmarks/results``). ``--limit N`` scores only the first N faces (smoke runs).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from torch.utils.data import Subset

import emozoo
from emozoo.calibration import probabilities, temperature
from emozoo.data import eval_transform
from emozoo.train import device_for, predict_logits
from emozoo.workflows import open_holdout, open_split

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("emoxnetlite.ferplus", "emoxnet.ferplus")
#: the thresholds P of the table and plot: 0, 0.05, ..., 0.95
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20))


def coverage_curve(probs: np.ndarray, targets: np.ndarray, thresholds=THRESHOLDS) -> list[dict]:
    """For each threshold P: the faces whose top probability is at least P (``faces``, and ``coverage``, their
    fraction of all) and the accuracy of the top label on them (None when no face reaches P)."""
    probs, targets = np.asarray(probs), np.asarray(targets)
    top, correct = probs.max(1).astype(np.float64), probs.argmax(1) == targets  # P compared as predict does
    rows = []
    for p in thresholds:
        kept = top >= p
        n = int(kept.sum())
        rows.append({"threshold": float(p), "faces": n, "coverage": n / len(top) if len(top) else 0.0,
                     "accuracy": float(correct[kept].mean()) if n else None})
    return rows


def score_model(name: str, data_spec: str, split: str, holdout: float | None, limit: int | None,
                batch_size: int) -> dict:
    """One model's coverage curve on the split: its calibrated scores, as ``predict`` computes them."""
    model = emozoo.create(name, pretrained=True).to(device_for()).eval()
    transform, labels = eval_transform(model.config.input), model.config.label_names
    data = (open_holdout(data_spec, split, holdout, transform, labels) if holdout
            else open_split(data_spec, split, transform, labels))
    if limit:
        data = Subset(data, range(min(limit, len(data))))
    start = time.perf_counter()
    logits, targets = predict_logits(model, data, batch_size, progress=sys.stderr.isatty(), desc=name)
    probs = probabilities(model, logits).numpy()
    curve = coverage_curve(probs, targets.numpy())
    return {"model": name, "temperature": temperature(model), "temperature_stored": "temperature" in
            (model.config.calibration or {}), "faces": len(targets), "accuracy": curve[0]["accuracy"],
            "seconds": round(time.perf_counter() - start, 1), "curve": curve}


def write_markdown(report: dict, path: Path) -> None:
    """The table: one row per threshold, coverage and accuracy of each model."""
    models = report["models"]
    where = f"{report['data']} {report['split']}" + (f" holdout {report['holdout']:g}" if report["holdout"] else "")
    lines = ["# Coverage against accuracy (`--min-confidence P`)", "",
             f"`{report['command']}`", "",
             f"Data: {where}" + (f", first {report['limit']} faces" if report["limit"] else "") + ". A face is kept "
             "(labelled) when its top calibrated probability is at least P; `predict --min-confidence P` labels the "
             "others `uncertain`. Coverage: the fraction kept; accuracy: the top label's accuracy on them.", ""]
    lines += [f"- `{m['model']}`: {m['faces']} faces, accuracy {m['accuracy']:.4f}, temperature {m['temperature']:g}"
              + ("" if m["temperature_stored"] else " (none stored: raw softmax)") for m in models]
    head = "| P | " + " | ".join(f"{m['model']} coverage | {m['model']} accuracy" for m in models) + " |"
    lines += ["", head, "|" + " --- |" * (1 + 2 * len(models))]
    for i, p in enumerate(report["thresholds"]):
        cells = []
        for m in models:
            row = m["curve"][i]
            cells += [f"{row['coverage']:.3f}", "-" if row["accuracy"] is None else f"{row['accuracy']:.4f}"]
        lines.append(f"| {p:.2f} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(report: dict, path: Path) -> None:
    """Accuracy against coverage (left) and both against P (right), every model on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for m in report["models"]:
        rows = [r for r in m["curve"] if r["accuracy"] is not None]
        cov, acc = [r["coverage"] for r in rows], [r["accuracy"] for r in rows]
        line, = left.plot(cov, acc, marker="o", ms=3, label=m["model"])
        for r in rows:
            if r["threshold"] in (0.5, 0.7, 0.9):
                left.annotate(f"P={r['threshold']:g}", (r["coverage"], r["accuracy"]), fontsize=7,
                              textcoords="offset points", xytext=(4, -10), color=line.get_color())
        right.plot([r["threshold"] for r in rows], acc, marker="o", ms=3, color=line.get_color(),
                   label=f"{m['model']} accuracy")
        right.plot([r["threshold"] for r in m["curve"]], [r["coverage"] for r in m["curve"]], ls="--",
                   color=line.get_color(), label=f"{m['model']} coverage")
    left.set(xlabel="coverage (fraction of faces labelled)", ylabel="accuracy on the faces labelled",
             title=f"{report['split']}: accuracy as --min-confidence rises")
    left.invert_xaxis()
    right.set(xlabel="P (--min-confidence)", ylabel="fraction", title="coverage and accuracy against P", ylim=(0, 1.02))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help=f"a model name or folder (repeatable) [{', '.join(MODELS)}]")
    parser.add_argument("--data", default="ferplus", help="data spec, as emozoo eval's --data [ferplus]")
    parser.add_argument("--split", default="PublicTest", help="split to score [PublicTest]")
    parser.add_argument("--holdout", type=float, help="score only the part of --split a --holdout run kept aside")
    parser.add_argument("--limit", type=int, help="score only the first N faces (smoke runs)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for coverage.*")
    args = parser.parse_args(argv)
    models = args.model or list(MODELS)
    command = "python benchmarks/coverage.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    report = {"command": command.strip(), "data": args.data, "split": args.split, "holdout": args.holdout,
              "limit": args.limit, "thresholds": list(THRESHOLDS),
              "models": [score_model(m, args.data, args.split, args.holdout, args.limit, args.batch_size)
                         for m in models]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "coverage.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.out / "coverage.md")
    plot(report, args.out / "coverage.png")
    for m in report["models"]:
        kept = {r["threshold"]: r for r in m["curve"]}
        print(f"{m['model']}: {m['faces']} faces, accuracy {m['accuracy']:.4f} (T={m['temperature']:g}); "
              + ", ".join(f"P={p:g}: {kept[p]['coverage']:.1%} kept at "
                          + ("-" if kept[p]["accuracy"] is None else f"{kept[p]['accuracy']:.1%}")
                          for p in (0.5, 0.7, 0.9)))
    print(f"wrote {args.out / 'coverage.md'}, coverage.json and coverage.png")
    return report


if __name__ == "__main__":
    main()
