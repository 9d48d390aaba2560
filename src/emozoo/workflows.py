"""What the training commands do, as functions: train a member, distil, build an ensemble, evaluate.

The CLI in :mod:`emozoo.cli.train` only parses options and calls these.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Subset

from . import errors
from ._builder import check_model_name, create
from ._models import architecture_cfg
from ._registry import DISTILL_LOSSES
from .builtins.emoxnet import EmoXNet
from .plugins import load_plugins
from ._weights import grow_state_dict, save_pretrained, state_dict_mismatch, write_safetensors
from .data import FER2013_SPLITS, eval_transform, open_dataset, train_transform
from .metrics import classification_metrics, plot_confusion
from .train import Recipe, _Dist, check_mixup_teacher, device_for, fit, holdout_split, predict_logits

Log = Callable[[dict], None]


def resolve_model(spec: str, pretrained: bool = True, flip: bool | None = None) -> nn.Module:
    """A model from a folder path, ``local-dir:``/``hf-hub:`` name, or a (pretrained) model name.

    ``flip`` overrides the saved test-time flip of an emoxnet / emoxnetlite (None keeps it).
    """
    return create(spec, pretrained=pretrained, flip=flip)


def open_split(spec: str, split: str, transform=None, label_names=None, soft: bool = False):
    """Open ``split`` of the data ``spec``; ``soft`` asks FER+ readers for vote distributions."""
    kwargs: dict[str, Any] = {"transform": transform, "label_names": label_names}
    if soft:
        try:
            return open_dataset(spec, split, target="soft", **kwargs)
        except TypeError:  # readers without vote distributions train on their hard labels
            pass
    return open_dataset(spec, split, **kwargs)


def open_holdout(spec: str, split: str, fraction: float, transform=None, label_names=None, soft: bool = False):
    """The part of ``split`` that members trained with ``--holdout fraction`` kept aside (the same faces for all)."""
    data = open_split(spec, split, transform, label_names, soft=soft)
    return Subset(data, holdout_split(len(data), fraction)[1])


def default_val_split(train_split: str, val_split: str | None) -> str | None:
    if val_split:
        return None if val_split == "none" else val_split
    return "PublicTest" if train_split in FER2013_SPLITS and train_split != "PublicTest" else None


def train_indices(n: int, recipe: Recipe) -> list[int]:
    """Indices a run trains on: the training split less its holdout, cut to ``recipe.limit``."""
    indices, _ = holdout_split(n, recipe.holdout)
    if recipe.limit and recipe.limit < len(indices):
        order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(recipe.seed)).tolist()
        indices = sorted(indices[i] for i in order[:recipe.limit])
    return indices


def _summary(metrics: dict, data_spec: str, split: str, out_dir) -> dict:
    """The ``metrics`` stored in ``config.json``: the split's scores and the command that reproduces them."""
    keep = ("accuracy", "macro_f1", "ece", "n", "per_class_accuracy", "members")
    return {split: {k: metrics[k] for k in keep if k in metrics},
            "command": f"emozoo eval {out_dir} --data {data_spec} --split {split}"}


def _save_final(model, out_dir, data_spec, split, val_split, recipe: Recipe, command, result, log):
    if not _Dist().main:
        return
    metrics = result["metrics"]
    save_pretrained(model, out_dir, dataset=f"{data_spec} ({split})",
                    recipe={"command": command, "split": split, **asdict(recipe), "steps": result["steps"]},
                    metrics=_summary(metrics, data_spec, val_split, out_dir) if val_split and metrics else {})
    log({"event": "done", "out": str(out_dir), "accuracy": metrics.get("accuracy"),  # None: no validation split
         "steps": result["steps"]})


def train_model(name: str, model_args: dict, data_spec: str, split: str, val_split: str | None, recipe: Recipe,
                out_dir: str | Path, *, resume: bool = False, log: Log | None = None, command: str = "",
                progress: bool = True, init: str | None = None, grow: bool = False) -> dict:
    """Train one model (an ensemble member or any architecture) and save it to ``out_dir``.

    ``init`` (a model folder or name) starts from those weights instead of random ones, e.g. to
    continue a finished run with a new learning-rate cycle; its architecture and arguments must match,
    or with ``grow`` it may be a narrower model of the architecture (see :func:`_init_from`).
    """
    log = log or (lambda e: None)
    check_model_name(name)  # before reading any data
    val_split = default_val_split(split, val_split)
    probe = open_split(data_spec, split, soft=recipe.target == "soft")
    torch.manual_seed(recipe.seed)
    model = create(name, label_names=probe.label_names, **model_args)
    if init:
        _init_from(model, init, grow)
    probe.transform = _train_transform(model.config.input, recipe)
    train_set = Subset(probe, train_indices(len(probe), recipe))
    val_set = (open_split(data_spec, val_split, eval_transform(model.config.input), model.config.label_names)
               if val_split else None)
    result = fit(model, train_set, val_set, recipe, out_dir, resume=resume, log=log, progress=progress)
    _save_final(model, out_dir, data_spec, split, val_split, recipe, command, result, log)
    return result


