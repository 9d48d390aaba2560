"""``create()`` and ``list_models()``: the timm-style front door of the zoo."""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from . import _hub, errors
from ._config import FERPLUS_LABELS, InputSpec, ModelConfig, WEIGHTS_NAME
from ._models import FLIP_ARCHITECTURES, TIMM_PREFIX, build_architecture, normalized_model_args
from ._pretrained import PRETRAINED, default_tag, resolve
from ._registry import BACKBONES, natural_key
from ._weights import load_weights

ENSEMBLE_ARCHS = ("emoxnet", "emoxnetlite")
LOCAL_PREFIX, HUB_PREFIX = "local-dir:", _hub.HUB_PREFIX


def list_models(pattern: str | Sequence[str] = "*", pretrained: bool = False,
                exclude: str | Sequence[str] = ()) -> list[str]:
    """Model names matching ``pattern`` (fnmatch; a list matches any), naturally sorted.

    With ``pretrained=True`` the names of published weights (``arch.tag``) are listed instead of
    architectures. ``timm/<name>`` also works in :func:`create` but is not listed here.
    """
    names = list(PRETRAINED) if pretrained else [*ENSEMBLE_ARCHS, *BACKBONES.names()]
    include = [pattern] if isinstance(pattern, str) else list(pattern)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    return sorted((n for n in names if any(fnmatch.fnmatch(n, p) for p in include)
                   and not any(fnmatch.fnmatch(n, p) for p in exclude)), key=natural_key)


def _known_names() -> list[str]:
    return [*list_models(), *PRETRAINED]


def model_spec(spec: str) -> str:
    """``spec`` with a bare folder path written as ``local-dir:PATH``; any other name is returned unchanged.

    A spec with a path separator (other than ``timm/<name>``) is a folder even when it does not exist,
    so that a mistyped path is reported as a missing folder rather than as an unknown model.
    """
    if ":" in spec or spec.startswith(TIMM_PREFIX):
        return spec
    looks_like_path = "/" in spec or "\\" in spec or spec.startswith(".")
    return f"{LOCAL_PREFIX}{spec}" if looks_like_path or Path(spec).is_dir() else spec


def check_model_name(name: str) -> None:
    """Raise :class:`UnknownModelError` unless ``name`` (``arch``, ``arch.tag`` or a prefixed name) can exist."""
    if not name.startswith((LOCAL_PREFIX, HUB_PREFIX, TIMM_PREFIX)):
        _check_architecture(name.partition(".")[0])


def _check_architecture(arch: str) -> None:
    if arch in ENSEMBLE_ARCHS or arch.startswith(TIMM_PREFIX) or arch in BACKBONES:
        return
    raise errors.UnknownModelError(arch, _known_names(),
                                   hint="`emozoo models list` shows them; timm architectures work as 'timm/<name>'.")


def create(name: str, pretrained: bool = False, *, num_classes: int | None = None, in_chans: int | None = None,
           label_names: Sequence[str] | None = None, input_size: Sequence[int] | None = None,
           revision: str | None = None, flip: bool | None = None, **kwargs: Any) -> nn.Module:
    """Create a model by name, the timm way.

    ``name`` is one of:

    - an architecture (``emoxnetlite``, ``emoxnet``, ``resnet18``, ...; see :func:`list_models`) or
      ``arch.tag`` for published weights (``emoxnetlite.ferplus``); ``pretrained=True`` on a bare
      architecture picks its default tag;
    - ``timm/<architecture>``: any timm model as a backbone (random weights);
    - ``local-dir:PATH``: a folder written by :func:`save_pretrained`;
    - ``hf-hub:ORG/NAME``: a Hugging Face Hub repo, fetched into the Hugging Face cache;
      ``hf-hub:ORG/NAME@REV`` or ``revision=`` picks a branch, tag or commit (a commit never changes).

    For ``emoxnet``, ``members=[...]`` (backbone names, ``timm/`` names or ``(name, {args})``) and
    ``fusion="mean_prob"`` (with ``fusion_args={}``) compose any ensemble, and ``flip=True`` adds
    test-time flip (each member averages the face and its mirror); for ``emoxnetlite``,
    ``student=`` picks the student backbone and ``flip=True`` averages it over the face and its
    mirror. Other keyword arguments go to the backbone factory.

    ``flip=True`` / ``flip=False`` also overrides the test-time flip stored with published or saved
    weights (same weights, twice or half the MACs; the stored metrics, measured with the other setting,
    are dropped): ``create("emoxnetlite.ferplus", pretrained=True, flip=True)`` is the student at twice
    its MACs and about half a point more accurate, ``create("emoxnet.ferplus", pretrained=True, flip=False)``
    the ensemble at half its MACs.

    The returned model carries ``model.config`` (a :class:`ModelConfig`), with ``label_names`` in
    output order and the ``input`` spec that :func:`face_transform` follows.
    """
    weights_dir, origin = None, None
    if name.startswith(LOCAL_PREFIX):
        weights_dir, origin = Path(name[len(LOCAL_PREFIX):]).expanduser(), "local folder"
        config = ModelConfig.load(weights_dir)
    elif name.startswith(HUB_PREFIX):
        repo, revision = _hub.parse_repo(name, revision)
        weights_dir = _hub.download(repo, revision)
        origin = f"Hugging Face Hub ({repo}@{weights_dir.name})"
        config = ModelConfig.load(weights_dir)
    else:
        arch, _, tag = name.partition(".")
        _check_architecture(arch)
        if pretrained and not tag:
            tag = default_tag(arch) or ""
            if not tag:
                raise errors.WeightsError(
                    f"no pretrained weights are published for {arch!r}; "
                    f"pretrained ones: {', '.join(list_models(pretrained=True)) or 'none yet'}. "
                    "Use pretrained=False to build it with random weights.")
        if tag:
            full = f"{arch}.{tag}"
            if full not in PRETRAINED:
                raise errors.UnknownModelError(full, _known_names(), hint="(unknown weights tag)")
            weights_dir, origin = resolve(PRETRAINED[full], revision)
            config = ModelConfig.load(weights_dir)
        else:
            config = _fresh_config(arch, num_classes, label_names, in_chans, input_size, kwargs)
            kwargs = {}

    if weights_dir is not None:
        if kwargs:
            raise errors.ConfigError(f"{name}: the architecture comes from its config.json; unexpected "
                                     f"arguments {sorted(kwargs)}")
        _check_overrides(config, name, num_classes, label_names, in_chans, input_size)
    if flip is not None:
        _set_flip(config, name, flip)
    try:
        model = build_architecture(config.architecture, config.num_classes, config.input.in_chans, config.model_args)
    except errors.UnknownNameError as exc:
        dist = config.requires.get(f"{exc.kind} {exc.name}")
        if dist is None:
            raise
        raise type(exc)(exc.name, exc.known, hint=f"{name} needs the plugin package {dist!r}: pip install {dist}") from None
    if pretrained and weights_dir is not None:
        load_weights(model, weights_dir / WEIGHTS_NAME, config.weights_sha256)
    model.config = config
    model.weights_origin = origin if pretrained else None
    return model


