"""``create()`` and ``list_models()``: the timm-style front door of the zoo, and its one loader.

Every way of naming a model goes through :func:`create`: an architecture, ``arch.tag`` weights, a
folder written by :func:`emozoo.save_pretrained` (a path, ``pathlib.Path`` or ``local-dir:PATH``),
``hf-hub:ORG/NAME[@REV]`` and ``timm/<name>``. A model's ``config.json`` is parsed once and its
weights hashed once per call.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import _hub, errors
from ._config import CONFIG_NAME, WEIGHTS_NAME, InputSpec, ModelConfig, check_label_names
from ._models import TIMM_PREFIX, ArchitectureCfg, architecture_cfg, build_architecture
from ._pretrained import published, resolve
from ._registry import ARCHITECTURES, natural_key
from ._weights import finish_interrupted_save, read_weights, sha256_file, state_dict_mismatch
from .plugins import load_plugins

LOCAL_PREFIX, HUB_PREFIX = "local-dir:", _hub.HUB_PREFIX
log = logging.getLogger("emozoo")


def list_models(pattern: str | Sequence[str] = "*", pretrained: bool = False,
                exclude: str | Sequence[str] = ()) -> list[str]:
    """Model names matching ``pattern`` (fnmatch; a list matches any), naturally sorted.

    With ``pretrained=True`` the names of published weights (``arch.tag``) are listed instead of
    architectures. ``timm/<name>`` also works in :func:`create` but is not listed here.
    """
    load_plugins()
    names = list(published()) if pretrained else ARCHITECTURES.names()
    include = [pattern] if isinstance(pattern, str) else list(pattern)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    return sorted((n for n in names if any(fnmatch.fnmatch(n, p) for p in include)
                   and not any(fnmatch.fnmatch(n, p) for p in exclude)), key=natural_key)


def _known_names() -> list[str]:
    return [*list_models(), *published()]


def as_folder(spec: str | os.PathLike) -> Path | None:
    """The model folder that ``spec`` names, or ``None`` when it names a model, weights or a Hub repo.

    A ``pathlib.Path``, ``local-dir:PATH``, a name with a path separator (other than ``timm/<name>``),
    one starting with ``.`` or ``~``, or an existing folder is a folder, even when it does not exist, so
    that a mistyped path is reported as a missing folder rather than as an unknown model. A bare model
    name (``esr``, ``emoxnet.ferplus``) stays the model when a folder of that name in the working directory
    holds no ``config.json``: only a saved model takes a model's name over (``local-dir:esr`` forces it).
    """
    if isinstance(spec, os.PathLike):
        return Path(spec).expanduser()
    if spec.startswith(LOCAL_PREFIX):
        return Path(spec[len(LOCAL_PREFIX):]).expanduser()
    if ":" in spec or spec.startswith(TIMM_PREFIX):
        return None
    if "/" in spec or "\\" in spec or spec.startswith((".", "~")):
        return Path(spec).expanduser()
    if Path(spec).is_dir():
        return Path(spec) if (Path(spec) / CONFIG_NAME).is_file() or not _names_a_model(spec) else None
    return None


def _names_a_model(name: str) -> bool:
    """Whether ``name`` is a registered architecture or published weights (``arch`` or ``arch.tag``)."""
    load_plugins()
    return name in ARCHITECTURES or name in published()


def check_model_name(name: str | os.PathLike) -> None:
    """Raise :class:`UnknownModelError` unless ``name`` (``arch``, ``arch.tag``, a folder or a prefixed
    name) can exist; cheap, so commands call it before reading any data."""
    load_plugins()
    if as_folder(name) is None and not str(name).startswith(HUB_PREFIX):
        _architecture(str(name).partition(".")[0])


def _architecture(arch: str) -> ArchitectureCfg:
    if arch.startswith(TIMM_PREFIX) or arch in ARCHITECTURES:
        return architecture_cfg(arch)
    raise errors.UnknownModelError(arch, _known_names(),
                                   hint="`emozoo models list` shows them; timm architectures work as 'timm/<name>'.")


def create(name: str | os.PathLike, pretrained: bool = False, *, num_classes: int | None = None,
           in_chans: int | None = None, label_names: Sequence[str] | None = None,
           input_size: Sequence[int] | None = None, revision: str | None = None, flip: bool | None = None,
           **kwargs: Any) -> nn.Module:
    """Create a model by name or load a saved one: the one loader of emozoo, as timm's ``create_model``.

    ``name`` is one of:

    - an architecture (``emoxnetlite``, ``emoxnet``, ``resnet18``, ...; see :func:`list_models`) or
      ``arch.tag`` for published weights (``emoxnetlite.ferplus``); ``pretrained=True`` on a bare
      architecture picks its default tag;
    - ``timm/<architecture>``: any timm model as a backbone (random weights);
    - a folder written by :func:`save_pretrained`: a path string, a ``pathlib.Path`` or ``local-dir:PATH``;
    - ``hf-hub:ORG/NAME``: a Hugging Face Hub repo, fetched into the Hugging Face cache;
      ``hf-hub:ORG/NAME@REV`` or ``revision=`` picks a branch, tag or commit (a commit never changes).

    For ``emoxnet``, ``members=[...]`` (backbone names, ``timm/`` names or ``(name, {args})``) and
    ``fusion="mean_prob"`` (with ``fusion_args={}``) compose any ensemble; for ``emoxnetlite``,
    ``student=`` picks the student backbone. Other keyword arguments go to the architecture's builder.

    ``flip=True`` / ``flip=False`` sets the test-time flip of an architecture that takes one (its
    :class:`ArchitectureCfg` says so), also over the setting stored with weights (same weights, twice or
    half the MACs; the stored metrics, measured with the other setting, are dropped).

    **Fine-tuning, the timm way**: with weights, ``num_classes=N`` or ``label_names=[...]`` naming other
    classes loads every weight except the classifier head(s), which start fresh (for an EmoXNet each
    member's head and the fusion), and logs one line saying so.

    The returned model carries ``model.config`` (a :class:`ModelConfig`), with ``label_names`` in
    output order and the ``input`` spec that :func:`face_transform` follows.
    """
    load_plugins()
    _check_arguments(num_classes, label_names, in_chans, input_size)
    weights_dir, origin, in_cache = None, None, False
    folder = as_folder(name)
    name = str(name) if folder is None else str(folder)
    if folder is not None:
        weights_dir, origin, in_cache = folder, "local folder", _hub.is_cached(folder)
    elif name.startswith(HUB_PREFIX):
        repo, revision = _hub.parse_repo(name, revision)
        weights_dir, in_cache = _hub.download(repo, revision), True
        origin = f"Hugging Face Hub ({repo}@{weights_dir.name})"
    else:
        arch, _, tag = name.partition(".")
        cfg = _architecture(arch)
        if pretrained and not tag:
            tag = cfg.default_tag or ""
            if not tag:
                raise errors.WeightsError(
                    f"no pretrained weights are published for {arch!r}; "
                    f"pretrained ones: {', '.join(list_models(pretrained=True)) or 'none yet'}. "
                    "Use pretrained=False to build it with random weights.")
        if tag:
            if tag not in cfg.pretrained:
                raise errors.UnknownModelError(f"{arch}.{tag}", _known_names(), hint="(unknown weights tag)")
            weights_dir, origin, in_cache = resolve(f"{arch}.{tag}", cfg.pretrained[tag], revision)
        else:
            config = _fresh_config(arch, cfg, num_classes, label_names, in_chans, input_size, kwargs)
            kwargs = {}

    new_labels = None
    if weights_dir is not None:
        if not in_cache:  # a local folder: finish a save_pretrained a kill interrupted between its two renames
            finish_interrupted_save(weights_dir)
        config = _checked_config(weights_dir, in_cache)
        if kwargs:
            raise errors.ConfigError(f"{name}: the architecture comes from its config.json; unexpected "
                                     f"arguments {sorted(kwargs)}")
        new_labels = _new_labels(config, name, num_classes, label_names)
        _check_overrides(config, name, in_chans, input_size)
    if flip is not None:
        _set_flip(config, name, flip)
    source_config = config
    if new_labels is not None:
        config = _relabelled(config, new_labels)
    model = _build(config, name)
    if pretrained and weights_dir is not None:
        state = _checked_state(weights_dir, source_config, in_cache, origin)
        if new_labels is None:
            _load(model, state, weights_dir)
        else:
            _load_except_head(model, config, state, weights_dir, name)
    model.config = config
    model.weights_origin = origin if pretrained else None
    #: the folder whose model.safetensors the model holds unchanged (None: random or re-headed weights)
    model.weights_dir = weights_dir if pretrained and new_labels is None else None
    return model


#: the most parameters a model may have (``EMOZOO_MAX_PARAMS`` raises it): a config asking for more is a typo
#: (``width: 512``) that would allocate tens of gigabytes before failing
MAX_PARAMS = 500_000_000


def _check_arguments(num_classes, label_names, in_chans, input_size) -> None:
    """The keyword arguments of :func:`create` that no model can take, as one-line ConfigErrors."""
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
        raise errors.ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if label_names is not None:
        check_label_names(label_names)
    if in_chans is not None and in_chans not in (1, 3):
        raise errors.ConfigError(f"in_chans must be 1 or 3, got {in_chans!r}")
    if input_size is not None:
        if isinstance(input_size, (str, bytes)) or not isinstance(input_size, Sequence):
            raise errors.ConfigError(f"input_size must be (height, width), got {input_size!r}")
        InputSpec(size=tuple(input_size))  # validates the sizes


#: what a model-args option cannot set, and where it is set instead
_NOT_MODEL_ARGS = {
    "name": "name the model as the command's argument",
    "pretrained": "name published weights (arch.tag) or a folder, or start from weights with --init",
    "revision": "pin a Hub revision in the name (hf-hub:ORG/NAME@REV)",
    "label_names": "the classes come from the data (--data), and the model is built for them",
    "flip": "use the command's --flip / --no-flip",
    "in_chans": "use --input-size CxHxW",
    "input_size": "use --input-size CxHxW",
}


def check_model_arg_names(args: dict[str, Any], option: str, reserved: Sequence[str]) -> None:
    """Refuse the keys of ``args`` (given with ``option``, e.g. ``--model-arg``) that are :func:`create`'s own
    arguments the command sets itself (``reserved``), with a one-line ConfigError saying where they go."""
    for key in args:
        if key in reserved:
            raise errors.ConfigError(f"{option} {key}=...: {key} is not an argument of the architecture; "
                                     f"{_NOT_MODEL_ARGS.get(key, 'the command sets it')}")


def _max_params() -> int:
    value = os.environ.get("EMOZOO_MAX_PARAMS", "")
    try:
        return int(float(value)) if value else MAX_PARAMS
    except ValueError:
        raise errors.ConfigError(f"EMOZOO_MAX_PARAMS must be a number of parameters, got {value!r}") from None


def _check_size(config: ModelConfig, name: str) -> None:
    """Refuse a model over the parameter budget, measured on the meta device (no memory) before it is built."""
    try:
        with torch.device("meta"):
            model = build_architecture(config.architecture, config.num_classes, config.input.in_chans,
                                       config.model_args)
    except Exception:  # noqa: BLE001 - the real build below reports any failure (or runs where meta cannot)
        return
    params, limit = sum(p.numel() for p in model.parameters()), _max_params()
    if params > limit:
        raise errors.ConfigError(
            f"{name}: {config.architecture} with model_args {config.model_args} would have {params:,} parameters, "
            f"over emozoo's limit of {limit:,} (EMOZOO_MAX_PARAMS); check the arguments (a width or size typo?)")


def _build(config: ModelConfig, name: str) -> nn.Module:
    try:
        _check_size(config, name)
        return build_architecture(config.architecture, config.num_classes, config.input.in_chans, config.model_args)
    except errors.UnknownNameError as exc:
        needed = [(key.partition(" ")[0], dist) for key, dist in config.requires.items()
                  if key.partition(" ")[2] == exc.name]
        if not needed:
            raise
        kind, dist = needed[0]
        error = {"backbone": errors.UnknownBackboneError, "fusion": errors.UnknownFusionError}.get(kind, type(exc))
        raise error(exc.name, exc.known, hint=f"{name} needs the plugin package {dist!r}: pip install {dist}") from None


_RETRY = "the copy was removed from the Hugging Face cache; try again"


def _checked_config(weights_dir: Path, in_cache: bool) -> ModelConfig:
    """The config of ``weights_dir``; in the Hugging Face cache, one that does not parse (an HTML page a proxy
    or captive portal answered with 200, a truncated file) is evicted with the weights beside it, so the
    snapshot never counts as cached and the next load downloads it again."""
    try:
        return ModelConfig.load(weights_dir)
    except errors.ConfigError as exc:
        if not in_cache:
            raise
        _hub.evict(weights_dir, (CONFIG_NAME, WEIGHTS_NAME, _hub.CARD_NAME))
        raise errors.ConfigError(f"{exc}; {_RETRY} (if it persists, check HF_ENDPOINT and your proxy, "
                                 "or the repo itself is broken)") from None


def _checked_state(weights_dir: Path, config: ModelConfig, in_cache: bool, origin: str) -> dict[str, torch.Tensor]:
    """The weights of ``weights_dir``, hashed once against ``config.weights_sha256``; a corrupt or unreadable
    copy in the Hugging Face cache is evicted, so the next try downloads it again."""
    path = weights_dir / WEIGHTS_NAME
    expected = config.weights_sha256
    if not (in_cache and path.is_file()):
        return read_weights(path, expected)
    if not expected:
        try:
            return read_weights(path)
        except errors.WeightsError as exc:
            _hub.evict(weights_dir)
            raise errors.WeightsError(f"{origin}: {exc}; {_RETRY}") from None
    if sha256_file(path) != expected:
        _hub.evict(weights_dir)
        raise errors.WeightsError(
            f"{origin}: the downloaded {WEIGHTS_NAME} does not have the sha256 {expected} that its config.json "
            "records; the corrupt copy was removed from the cache. Try again; if it persists, the repo itself "
            "is inconsistent and must be pushed again.")
    return read_weights(path)


def _load(model: nn.Module, state: dict[str, torch.Tensor], weights_dir: Path) -> None:
    own = model.state_dict()
    mismatch = state_dict_mismatch(own, state)
    if mismatch:
        raise errors.WeightsError(f"{weights_dir / WEIGHTS_NAME} does not match the architecture in config.json: "
                                  f"{mismatch}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def head_keys(model: nn.Module, config: ModelConfig) -> set[str]:
    """The state-dict keys of ``model``'s classifier head(s): the tensors whose shape follows the number of
    classes (found by building the architecture for one more class on the meta device, no memory) and
    those under its :class:`ArchitectureCfg`'s ``fresh`` prefixes (an ensemble's fusion)."""
    with torch.device("meta"):
        twin = build_architecture(config.architecture, config.num_classes + 1, config.input.in_chans,
                                  config.model_args).state_dict()
    own = model.state_dict()
    fresh = architecture_cfg(config.architecture).fresh
    return {k for k, v in own.items() if (k in twin and twin[k].shape != v.shape) or (fresh and k.startswith(fresh))}


def _load_except_head(model: nn.Module, config: ModelConfig, state: dict[str, torch.Tensor], weights_dir: Path,
                      name: str) -> None:
    head = head_keys(model, config)
    own = model.state_dict()
    body = {k: v for k, v in state.items() if k not in head}
    mismatch = state_dict_mismatch({k: v for k, v in own.items() if k not in head}, body)
    if mismatch:
        raise errors.WeightsError(f"{weights_dir / WEIGHTS_NAME} does not match the architecture in config.json: "
                                  f"{mismatch}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in body.items()}, strict=False)
    log.info("%s: loaded %d of %d tensors; the classifier head(s) (%s) start fresh for %d classes: %s",
             name, len(body), len(own), ", ".join(sorted({k.rsplit(".", 1)[0] for k in head})),
             config.num_classes, ", ".join(config.label_names))


def _fresh_config(arch: str, cfg: ArchitectureCfg, num_classes, label_names, in_chans, input_size,
                  kwargs) -> ModelConfig:
    if label_names is None:
        n = num_classes or len(cfg.label_names)
        label_names = cfg.label_names if n == len(cfg.label_names) else tuple(f"class_{i}" for i in range(n))
    elif num_classes is not None and num_classes != len(label_names):
        raise errors.ConfigError(f"num_classes={num_classes} but {len(label_names)} label_names were given")
    spec = cfg.input
    if in_chans is not None or input_size is not None:
        spec = InputSpec(in_chans=in_chans or spec.in_chans, size=tuple(input_size or spec.size),
                         mean=spec.mean[:1], std=spec.std[:1], crop_margin=spec.crop_margin)
    else:
        spec = dataclasses.replace(spec)  # each model owns its spec
    return ModelConfig(architecture=arch, model_args=cfg.normalized_args(kwargs), label_names=tuple(label_names),
                       input=spec)


def _set_flip(config: ModelConfig, name: str, flip: bool) -> None:
    cfg = _architecture(config.architecture)
    if not cfg.flip:
        takes = [n for n in ARCHITECTURES.names() if architecture_cfg(n).flip]
        raise errors.ConfigError(
            f"{name}: flip= is an option of {' and '.join(takes)}, not of {config.architecture!r}; "
            f"for test-time flip of one backbone use create('emoxnet', members=[{config.architecture!r}], flip=True)")
    args = {k: v for k, v in config.model_args.items() if k != "flip"}
    before = bool(config.model_args.get("flip", False))
    config.model_args = cfg.normalized_args({**args, "flip": flip})
    if before != bool(config.model_args.get("flip", False)):
        config.metrics = {}  # measured with the other setting; `emozoo eval` measures this one


def _new_labels(config: ModelConfig, name: str, num_classes, label_names) -> tuple[str, ...] | None:
    """The labels to fine-tune for, when they differ from the weights' own (``None``: keep the head)."""
    if label_names is not None:
        labels = tuple(label_names)
        if num_classes is not None and num_classes != len(labels):
            raise errors.ConfigError(f"num_classes={num_classes} but {len(labels)} label_names were given")
    elif num_classes is not None and num_classes != config.num_classes:
        labels = tuple(f"class_{i}" for i in range(num_classes))
    else:
        return None
    if not labels or len(set(labels)) != len(labels):
        raise errors.ConfigError(f"{name}: label_names must be distinct and non-empty, got {list(labels)}")
    return None if labels == config.label_names else labels


def _relabelled(config: ModelConfig, labels: tuple[str, ...]) -> ModelConfig:
    """The config of ``config``'s architecture with new classes: a new model, so no name, metrics or hash."""
    return ModelConfig(architecture=config.architecture, model_args=dict(config.model_args), label_names=labels,
                       input=dataclasses.replace(config.input), requires=dict(config.requires),
                       recipe={"init": config.name or "a saved model", "init_labels": list(config.label_names)})


def _check_overrides(config: ModelConfig, name, in_chans, input_size) -> None:
    if in_chans is not None and in_chans != config.input.in_chans:
        raise errors.ConfigError(f"{name}: in_chans={in_chans} (weights have {config.input.in_chans}); the input "
                                 "transform converts colour images to the model's channels, so leave in_chans out")
    if input_size is not None:
        config.input = dataclasses.replace(config.input, size=tuple(int(s) for s in input_size))  # conv nets run at any size
