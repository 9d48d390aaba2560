"""Training one model (an ensemble member or any architecture), from random weights or from others' (``--init``)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Subset

from .. import errors
from .._builder import check_model_name, create
from .._weights import grow_state_dict, state_dict_mismatch
from ..data import eval_transform, train_transform
from ..train import Recipe, fit
from .saving import Log, hold_output, save_trained
from .splits import default_val_split, open_split, open_val, train_indices, validation_of


def train_model(name: str | None, model_args: dict, data_spec: str, split: str, val_split: str | None, recipe: Recipe,
                out_dir: str | Path, *, resume: bool = False, log: Log | None = None, command: str = "",
                progress: bool = True, init: str | Sequence[str] | None = None, grow: bool = False) -> dict:
    """Train one model (an ensemble member or any architecture) and save it to ``out_dir``.

    ``init`` (a model folder or name) starts from those weights instead of random ones, e.g. to
    continue a finished run with a new learning-rate cycle; its architecture and arguments must match,
    or with ``grow`` it may be a narrower model of the architecture (see :func:`init_from`). A list of
    several starts a model with branches from one model per branch (:func:`init_branches_from`). Without
    ``name`` the model is ``init`` itself. Data with other classes than ``init``'s fine-tunes it: every
    weight but the classifier head(s) is kept (see :func:`emozoo.create`). A second run on ``out_dir`` while
    this one holds it is refused (:func:`emozoo.train.lock_output`).
    """
    with hold_output(out_dir):
        return _train_model(name, model_args, data_spec, split, val_split, recipe, out_dir, resume=resume, log=log,
                            command=command, progress=progress, init=init, grow=grow)


def _train_model(name, model_args, data_spec, split, val_split, recipe, out_dir, *, resume, log, command, progress,
                 init, grow) -> dict:
    log = log or (lambda e: None)
    if not name and not init:
        raise errors.ConfigError("name the model to train (emozoo train resnet18 ...) or give --init WEIGHTS")
    inits = [init] if isinstance(init, str) else list(init or [])
    if len(inits) > 1 and (grow or not name):
        raise errors.ConfigError("several --init start the branches of the MODEL being built (emozoo train esr "
                                 "--init A --init B ...): name the MODEL, and give them without --grow")
    init = inits[0] if len(inits) == 1 else None
    check_model_name(name or init)  # before reading any data
    val_split = default_val_split(split, val_split, recipe.holdout)
    probe = open_split(data_spec, split, soft=recipe.target == "soft")
    torch.manual_seed(recipe.seed)
    if name:
        model = create(name, label_names=probe.label_names, **model_args)
        if len(inits) > 1:
            init_branches_from(model, inits)
        elif init:
            init_from(model, init, grow)
    else:
        if model_args or grow:
            raise errors.ConfigError("--model-arg and --grow need the MODEL to build; without it --init's own "
                                     "architecture is trained")
        model = create(init, pretrained=True, label_names=probe.label_names)
    probe.transform = train_transform_for(model.config.input, recipe)
    train_set = Subset(probe, train_indices(len(probe), recipe))
    val_set = (open_val(data_spec, split, val_split, recipe.holdout, eval_transform(model.config.input),
                        model.config.label_names) if val_split else None)
    result = fit(model, train_set, val_set, recipe, out_dir, resume=resume, log=log, progress=progress)
    save_trained(model, out_dir, data_spec, split, val_split, recipe, command, result, log,
                 validation=validation_of(data_spec, split, val_split, recipe.holdout, val_set))
    return result


def train_transform_for(input_spec, recipe: Recipe):
    """Per-image augmentation in the loader, or none when the recipe augments whole batches on the device."""
    return eval_transform(input_spec) if recipe.batch_augment else train_transform(input_spec, recipe.augment)


def init_branches_from(model: nn.Module, specs: Sequence[str]) -> None:
    """Start each branch of ``model`` (a network with ``init_branches``, e.g. ``esr``) from one of the models
    ``specs`` (folders or names), in order; see :meth:`emozoo.builtins.backbones.ESR.init_branches`."""
    if not hasattr(model, "init_branches"):
        raise errors.ConfigError(f"several --init start one branch each, and {model.config.architecture} has no "
                                 "branches (esr has); give one --init")
    model.init_branches([create(spec, pretrained=True, label_names=model.config.label_names).state_dict()
                         for spec in specs])


def init_from(model: nn.Module, spec: str, grow: bool = False) -> None:
    """Load the weights of ``spec`` (a model folder or name) into ``model``, which must share its architecture.

    With ``grow`` the weights may come from a narrower model of that architecture (e.g. ``width=0.5`` into
    ``width=0.75``): :func:`emozoo._weights.grow_state_dict` widens them so that ``model`` starts out computing
    what ``spec`` does, which is checked on a random batch.
    """
    source = create(spec, pretrained=True, label_names=None if grow else model.config.label_names)
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
