"""Stochastic weight averaging: the running mean of the weights, and BatchNorm statistics measured afresh."""
from __future__ import annotations

import torch
from torch import nn


class WeightAverage:
    """The running mean of a model's floating-point weights and buffers (stochastic weight averaging)."""

    def __init__(self, model: nn.Module):
        self.mean: dict[str, torch.Tensor] = {}
        self.count = 0
        self._keys = [k for k, v in model.state_dict().items() if v.is_floating_point()]

    def update(self, model: nn.Module) -> None:
        state = model.state_dict()
        self.count += 1
        for k in self._keys:
            value = state[k].detach().float().cpu()
            if k not in self.mean:
                self.mean[k] = value.clone()
            else:
                self.mean[k] += (value - self.mean[k]) / self.count

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"swa.{k}": v for k, v in self.mean.items()}

    def load(self, tensors: dict[str, torch.Tensor], count: int) -> None:
        self.mean = {k[len("swa."):]: v.float() for k, v in tensors.items() if k.startswith("swa.")}
        self.count = int(count) if self.mean else 0

    def apply(self, model: nn.Module) -> None:
        state = model.state_dict()
        model.load_state_dict({**state, **{k: v.to(state[k].dtype) for k, v in self.mean.items()}})


def update_batchnorm(model: nn.Module, batches) -> None:
    """Recompute every BatchNorm layer's running mean and variance as the plain average over ``batches``
    (inputs only), as the weights of an averaged model need (their own statistics were never measured)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    for x in batches:
        model(x)
    model.train(was_training)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
