"""Fitting an ensemble's fusion on its members' outputs, computed once (members frozen)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..builtins.emoxnet import EmoXNet
from ..train import device_for


@torch.no_grad()
def member_outputs(model: EmoXNet, data, progress: bool, batch_size: int = 256, *, mirror: bool = False):
    """Every member's logits ``(M, N, C)`` and features over ``data`` in one pass, and the targets (on the CPU).

    ``mirror=True`` feeds every image mirrored (``x.flip(-1)``): with the model's own ``flip`` off, the mean of
    both passes is what ``flip=True`` gives, so a search can score each candidate with and without it."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    home, device = next(model.parameters()).device, device_for()
    model.eval().to(device)  # on the GPU when there is one; the outputs come back to the CPU
    logits, features, targets = [], [], []
    try:
        for x, y in tqdm(DataLoader(data, batch_size=batch_size), desc="members, mirrored" if mirror else "members",
                         disable=not progress, leave=False):
            x = x.to(device)
            z, f = model.forward_members(x.flip(-1) if mirror else x)
            logits.append(z.float().cpu())
            features.append([t.float().cpu() for t in f])
            targets.append(y)
    finally:
        model.to(home)
    return (torch.cat(logits, 1), [torch.cat([f[i] for f in features]) for i in range(len(model.members))],
            torch.cat(targets))


def fit_fusion(model: EmoXNet, data, epochs: int, progress: bool = True) -> None:
    """Fit the fusion's parameters on cached member outputs (members frozen), full-batch Adam."""
    logits, features, targets = member_outputs(model, data, progress)
    fit_fusion_on_outputs(model.fusion, logits, features, targets, epochs)


def fit_fusion_on_outputs(fusion: nn.Module, logits: torch.Tensor, features: list[torch.Tensor],
                          targets: torch.Tensor, epochs: int) -> None:
    """Fit ``fusion`` on member logits ``(M, N, C)`` and features already computed: full-batch Adam."""
    fusion.train()
    optimizer = torch.optim.Adam(fusion.parameters(), lr=0.01, weight_decay=1e-4)
    for _ in range(epochs * 10):
        optimizer.zero_grad()
        loss = F.cross_entropy(fusion(logits, features), targets)
        loss.backward()
        optimizer.step()
    fusion.eval()
