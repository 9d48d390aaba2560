"""Training engine shared by ``emozoo train``, ``emozoo distill`` and ``emozoo ensemble``.

One process or many: under ``torchrun`` the same code trains with DistributedDataParallel (gloo on
CPU, NCCL on CUDA). ``Recipe.batch_size`` is the global batch, split across processes, so a run has
the same number of optimizer steps whatever the process count.

A checkpoint is written after every epoch; ``resume=True`` continues from the last one with the
optimizer and RNG state restored, so an interrupted run ends exactly where an uninterrupted one does.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import errors
from ._checkpoint import CKPT_META, load_checkpoint, save_checkpoint
from .metrics import classification_metrics


@dataclass
class Recipe:
    """Hyper-parameters of one training run; stored in the trained model's ``config.json``."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    #: "soft": train on the FER+ vote distribution; "majority": on the majority label
    target: str = "soft"
    augment: str = "default"
    #: augment whole batches on the training device (:func:`emozoo.data.augment_batch`) instead of each
    #: image in loader workers; the data is decoded once and kept in memory. Much faster on a GPU.
    batch_augment: bool = False
    #: fraction of the training split held back (never trained on) for fitting learned fusions
    holdout: float = 0.0
    #: train on at most this many training images (smoke runs); 0 = all
    limit: int = 0
    seed: int = 0
    #: stochastic weight averaging (Izmailov et al. 2018): the saved model is the mean of the weights at the
    #: end of each of the last ``swa_epochs`` epochs, its BatchNorm statistics recomputed on the training
    #: images; 0 = off
    swa_epochs: int = 0
    #: with ``swa_epochs``: the learning rate held constant over those epochs (the cosine schedule of the
    #: epochs before ends there); 0 = the cosine schedule runs to the end as without averaging
    swa_lr: float = 0.0
    num_workers: int = 2
    amp: bool = True
    #: distillation only: loss name, its arguments, and the teacher
    distill_loss: str | None = None
    distill_args: dict[str, Any] = field(default_factory=dict)
    teacher: str | None = None
    #: distillation only: the teacher sees every augmented batch the student sees ("consistent teaching",
    #: Beyer et al. 2022) instead of its outputs on the unaugmented images being computed once and cached;
    #: one teacher forward per step
    teacher_online: bool = False
    #: mixup (Zhang et al. 2018): each batch is blended with a shuffled copy of itself, ``lam x + (1 - lam) x[perm]``
    #: with ``lam ~ Beta(mixup, mixup)``, and its targets alike; in distillation the teacher scores the blended
    #: images ("function matching", Beyer et al. 2022), so it needs ``teacher_online``; 0 = off
    mixup: float = 0.0

    def __post_init__(self):
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.lr > 0, "lr must be positive"),
            (self.optimizer in ("sgd", "adamw"), f"optimizer must be 'sgd' or 'adamw', not {self.optimizer!r}"),
            (self.target in ("soft", "majority"), f"target must be 'soft' or 'majority', not {self.target!r}"),
            (0 <= self.holdout < 1, "holdout must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.swa_epochs <= self.epochs, "swa_epochs must be between 0 and epochs"),
            (self.swa_lr >= 0, "swa_lr must be 0 (keep the cosine schedule) or positive"),
            (self.swa_lr == 0 or self.swa_epochs > 0, "swa_lr needs swa_epochs (the epochs it is held over)"),
            (self.mixup >= 0, "mixup must be 0 (off) or a positive Beta parameter, e.g. 0.2"),
        ]
        for ok, message in checks:
            if not ok:
                raise errors.ConfigError(f"recipe: {message}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise errors.ConfigError(f"recipe: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


def holdout_split(n: int, fraction: float, seed: int = 20210630) -> tuple[list[int], list[int]]:
    """Deterministic (train, holdout) index lists; the same for every member of an ensemble."""
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


def _batches(data: Dataset, recipe: Recipe, per_rank: int, epoch: int, dist, device: torch.device, cached):
    """One epoch of ``(x, target, idx)`` batches on ``device``: from loader workers that augment each
    image, or, with ``recipe.batch_augment``, from ``cached`` tensors augmented batch by batch."""
    from .data import augment_batch

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


def device_for() -> torch.device:
    """The local CUDA device when there is one (under torchrun: this process's), else the CPU."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device("cuda", local)
    return torch.device("cpu")


class _Dist:
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


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


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
        with _autocast(device, True):
            logits.append(model(x.to(device)).float().cpu())
        targets.append(y.argmax(1) if y.ndim == 2 else y)
    return torch.cat(logits), torch.cat(targets)


def evaluate(model: nn.Module, dataset: Dataset, label_names, batch_size: int = 256, num_workers: int = 0,
             progress: bool = False) -> dict[str, Any]:
    """Accuracy, per-class accuracy, macro-F1, ECE and confusion matrix of ``model`` on ``dataset``."""
    logits, targets = predict_logits(model, dataset, batch_size, num_workers, progress, desc="eval")
    return classification_metrics(logits.softmax(1), targets, label_names)


def lr_schedule(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate at each optimizer step: linear warm-up, then cosine decay to 0; with ``recipe.swa_lr``
    the cosine ends at that rate where the last ``swa_epochs`` begin, and it is held from there on."""
    total_steps = steps_per_epoch * recipe.epochs
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    cosine_end = total_steps - (steps_per_epoch * recipe.swa_epochs if recipe.swa_lr else 0)
    floor = recipe.swa_lr

    def lr_at(step: int) -> float:
        if step < warmup:
            return recipe.lr * (step + 1) / warmup
        if step >= cosine_end:
            return floor
        return floor + 0.5 * (recipe.lr - floor) * (1 + math.cos(math.pi * (step - warmup) / max(1, cosine_end - warmup)))

    return lr_at


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def mix_batch(x: torch.Tensor, target: torch.Tensor, alpha: float, num_classes: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup: ``lam x + (1 - lam) x[perm]`` for one ``lam ~ Beta(alpha, alpha)`` per batch and a random
    permutation of it; the targets (class indices or distributions) become the same blend of distributions."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), device=x.device)
    y = F.one_hot(target, num_classes).float() if target.ndim == 1 else target.float()
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def check_mixup_teacher(recipe: Recipe, online: bool) -> None:
    """A :class:`ConfigError` if a distillation recipe mixes batches that its teacher does not score (cached)."""
    if recipe.mixup and not online:
        raise errors.ConfigError("recipe: mixup in distillation needs the teacher to score the blended images; "
                                 "add --teacher-online (cached teacher outputs are of the unblended images)")


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset | None, recipe: Recipe, out_dir: str | Path, *,
        resume: bool = False, log: Callable[[dict], None] | None = None, progress: bool = True,
        teacher_logits: torch.Tensor | None = None, distill_loss: LossFn | None = None,
        teacher: nn.Module | None = None) -> dict[str, Any]:
    """Train ``model`` on ``train_set`` (items ``(image, target)``) and checkpoint every epoch.

    Without ``distill_loss`` the loss is cross-entropy against the target (index or distribution);
    with it, ``distill_loss(student_logits, teacher_logits[idx], target)``, or with a ``teacher`` module
    instead of cached logits, ``distill_loss(student_logits, teacher(x), target)`` on the same batch. Returns the last
    validation metrics. Only process 0 writes files and logs.

    With ``recipe.batch_augment`` the items of ``train_set`` must come un-augmented (its transform
    :func:`emozoo.data.eval_transform`): they are decoded once, kept on the device, and every batch is
    augmented there by :func:`emozoo.data.augment_batch`.
    """
    from tqdm.auto import tqdm

    if distill_loss is not None:
        check_mixup_teacher(recipe, online=teacher is not None)
    out_dir = Path(out_dir) / "checkpoint"
    dist = _Dist()
    device = device_for()
    log = log or (lambda event: None)
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    if device.type == "cuda":  # NHWC convolutions are the fast ones on tensor cores; shapes are fixed
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    num_classes = model.config.num_classes
    data = Indexed(train_set)
    per_rank = recipe.batch_size // dist.world
    if per_rank * dist.world != recipe.batch_size:
        raise errors.ConfigError(f"batch_size {recipe.batch_size} is not divisible by the {dist.world} processes")
    steps_per_epoch = math.ceil(math.ceil(len(data) / dist.world) / per_rank)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=recipe.lr)
    lr_at = lr_schedule(recipe, steps_per_epoch)

    start_epoch, step, history = 0, 0, []
    swa = WeightAverage(model) if recipe.swa_epochs else None
    if resume and (out_dir / CKPT_META).is_file():
        meta = load_checkpoint(out_dir, model, optimizer)
        if asdict(Recipe.from_dict(meta.get("recipe") or {})) != asdict(recipe):
            raise errors.ConfigError(f"{out_dir.parent}: the checkpoint was made with another recipe; resume with the "
                                     f"same options or use a new --out folder")
        start_epoch, step, history = meta["epoch"], meta["step"], meta["history"]
        if swa is not None:  # one epoch averaged per epoch finished inside the last swa_epochs
            swa.load(meta.get("extra_tensors", {}), max(0, start_epoch - (recipe.epochs - recipe.swa_epochs)))
        log({"event": "resume", "epoch": start_epoch, "step": step})
    elif (out_dir / CKPT_META).is_file() and dist.main:
        raise errors.ConfigError(f"{out_dir.parent} holds a checkpoint: pass --resume to continue it, or pick a new --out")
    ddp = (torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
           if dist.world > 1 else model)
    metrics: dict[str, Any] = history[-1]["val"] if history else {}
    cached = None
    if recipe.batch_augment:  # decode once; the training set's transform must be the plain eval one
        images, targets = preload(train_set, recipe.num_workers)
        cached = (images.to(device), targets.to(device), model.config.input)
        if val_set is not None:
            val_set = torch.utils.data.TensorDataset(*preload(val_set, recipe.num_workers))
    for epoch in range(start_epoch, recipe.epochs):
        ddp.train()
        seen = 0
        correct = torch.zeros((), device=device)  # summed on the device: no sync per step
        loss_sum = torch.zeros((), device=device)
        t0 = time.time()
        bar = tqdm(_batches(data, recipe, per_rank, epoch, dist, device, cached), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{recipe.epochs}", disable=not (progress and dist.main), leave=False,
                   dynamic_ncols=True)
        for x, target, idx in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            if recipe.mixup:
                x, target = mix_batch(x, target, recipe.mixup, num_classes)
            with _autocast(device, recipe.amp):
                logits = ddp(x).float()
            if distill_loss is not None:
                if teacher is not None:
                    with torch.no_grad(), _autocast(device, recipe.amp):
                        taught = teacher(x).float()
                else:
                    taught = teacher_logits[idx].to(device)
                loss = distill_loss(logits, taught, target)
            else:
                tgt = F.one_hot(target, num_classes).float() if target.ndim == 1 else target.float()
                if recipe.label_smoothing:
                    tgt = tgt * (1 - recipe.label_smoothing) + recipe.label_smoothing / num_classes
                loss = F.cross_entropy(logits, tgt)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            hard = target.argmax(1) if target.ndim == 2 else target
            correct += (logits.argmax(1) == hard).sum()
            seen += len(x)
            loss_sum += loss.detach() * len(x)
            if not bar.disable and step % 50 == 0:  # .item() waits for the device
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}")
        bar.close()
        loss_sum, correct = loss_sum.item(), correct.item()
        train_stats = {"loss": dist.mean(loss_sum / max(seen, 1)), "accuracy": dist.mean(correct / max(seen, 1))}
        if swa is not None and epoch >= recipe.epochs - recipe.swa_epochs:
            swa.update(model)
        if dist.main:
            metrics, summary = _validate(model, val_set)
            history.append({"epoch": epoch + 1, "step": step, "train": train_stats, "val": summary,
                            "seconds": round(time.time() - t0, 3)})
            meta = {"epoch": epoch + 1, "step": step, "history": history, "recipe": asdict(recipe),
                    "architecture": model.config.architecture, "model_args": model.config.model_args}
            save_checkpoint(out_dir, model, optimizer, meta, extra_tensors=swa.tensors() if swa is not None else None)
            log({"event": "epoch", **history[-1], "epochs": recipe.epochs,
                 "eta_seconds": round((recipe.epochs - epoch - 1) * (time.time() - t0))})
        dist.barrier()
    if swa is not None and swa.count:
        t0 = time.time()
        swa.apply(model)
        with torch.no_grad(), _autocast(device, recipe.amp):
            update_batchnorm(model, (x for x, _, _ in _batches(data, recipe, per_rank, recipe.epochs, dist, device,
                                                                 cached)))
        if dist.main:
            metrics, summary = _validate(model, val_set)
            log({"event": "swa", "epochs_averaged": swa.count, "val": summary, "seconds": round(time.time() - t0, 1)})
    return {"metrics": metrics, "history": history, "steps": step}


def _validate(model: nn.Module, val_set: Dataset | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The validation metrics (none without a validation set) and the part of them an epoch's log keeps."""
    metrics = evaluate(model, val_set, model.config.label_names, num_workers=0) if val_set is not None else {}
    return metrics, {k: v for k, v in metrics.items() if k in ("accuracy", "macro_f1", "ece")}


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