def _train_transform(input_spec, recipe: Recipe):
    """Per-image augmentation in the loader, or none when the recipe augments whole batches on the device."""
    return eval_transform(input_spec) if recipe.batch_augment else train_transform(input_spec, recipe.augment)


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
    or with ``grow`` a narrower one of it (e.g. a wider student grown from a trained narrow one).
    """
    log = log or (lambda e: None)
    out_dir = Path(out_dir)
    val_split = default_val_split(split, val_split)
    load_plugins()
    loss_entry = DISTILL_LOSSES.get(recipe.distill_loss or "kd_smooth")
    try:
        loss_fn = loss_entry.factory(**recipe.distill_args)
    except TypeError as exc:
        raise errors.ConfigError(f"distillation loss {loss_entry.name!r} rejected {recipe.distill_args}: {exc}") from None
    check_mixup_teacher(recipe, recipe.teacher_online)  # before the teacher's outputs are computed for nothing
    teacher = resolve_model(teacher_spec).eval()
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
        _init_from(model, init, grow)
    train_data.transform = _train_transform(model.config.input, recipe)
    val_set = (open_split(data_spec, val_split, eval_transform(model.config.input), labels) if val_split else None)
    result = fit(model, Subset(train_data, indices), val_set, recipe, out_dir, resume=resume, log=log,
                 progress=progress, teacher_logits=logits, distill_loss=loss_fn,
                 teacher=teacher if recipe.teacher_online else None)
    _save_final(model, out_dir, data_spec, split, val_split, recipe, command, result, log)
    return result


def _init_from(model: nn.Module, spec: str, grow: bool = False) -> None:
    """Load the weights of ``spec`` (a model folder or name) into ``model``, which must share its architecture.

    With ``grow`` the weights may come from a narrower model of that architecture (e.g. ``width=0.5`` into
    ``width=0.75``): :func:`emozoo._weights.grow_state_dict` widens them so that ``model`` starts out computing
    what ``spec`` does, which is checked on a random batch.
    """
    source = resolve_model(spec)
    theirs = source.state_dict()
    if grow:
        if source.config.architecture != model.config.architecture:
            raise errors.ConfigError(f"--init {spec} --grow: it is a {source.config.architecture}, the model being "
                                     f"trained a {model.config.architecture}; grow within one architecture")
        model.load_state_dict(grow_state_dict(theirs, model.state_dict()))
        x = torch.randn(4, model.config.input.in_chans, *model.config.input.size)
        was_training = model.training
        with torch.no_grad():
            same = torch.allclose(source.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-4)
        model.train(was_training)
        if not same:
            raise errors.ConfigError(f"--init {spec} --grow: the widened model does not compute what {spec} does "
                                     "(it has layers that mix channels, such as LayerNorm over channels); "
                                     "train it from random weights instead")
        return
    mismatch = state_dict_mismatch(model.state_dict(), theirs)
    if mismatch:
        raise errors.ConfigError(f"--init {spec}: its weights ({source.config.architecture} {source.config.model_args}) "
                                 f"do not fit the model being trained: {mismatch}; give weights of the same "
                                 "architecture and arguments (or --grow for a narrower model of it)")
    model.load_state_dict(theirs)


def _as_member(config) -> dict:
    return architecture_cfg(config.architecture).member_of(config.architecture, config.model_args)


def assemble_ensemble(members: list[nn.Module], fusion: str = "mean_logit", fusion_args: dict | None = None, *,
                      flip: bool = False, names: list[str] | None = None) -> EmoXNet:
    """An EmoXNet holding the trained ``members`` (their weights copied), with an untrained ``fusion``.

    The members must share labels and input spec; ``names`` (e.g. their folders) label them in the error.
    """
    names = names or [f"member {i}" for i in range(len(members))]
    first = members[0].config
    for name, m in zip(names, members):
        if m.config.label_names != first.label_names or m.config.input != first.input:
            raise errors.ConfigError(f"{name}: its labels or input spec differ from {names[0]}'s; "
                                     "ensemble members must share both")
    model = create("emoxnet", members=[_as_member(m.config) for m in members], fusion=fusion,
                   fusion_args=fusion_args or {}, flip=flip, label_names=first.label_names)
    model.config.input = first.input
    for slot, member in zip(model.members, members):
        slot.load_state_dict(member.state_dict())
    return model


def shared_holdout(members: list[nn.Module]) -> float | None:
    """The training holdout fraction every member kept aside, or None if they differ or kept none."""
    holdouts = {m.config.recipe.get("holdout", 0.0) for m in members}
    return holdouts.pop() if len(holdouts) == 1 and next(iter(holdouts)) > 0 else None


def build_ensemble(member_dirs: list[str], fusion: str, fusion_args: dict, out_dir: str | Path, data_spec: str,
                   fit_split: str, val_split: str | None, fit_epochs: int = 30, *, flip: bool = False,
                   log: Log | None = None, command: str = "", progress: bool = True) -> dict:
    """Combine trained members into an EmoXNet, fit a learned fusion on held-back data, evaluate, save.

    ``flip=True`` makes every member average its outputs over the image and its mirror (at fitting,
    evaluation and inference alike).
    """
    log = log or (lambda e: None)
    members = [resolve_model(d) for d in member_dirs]
    first = members[0].config
    model = assemble_ensemble(members, fusion, fusion_args, flip=flip, names=[str(d) for d in member_dirs])
    member_holdouts = [m.config.recipe.get("holdout", 0.0) for m in members]
    recipe: dict[str, Any] = {"command": command, "members": [str(d) for d in member_dirs], "fusion": fusion,
                              "flip": flip, "member_holdouts": member_holdouts}
    if getattr(model.fusion, "trainable", False):
        holdout = shared_holdout(members)
        if holdout is None:
            raise errors.ConfigError(
                f"fusion {fusion!r} must be fitted on data the members never saw, but the members were trained "
                f"with holdout fractions {sorted(set(member_holdouts))}. "
                "Train every member with the same --holdout (e.g. 0.05), or use mean_prob / mean_logit / majority_vote.")
        held = open_holdout(data_spec, fit_split, holdout, eval_transform(first.input), first.label_names, soft=True)
        recipe.update(fit_split=fit_split, holdout=holdout, fit_epochs=fit_epochs, fit_images=len(held))
        fit_fusion(model, held, fit_epochs, progress)
    val_split = default_val_split(fit_split, val_split)
    metrics = {}
    if val_split:
        result = evaluate_model(model, data_spec, val_split, members=True, progress=progress)
        metrics = _summary(result, data_spec, val_split, out_dir)
    save_pretrained(model, out_dir, dataset=f"{data_spec} ({fit_split})", recipe=recipe, metrics=metrics)
    log({"event": "done", "out": str(out_dir), "accuracy": metrics.get(val_split, {}).get("accuracy")})
    return {"out": str(out_dir), "metrics": metrics, "recipe": recipe}


def unpack_ensemble(spec: str, out_dir: str | Path, *, command: str = "", overwrite: bool = False) -> list[Path]:
    """Write each member of the EmoXNet ``spec`` as a model folder of its own, ``out_dir/<i>_<backbone>``.

    The folders load like any trained backbone: ``emozoo eval`` scores a member alone, ``emozoo train
    --init`` gives it a new learning-rate cycle, and ``emozoo ensemble`` rebuilds an ensemble from them.
    Weights are written in float32 whatever the ensemble stores. Each member's ``holdout`` is kept where
    the ensemble recorded it (``emozoo ensemble`` does). A member folder that already holds a model is
    an error before anything is written, unless ``overwrite`` is true.
    """
    model = resolve_model(spec)
    if not isinstance(model, EmoXNet):
        raise errors.ConfigError(f"{spec} is a {model.config.architecture}, not an emoxnet; only an ensemble "
                                 "has members to unpack")
    out_dir = Path(out_dir)
    targets = [out_dir / f"{i}_{name}" for i, name in enumerate(model.member_names)]
    taken = [str(t) for t in targets if (t / "config.json").exists() or (t / "model.safetensors").exists()]
    if taken and not overwrite:
        raise errors.ConfigError(f"{', '.join(taken)} already hold{'s' if len(taken) == 1 else ''} a model; "
                                 "pass --force to overwrite, or pick a new --out")
    holdouts = model.config.recipe.get("member_holdouts")  # what each member held back (emozoo ensemble records it)
    written = []
    for i, (name, target, spec_i, member) in enumerate(zip(model.member_names, targets,
                                                           model.config.model_args["members"], model.members)):
        single = create(name, label_names=model.config.label_names, **spec_i["args"])
        single.config.input = model.config.input
        single.load_state_dict(member.state_dict())
        recipe = {"command": command, "unpacked_from": spec, "member": i, "ensemble_recipe": model.config.recipe}
        if holdouts:  # kept, so that a learned fusion can still be fitted over the unpacked members
            recipe["holdout"] = holdouts[i]
        written.append(save_pretrained(single, target, dataset=model.config.dataset,
                                       recipe=recipe, license=model.config.license))
    return written


@torch.no_grad()
def _member_outputs(model: EmoXNet, data, progress: bool, batch_size: int = 256):
    """Every member's logits ``(M, N, C)`` and features over ``data`` in one pass, and the targets (on the CPU)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    home, device = next(model.parameters()).device, device_for()
    model.eval().to(device)  # on the GPU when there is one; the outputs come back to the CPU
    logits, features, targets = [], [], []
    try:
        for x, y in tqdm(DataLoader(data, batch_size=batch_size), desc="members", disable=not progress, leave=False):
            z, f = model.forward_members(x.to(device))
            logits.append(z.float().cpu())
            features.append([t.float().cpu() for t in f])
            targets.append(y)
    finally:
        model.to(home)
    return (torch.cat(logits, 1), [torch.cat([f[i] for f in features]) for i in range(len(model.members))],
            torch.cat(targets))


