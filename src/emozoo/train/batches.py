"""The training data as batches: the seeded holdout split, indexed items, preloading, per-epoch batches, mixup."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .recipe import Recipe

#: the seed of the validation split (:func:`holdout_split`): the same faces for every run, every member and every
#: fraction (a smaller fraction's holdout is a prefix of a larger one's, so --holdout 0.05 lies inside --holdout 0.1)
VALIDATION_SEED = 20210630


def holdout_split(n: int, fraction: float, seed: int = VALIDATION_SEED) -> tuple[list[int], list[int]]:
    """Deterministic (train, holdout) index lists; the same for every member of an ensemble.

    The holdout is the first ``round(n * fraction)`` indices of one seeded permutation of ``range(n)``, so it is
    the same for every run and a smaller fraction's holdout lies inside a larger one's.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = int(round(n * fraction))
    return sorted(order[k:]), sorted(order[:k])


class Indexed(Dataset):
    """Wraps a dataset so items carry their index (to look up cached teacher outputs)."""

    def __init__(self, dataset: Dataset, indices: list[int] | None = None):
        self.dataset, self.indices = dataset, indices if indices is not None else list(range(len(dataset)))

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        image, target = self.dataset[self.indices[i]]
        return image, target, i


def preload(dataset: Dataset, num_workers: int = 0, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item of ``dataset`` (in order) stacked into an image tensor and a target tensor."""
    images, targets = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        images.append(x)
        targets.append(y)
    return torch.cat(images), torch.cat(targets)


def iter_batches(data: Dataset, recipe: Recipe, per_rank: int, epoch: int, dist, device: torch.device, cached):
    """One epoch of ``(x, target, idx)`` batches on ``device``: from loader workers that augment each
    image, or, with ``recipe.batch_augment``, from ``cached`` tensors augmented batch by batch."""
    from ..data import augment_batch

    seed = recipe.seed * 100003 + epoch
    generator = torch.Generator().manual_seed(seed)
    if cached is not None:
        images, targets, input_spec = cached
        order = torch.randperm(len(images), generator=generator)[dist.rank::dist.world]
        on_device = torch.Generator(device=device).manual_seed(seed)
        for idx in order.split(per_rank):
            i = idx.to(images.device)
            yield augment_batch(images[i], input_spec, recipe.augment, on_device), targets[i], idx
        return
    if dist.world > 1:
        sampler = torch.utils.data.DistributedSampler(data, dist.world, dist.rank, shuffle=True, seed=recipe.seed)
        sampler.set_epoch(epoch)
    else:
        sampler = torch.utils.data.RandomSampler(data, generator=generator)
    loader = DataLoader(data, batch_size=per_rank, sampler=sampler, num_workers=recipe.num_workers,
                        generator=generator, persistent_workers=False, pin_memory=device.type == "cuda",
                        drop_last=False)
    for x, target, idx in loader:
        yield x.to(device, non_blocking=True), target.to(device, non_blocking=True), idx


def mix_batch(x: torch.Tensor, target: torch.Tensor, alpha: float, num_classes: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup: ``lam x + (1 - lam) x[perm]`` for one ``lam ~ Beta(alpha, alpha)`` per batch and a random
    permutation of it; the targets (class indices or distributions) become the same blend of distributions."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), device=x.device)
    y = F.one_hot(target, num_classes).float() if target.ndim == 1 else target.float()
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]
