"""Calibrated probabilities: one temperature, fitted on the validation split, divides a model's logits.

A model's ``config.calibration`` holds ``{"temperature": T, ...}`` (with where it was fitted); every score emozoo
returns is ``softmax(logits / T)`` (:func:`probabilities`), so argmax and accuracy do not change while "0.9" comes
to mean right nine times in ten. Without a fitted temperature ``T = 1``: the raw softmax.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .errors import ConfigError


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature ``T`` minimising the mean negative log-likelihood of ``softmax(logits / T)``.

    ``logits`` is ``(N, C)``; ``targets`` class indices ``(N,)`` or distributions ``(N, C)`` (e.g. FER+'s
    annotator votes). Fitted on ``log T`` with L-BFGS, so ``T`` stays positive (Guo et al. 2017).
    """
    logits = logits.detach().double()
    if logits.ndim != 2 or len(logits) == 0:
        raise ConfigError(f"fit_temperature needs (N, C) logits with N > 0, got shape {tuple(logits.shape)}")
    if targets.ndim == 1:
        targets = nn.functional.one_hot(targets.long(), logits.shape[1]).double()
    targets = targets.detach().double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -(targets * (logits / log_t.exp()).log_softmax(1)).sum(1).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t):
        raise ConfigError("fit_temperature did not converge (are the logits finite?)")
    return t


def temperature(model_or_config: Any) -> float:
    """The temperature stored in a model's ``config.calibration`` (1.0 when none was fitted)."""
    config = getattr(model_or_config, "config", model_or_config)
    return float((getattr(config, "calibration", None) or {}).get("temperature", 1.0))


def probabilities(model_or_config: Any, logits: torch.Tensor) -> torch.Tensor:
    """``softmax(logits / T)`` with the model's fitted temperature ``T``: its calibrated scores ``(N, C)``."""
    return (logits.float() / temperature(model_or_config)).softmax(-1)


@torch.inference_mode()
def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Calibrated label probabilities ``(B, C)`` of a batch ``x`` of model inputs (as :func:`emozoo.face_transform`
    makes them, stacked), in ``model.config.label_names`` order. The model is put in eval mode."""
    if x.ndim != 4:
        raise ConfigError(f"predict_proba takes a (B, C, H, W) batch, got shape {tuple(x.shape)}; "
                          "stack face_transform outputs with torch.stack")
    model.eval()
    return probabilities(model, model(x))
