"""Distillation: a teacher's outputs (cached once, or online) teach a student."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Subset

from .. import errors
from .._builder import create
from .._registry import DISTILL_LOSSES
from .._weights import write_safetensors
from ..data import eval_transform
from ..plugins import load_plugins
from ..train import Recipe, check_mixup_teacher, device_for, fit, predict_logits
from .member import init_from, train_transform_for
from .saving import Log, hold_output, save_trained
from .splits import default_val_split, open_split, open_val, train_indices, validation_of


def teacher_outputs(teacher: nn.Module, data_spec: str, split: str, indices: list[int], cache: Path,
                    key: str, progress: bool = True) -> torch.Tensor:
    """The teacher's logits on the (unaugmented) training images, computed once and cached."""
    if cache.is_file():
        stored = load_file(str(cache))
        if "key" in stored and bytes(stored["key"].tolist()).decode() == key:
            return stored["logits"]
    data = Subset(open_split(data_spec, split, eval_transform(teacher.config.input), teacher.config.label_names),
                  indices)
    teacher.to(device_for())
    logits, _ = predict_logits(teacher, data, progress=progress, desc="teacher")
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(cache, {"logits": logits.contiguous(),
                              "key": torch.tensor(list(key.encode()), dtype=torch.uint8)})
    return logits


def distill_model(teacher_spec: str, student: str, student_args: dict, data_spec: str, split: str,
                  val_split: str | None, recipe: Recipe, out_dir: str | Path, *, resume: bool = False,
                  log: Log | None = None, command: str = "", progress: bool = True, init: str | None = None,
                  grow: bool = False) -> dict:
    """Distil ``teacher_spec`` into ``student`` with ``recipe.distill_loss`` and save to ``out_dir``.

    ``init`` (a model folder or name) starts the student from those weights instead of random ones,
    e.g. to fine-tune a distilled student on a better teacher; its architecture must be the student's,
    or with ``grow`` a narrower one of it (e.g. a wider student grown from a trained narrow one). A second run
    on ``out_dir`` while this one holds it is refused (:func:`emozoo.train.lock_output`).
    """
    with hold_output(out_dir):
        return _distill_model(teacher_spec, student, student_args, data_spec, split, val_split, recipe, out_dir,
                              resume=resume, log=log, command=command, progress=progress, init=init, grow=grow)


def _distill_model(teacher_spec, student, student_args, data_spec, split, val_split, recipe, out_dir, *, resume, log,
                   command, progress, init, grow) -> dict:
    log = log or (lambda e: None)
    out_dir = Path(out_dir)
    val_split = default_val_split(split, val_split, recipe.holdout)
    load_plugins()
    loss_entry = DISTILL_LOSSES.get(recipe.distill_loss or "kd_smooth")
    try:
        loss_fn = loss_entry.factory(**recipe.distill_args)
    except TypeError as exc:
        raise errors.ConfigError(f"distillation loss {loss_entry.name!r} rejected {recipe.distill_args}: {exc}") from None
    check_mixup_teacher(recipe, recipe.teacher_online)  # before the teacher's outputs are computed for nothing
    teacher = create(teacher_spec, pretrained=True).eval()
    recipe.teacher = teacher_spec
    labels = teacher.config.label_names
    train_data = open_split(data_spec, split, label_names=labels, soft=recipe.target == "soft")
    indices = train_indices(len(train_data), recipe)
    key = hashlib.sha256(json.dumps([teacher.config.weights_sha256 or teacher_spec, data_spec, split, indices])
                         .encode()).hexdigest()
    if recipe.teacher_online:  # the teacher sees each augmented batch; nothing to cache
        logits = None
        teacher.to(device_for())
    else:
        logits = teacher_outputs(teacher, data_spec, split, indices,
                                 out_dir / "checkpoint" / "teacher_logits.safetensors", key, progress)
        teacher.cpu()
    torch.manual_seed(recipe.seed)
    model = create(student, label_names=labels, **student_args)
    if init:
        init_from(model, init, grow)
    train_data.transform = train_transform_for(model.config.input, recipe)
    val_set = (open_val(data_spec, split, val_split, recipe.holdout, eval_transform(model.config.input), labels)
               if val_split else None)
    result = fit(model, Subset(train_data, indices), val_set, recipe, out_dir, resume=resume, log=log,
                 progress=progress, teacher_logits=logits, distill_loss=loss_fn,
                 teacher=teacher if recipe.teacher_online else None)
    save_trained(model, out_dir, data_spec, split, val_split, recipe, command, result, log,
                 validation=validation_of(data_spec, split, val_split, recipe.holdout, val_set))
    return result
