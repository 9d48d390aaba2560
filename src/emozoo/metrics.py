"""Evaluation metrics: accuracy, per-class accuracy, macro-F1, expected calibration error, confusion."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, label_names: Sequence[str],
                           ece_bins: int = 15) -> dict:
    """Metrics of predicted probabilities ``(N, C)`` against class indices ``(N,)``.

    ``accuracy`` is the argmax accuracy; ``ece`` the expected calibration error over ``ece_bins``
    equal-width confidence bins; ``confusion[i][j]`` counts true class i predicted as j.
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
    conf, correct = probs.max(1).values, (pred == targets).double()
    edges = torch.linspace(0, 1, ece_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.double().mean().item() * abs(correct[in_bin].mean().item() - conf[in_bin].double().mean().item())
    return {
        "accuracy": correct.mean().item(),
        "macro_f1": f1[present].mean().item(),
        "ece": ece,
        "n": int(targets.numel()),
        "per_class_accuracy": {name: recall[i].item() for i, name in enumerate(label_names) if present[i]},
        "support": {name: int(support[i]) for i, name in enumerate(label_names)},
        "confusion": confusion.tolist(),
    }


def plot_confusion(confusion: Sequence[Sequence[int]], label_names: Sequence[str], path: str, title: str = "") -> None:
    """Save a row-normalised confusion matrix as a PNG (needs matplotlib: ``pip install emozoo[plot]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from .errors import EmozooError

        raise EmozooError("plots need matplotlib: pip install 'emozoo[plot]'") from None
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
