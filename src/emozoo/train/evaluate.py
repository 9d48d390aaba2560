"""A model's logits over a dataset, and its classification metrics there."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..metrics import classification_metrics
from .distributed import autocast


@torch.no_grad()
def predict_logits(model: nn.Module, dataset: Dataset, batch_size: int = 256, num_workers: int = 0,
                   progress: bool = False, desc: str = "predict") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits for every item of ``dataset`` (in order) and the hard targets."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    logits, targets = [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        x, y = batch[0], batch[1]
        with autocast(device, True):
            logits.append(model(x.to(device)).float().cpu())
        targets.append(y.argmax(1) if y.ndim == 2 else y)
    return torch.cat(logits), torch.cat(targets)


def evaluate(model: nn.Module, dataset: Dataset, label_names, batch_size: int = 256, num_workers: int = 0,
             progress: bool = False) -> dict[str, Any]:
    """Accuracy, per-class accuracy, macro-F1, ECE, NLL, Brier and confusion matrix of ``model`` on ``dataset``.

    The raw softmax (``T = 1``) is scored, whatever temperature the config holds: a run validates the model it
    is training, before any temperature is fitted (``emozoo calibrate``); ``emozoo eval`` scores both."""
    logits, targets = predict_logits(model, dataset, batch_size, num_workers, progress, desc="eval")
    return classification_metrics(logits.softmax(1), targets, label_names)
