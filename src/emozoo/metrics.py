"""Evaluation metrics: accuracy, per-class accuracy, macro-F1, calibration (ECE, NLL, Brier, cross-entropy against
annotator votes), confusion, a paired test of two classifiers on the same faces; and their plots (confusion matrix,
reliability diagram)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ._plot import pyplot


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, label_names: Sequence[str],
                           ece_bins: int = 15, votes: torch.Tensor | None = None) -> dict:
    """Metrics of predicted probabilities ``(N, C)`` against class indices ``(N,)``.

    ``accuracy`` is the argmax accuracy; ``ece`` the expected calibration error over ``ece_bins``
    equal-width confidence bins; ``nll`` and ``brier`` as in :func:`calibration_metrics` (with
    ``vote_ce`` when ``votes``, ``(N, C)`` annotator vote distributions, are given); ``confusion[i][j]``
    counts true class i predicted as j.
    """
    num_classes = len(label_names)
    pred = probs.argmax(1)
    confusion = torch.bincount(targets * num_classes + pred, minlength=num_classes ** 2).view(num_classes, num_classes)
    support = confusion.sum(1)
    tp = confusion.diag().double()
    precision = tp / confusion.sum(0).clamp(min=1)
    recall = tp / support.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    present = support > 0
    correct = (pred == targets).double()
    return {
        "accuracy": correct.mean().item(),
        "macro_f1": f1[present].mean().item(),
        **calibration_metrics(probs, targets, ece_bins, votes),
        "n": int(targets.numel()),
        "per_class_accuracy": {name: recall[i].item() for i, name in enumerate(label_names) if present[i]},
        "support": {name: int(support[i]) for i, name in enumerate(label_names)},
        "confusion": confusion.tolist(),
    }


def paired_test(right_a, right_b) -> dict:
    """Whether two classifiers scored on the same faces differ by more than chance: ``a_only`` (faces only ``a``
    gets right), ``b_only`` and ``p_value``, the exact two-sided McNemar test (a binomial test on the faces where
    they disagree; ``scipy.stats.binomtest``). Accuracies a few faces apart on a small validation split are ties:
    a large p-value says the split cannot tell the two apart."""
    from scipy.stats import binomtest

    a_only = int((right_a & ~right_b).sum())
    b_only = int((right_b & ~right_a).sum())
    p_value = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": round(float(p_value), 4)}


def reliability(probs: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> list[dict]:
    """The reliability table of ``bins`` equal-width confidence bins (``(lo, hi]``; empty bins left out):
    each bin's ``lo``, ``hi``, ``count``, mean ``confidence`` (top probability) and ``accuracy``."""
    conf, correct = probs.double().max(1).values, (probs.argmax(1) == targets).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    rows = []
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            rows.append({"lo": lo, "hi": hi, "count": int(in_bin.sum()), "confidence": conf[in_bin].mean().item(),
                         "accuracy": correct[in_bin].mean().item()})
    return rows


def expected_calibration_error(rows: Sequence[dict]) -> float:
    """ECE of a :func:`reliability` table: sum over bins of (bin's share of faces) x |accuracy - mean confidence|."""
    n = sum(r["count"] for r in rows) or 1
    return float(sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows))


def calibration_metrics(probs: torch.Tensor, targets: torch.Tensor, ece_bins: int = 15,
                        votes: torch.Tensor | None = None) -> dict:
    """How far probabilities ``(N, C)`` are from the truth, class indices ``targets`` ``(N,)``:

    - ``ece``: sum over ``ece_bins`` confidence bins of (bin's share of faces) x |accuracy - mean confidence|;
    - ``nll``: mean of ``-log p_y`` (natural log; probabilities floored at 1e-12);
    - ``brier``: mean over faces of ``sum_c (p_c - y_c)^2`` with ``y`` one-hot (0 perfect, 2 worst);
    - ``vote_ce`` (only with ``votes``, ``(N, C)`` rows summing to 1, e.g. FER+'s 10-annotator votes):
      mean of ``-sum_c v_c log p_c``, the cross-entropy against the annotators' distribution.
    """
    p = probs.double()
    one_hot = torch.nn.functional.one_hot(targets.long(), p.shape[1]).double()
    log_p = p.clamp(min=1e-12).log()
    out = {"ece": expected_calibration_error(reliability(p, targets, ece_bins)),
           "nll": -log_p.gather(1, targets.long().view(-1, 1)).mean().item(),
           "brier": (p - one_hot).pow(2).sum(1).mean().item()}
    if votes is not None:
        if votes.shape != p.shape:
            from .errors import DataError

            raise DataError(f"vote distributions have shape {tuple(votes.shape)}, the probabilities {tuple(p.shape)}; "
                            "open the same faces with target='soft'")
        out["vote_ce"] = -(votes.double() * log_p).sum(1).mean().item()
    return out


def plot_confusion(confusion: Sequence[Sequence[int]], label_names: Sequence[str], path: str, title: str = "") -> None:
    """Save a row-normalised confusion matrix as a PNG (needs matplotlib: ``pip install emozoo[plot]``)."""
    plt = pyplot()
    cm = torch.tensor(confusion, dtype=torch.float64)
    norm = (cm / cm.sum(1, keepdim=True).clamp(min=1)).numpy()
    cm = cm.numpy()
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(label_names), 0.8 + 0.8 * len(label_names)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(label_names)):
        for j in range(len(label_names)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(curves: dict[str, Sequence[dict]], path: str, title: str = "") -> None:
    """Save a reliability diagram as a PNG: for each named :func:`reliability` table (e.g. ``{"before (T=1)":
    ..., "after (T=1.6)": ...}``) a panel of per-bin accuracy against confidence, the gap to the bin's mean
    confidence hatched and the bin's face count at its foot; needs matplotlib (``pip install emozoo[plot]``)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 4.2), squeeze=False)
    for ax, (name, rows) in zip(axes[0], curves.items()):
        ece = expected_calibration_error(rows)
        mids = [(r["lo"] + r["hi"]) / 2 for r in rows]
        widths = [r["hi"] - r["lo"] for r in rows]
        ax.bar(mids, [r["accuracy"] for r in rows], width=widths, edgecolor="black", color="tab:blue", label="accuracy")
        ax.bar(mids, [abs(r["confidence"] - r["accuracy"]) for r in rows],
               bottom=[min(r["confidence"], r["accuracy"]) for r in rows], width=widths, fill=False, hatch="///",
               edgecolor="tab:red", label="gap to mean confidence")
        for m, r in zip(mids, rows):
            ax.text(m, 0.01, str(r["count"]), ha="center", va="bottom", fontsize=6, rotation=90)
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name}: ECE {ece:.3f}")
        ax.legend(loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
