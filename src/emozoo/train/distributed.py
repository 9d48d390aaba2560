"""One process or many: the device to train on, ``torch.distributed`` under torchrun, and autocast."""
from __future__ import annotations

import os

import torch


def device_for() -> torch.device:
    """The local CUDA device when there is one (under torchrun: this process's), else the CPU."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device("cuda", local)
    return torch.device("cpu")


class Dist:
    """torch.distributed when launched by torchrun, a no-op otherwise."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.item() / self.world


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on CUDA when ``enabled``; a no-op context elsewhere."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)