def _fresh_config(arch, num_classes, label_names, in_chans, input_size, kwargs) -> ModelConfig:
    if label_names is None:
        n = num_classes or len(FERPLUS_LABELS)
        label_names = FERPLUS_LABELS if n == len(FERPLUS_LABELS) else tuple(f"class_{i}" for i in range(n))
    elif num_classes is not None and num_classes != len(label_names):
        raise errors.ConfigError(f"num_classes={num_classes} but {len(label_names)} label_names were given")
    spec = InputSpec()
    if in_chans is not None or input_size is not None:
        spec = InputSpec(in_chans=in_chans or spec.in_chans, size=tuple(input_size or spec.size),
                         mean=spec.mean[:1], std=spec.std[:1], crop_margin=spec.crop_margin)
    return ModelConfig(architecture=arch, model_args=normalized_model_args(arch, kwargs),
                       label_names=tuple(label_names), input=spec)


def _set_flip(config: ModelConfig, name: str, flip: bool) -> None:
    if config.architecture not in FLIP_ARCHITECTURES:
        raise errors.ConfigError(
            f"{name}: flip= is an option of {' and '.join(FLIP_ARCHITECTURES)}, not of {config.architecture!r}; "
            f"for test-time flip of one backbone use create('emoxnet', members=[{config.architecture!r}], flip=True)")
    args = {k: v for k, v in config.model_args.items() if k != "flip"}
    before = bool(config.model_args.get("flip", False))
    config.model_args = normalized_model_args(config.architecture, {**args, "flip": flip})
    if before != bool(config.model_args.get("flip", False)):
        config.metrics = {}  # measured with the other setting; `emozoo eval` measures this one


def _check_overrides(config: ModelConfig, name, num_classes, label_names, in_chans, input_size) -> None:
    wrong = []
    if num_classes is not None and num_classes != config.num_classes:
        wrong.append(f"num_classes={num_classes} (weights have {config.num_classes})")
    if label_names is not None and tuple(label_names) != config.label_names:
        wrong.append(f"label_names={list(label_names)} (weights have {list(config.label_names)})")
    if in_chans is not None and in_chans != config.input.in_chans:
        wrong.append(f"in_chans={in_chans} (weights have {config.input.in_chans})")
    if input_size is not None:
        config.input.size = tuple(int(s) for s in input_size)  # conv nets run at any size
    if wrong:
        raise errors.ConfigError(
            f"{name}: {'; '.join(wrong)}. To fine-tune on other classes, create the architecture with "
            "pretrained=False and your label_names, then load the trained backbone weights.")


def face_transform(model_or_config: nn.Module | ModelConfig):
    """The callable that turns one face crop into ``model``'s input tensor ``(C, H, W)``.

    It accepts a PIL image, a uint8 ``(H, W)`` or ``(H, W, 3)`` array or a ``(C, H, W)`` tensor, and
    follows the model's ``config.input`` (channels, size, mean/std), exactly as in training and
    evaluation. Stack its outputs with ``torch.stack`` for a batch.
    """
    from .data.transforms import eval_transform

    config = model_or_config if isinstance(model_or_config, ModelConfig) else getattr(model_or_config, "config", None)
    if not isinstance(config, ModelConfig):
        raise errors.ConfigError("face_transform() needs a model made by emozoo.create() (or its ModelConfig)")
    return eval_transform(config.input)
