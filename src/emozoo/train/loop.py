"""The training loop (:func:`fit`): optimizer, schedule, checkpoints every epoch, resume, distillation, SWA."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .. import errors
from .._checkpoint import has_checkpoint, load_checkpoint, recover_checkpoint, save_checkpoint
from ..data.transforms import corrupt_batch
from .averaging import WeightAverage, update_batchnorm
from .batches import Indexed, iter_batches, mix_batch, preload
from .distributed import Dist, autocast, device_for
from .evaluate import evaluate
from .recipe import Recipe, check_mixup_teacher
from .schedule import lr_schedule

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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
    dist = Dist()
    device = device_for()
    log = log or (lambda event: None)
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    if device.type == "cuda":  # NHWC convolutions are the fast ones on tensor cores; shapes are fixed
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    num_classes = model.config.num_classes
    _return_branches(model, True)
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
    if dist.main:
        recover_checkpoint(out_dir)  # finish a save a kill interrupted; remove partial files
    dist.barrier()
    found = has_checkpoint(out_dir)
    if resume and found:
        meta = load_checkpoint(out_dir, model, optimizer)
        if asdict(Recipe.from_dict(meta.get("recipe") or {})) != asdict(recipe):
            raise errors.ConfigError(f"{out_dir.parent}: the checkpoint was made with another recipe; resume with the "
                                     f"same options or use a new --out folder")
        start_epoch, step, history = meta["epoch"], meta["step"], meta["history"]
        if swa is not None:  # one epoch averaged per epoch finished inside the last swa_epochs
            swa.load(meta.get("extra_tensors", {}), max(0, start_epoch - (recipe.epochs - recipe.swa_epochs)))
        log({"event": "resume", "epoch": start_epoch, "step": step})
    elif found and dist.main:
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
        bar = tqdm(iter_batches(data, recipe, per_rank, epoch, dist, device, cached), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{recipe.epochs}", disable=not (progress and dist.main), leave=False,
                   dynamic_ncols=True)
        corrupting = torch.Generator(device=device).manual_seed(recipe.seed * 100003 + epoch + 7)
        for x, target, idx in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            if recipe.mixup:
                x, target = mix_batch(x, target, recipe.mixup, num_classes)
            clean = x
            if recipe.corrupt:  # the student sees the corrupted image, an online teacher the clean one
                x = corrupt_batch(x, model.config.input, recipe.corrupt, corrupting)
            with autocast(device, recipe.amp):
                out = ddp(x).float()
            logits = out.mean(1) if out.ndim == 3 else out  # (B, branches, classes) from a multi-branch net
            if distill_loss is not None:
                if teacher is not None:
                    with torch.no_grad(), autocast(device, recipe.amp):
                        taught = teacher(clean).float()
                else:
                    taught = teacher_logits[idx].to(device)
                loss = branch_mean(out, distill_loss, taught, target)
            else:
                tgt = F.one_hot(target, num_classes).float() if target.ndim == 1 else target.float()
                if recipe.label_smoothing:
                    tgt = tgt * (1 - recipe.label_smoothing) + recipe.label_smoothing / num_classes
                loss = branch_mean(out, F.cross_entropy, tgt)
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
        with torch.no_grad(), autocast(device, recipe.amp):
            update_batchnorm(model, (x for x, _, _ in iter_batches(data, recipe, per_rank, recipe.epochs, dist, device,
                                                                 cached)))
        if dist.main:
            metrics, summary = _validate(model, val_set)
            log({"event": "swa", "epochs_averaged": swa.count, "val": summary, "seconds": round(time.time() - t0, 1)})
    _return_branches(model, False)
    return {"metrics": metrics, "history": history, "steps": step}


def branch_mean(out: torch.Tensor, loss_fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    """``loss_fn(out, *args)``; for a multi-branch network's ``(B, branches, classes)`` the mean of each branch's."""
    return loss_fn(out, *args) if out.ndim == 2 else sum(loss_fn(b, *args) for b in out.unbind(1)) / out.shape[1]


def _return_branches(model: nn.Module, on: bool) -> None:
    """Networks with several heads (``esr``) give every head's logits in training, so each gets its own loss."""
    for module in model.modules():
        if hasattr(module, "return_branches"):
            module.return_branches = on


def _validate(model: nn.Module, val_set: Dataset | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The validation metrics (none without a validation set) and the part of them an epoch's log keeps."""
    metrics = evaluate(model, val_set, model.config.label_names, num_workers=0) if val_set is not None else {}
    return metrics, {k: v for k, v in metrics.items() if k in ("accuracy", "macro_f1", "ece")}