def fit_fusion(model: EmoXNet, data, epochs: int, progress: bool = True) -> None:
    """Fit the fusion's parameters on cached member outputs (members frozen), full-batch Adam."""
    logits, features, targets = _member_outputs(model, data, progress)
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


@torch.no_grad()
def evaluate_model(model: str | nn.Module, data_spec: str, split: str, *, batch_size: int = 256,
                   members: bool = True, plot: str | None = None, progress: bool = True,
                   backend: str = "eager", flip: bool | None = None) -> dict:
    """Score a model under its dataset's protocol; for an EmoXNet also each member.

    ``flip`` turns test-time flip on or off when ``model`` is a name or folder of an emoxnet or
    emoxnetlite (``None``: as saved); the result still carries the name as given.

    ``backend="onnx"`` or ``"int8"`` scores the model exported to ONNX (int8: statically quantized,
    calibrated on the data's training split) and run by ONNX Runtime; members are then not scored, and
    ``eager_accuracy`` and ``accuracy_change`` compare it with the PyTorch model on the same images.
    """
    name = model if isinstance(model, str) else (model.config.name or model.config.architecture)
    if isinstance(model, str):
        model = resolve_model(model, flip=flip)
    elif flip is not None:
        raise errors.ConfigError("flip= applies to a model given by name or folder; build the module with it instead")
    model.eval()
    reference = model
    if backend != "eager":
        from .export import onnx_model

        if backend not in ("onnx", "int8"):
            raise errors.ConfigError(f"unknown backend {backend!r}; choose eager, onnx or int8")
        model = onnx_model(model, int8=backend == "int8", data_spec=data_spec)
    data = open_split(data_spec, split, eval_transform(model.config.input), model.config.label_names)
    member_logits = None
    if isinstance(model, EmoXNet):
        member_logits, features, targets = _member_outputs(model, data, progress, batch_size)
        fused = model.fusion(member_logits, features)
    else:
        fused, targets = predict_logits(model, data, batch_size, progress=progress, desc="eval")
    labels = model.config.label_names
    result = {"model": name, "data": data_spec, "split": split, "backend": backend,
              "flip": bool(model.config.model_args.get("flip", False)),
              **classification_metrics(fused.softmax(1), targets, labels)}
    if backend != "eager":
        eager, _ = predict_logits(reference, data, batch_size, progress=progress, desc="eval eager")
        result["eager_accuracy"] = (eager.argmax(1) == targets).float().mean().item()
        result["accuracy_change"] = result["accuracy"] - result["eager_accuracy"]
    if member_logits is not None and members:
        result["members"] = {f"{i}:{n}": (member_logits[i].argmax(1) == targets).float().mean().item()
                             for i, n in enumerate(model.member_names)}
    if plot:
        plot_confusion(result["confusion"], labels, plot,
                       title=f"{name} on {split}: accuracy {result['accuracy']:.4f}")
    return result
