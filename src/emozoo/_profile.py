"""Model cost: parameters and multiply-accumulates (MACs) at the model's input size."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """The number of parameters of ``model`` (every tensor in ``model.parameters()``, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass for a single input of ``input_shape`` (C, H, W); FLOPs / 2."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
