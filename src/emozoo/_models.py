"""Building models from the registry: what an architecture declares (:class:`ArchitectureCfg`, the
counterpart of timm's ``default_cfgs``), its published weights (:class:`PretrainedCfg`), and the
helpers every architecture shares (members, fusions, test-time flip).

Nothing here knows any architecture by name: EmoXNet, EmoXNetLite and every backbone describe
themselves in their own module (``emozoo.builtins.*`` or a plugin) when they register.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import errors
from ._backbone import TimmBackbone
from ._config import CONFIG_NAME, FERPLUS_LABELS, WEIGHTS_NAME, InputSpec
from ._registry import ARCHITECTURES, FUSIONS

if TYPE_CHECKING:
    from ._config import ModelConfig

TIMM_PREFIX = "timm/"

#: model arguments no config may pass to a factory: timm (and others) would load that file or download weights
FORBIDDEN_ARGS = ("checkpoint_path", "pretrained")


def check_model_args(name: str, args: Any) -> None:
    """Refuse ``checkpoint_path`` and ``pretrained*`` keys: weights load only through emozoo's checked path."""
    if not isinstance(args, dict):
        raise errors.ConfigError(f"the arguments of {name!r} must be an object of keyword arguments, got {args!r}")
    bad = sorted(k for k in args if not isinstance(k, str) or k.startswith(FORBIDDEN_ARGS))
    if bad:
        raise errors.ConfigError(
            f"{name!r}: model argument(s) {bad} are refused (a config must not make a model load files or download "
            "weights); load weights with emozoo.create(..., pretrained=True) or a saved model folder")


def _failed(kind: str, name: str, owner: str, exc: Exception) -> errors.EmozooError:
    where = "timm" if owner == "timm" else f"plugin {owner!r}"
    first = (str(exc).strip().splitlines() or [""])[0]
    return errors.PluginError(f"{kind} {name!r} (from {where}) failed to build: {type(exc).__name__}: {first}")


@dataclass(frozen=True)
class PretrainedCfg:
    """One published set of weights of an architecture (``arch.tag``).

    ``hf_hub_id`` is the Hugging Face Hub repo (``ORG/NAME``) the weights are published to; ``folder``
    is a copy shipped inside a Python package (``config.json`` + ``model.safetensors``, laid out like
    the Hub repo), so that ``pretrained=True`` works offline. Give one or both.
    """

    hf_hub_id: str | None = None
    folder: str | Path | None = None
    description: str = ""

    def __post_init__(self):
        if not self.hf_hub_id and not self.folder:
            raise errors.PluginError("a PretrainedCfg needs hf_hub_id='ORG/NAME', folder=PATH, or both")

    def is_shipped(self) -> bool:
        """Whether the shipped folder holds both files (a fresh clone without them still downloads)."""
        return self.folder is not None and all((Path(self.folder) / n).is_file() for n in (CONFIG_NAME, WEIGHTS_NAME))


@dataclass(frozen=True)
class ArchitectureCfg:
    """What an architecture declares beside its builder, as timm's ``default_cfgs`` do.

    Every field has a default that fits a plain backbone; an architecture overrides what differs:

    - ``backbone``: it can be an ensemble member (``register_backbones`` sets it);
    - ``flip``: it takes ``flip=True`` (test-time flip) and the ``flip=`` override of :func:`emozoo.create`;
    - ``input`` / ``label_names``: its default input spec and labels when built without weights;
    - ``pretrained``: ``{tag: PretrainedCfg}``, the first tag being its default;
    - ``normalize(args) -> args``: its arguments in the canonical form stored in ``config.json``
      (defaults filled in, unknown ones refused with a :class:`ConfigError`);
    - ``components(args) -> [(kind, name)]``: the backbones and fusions it is built from (which plugin
      packages a saved model needs);
    - ``as_member(args) -> {"backbone", "args"}``: the member spec that rebuilds its trained network
      inside an ensemble (raise :class:`ConfigError` where it cannot be one);
    - ``describe(config) -> str`` and ``card(config) -> str``: the model card's one-line summary and
      architecture section; ``card_tags``: extra Hub tags;
    - ``fresh``: state-dict prefixes that start fresh when fine-tuning on other classes, beside the
      tensors whose shape follows the number of classes (an ensemble's fusion, for instance).
    """

    backbone: bool = True
    flip: bool = False
    input: InputSpec = field(default_factory=InputSpec)
    label_names: tuple[str, ...] = FERPLUS_LABELS
    pretrained: Mapping[str, PretrainedCfg] = field(default_factory=dict)
    normalize: Callable[[dict], dict] | None = None
    components: Callable[[dict], list] | None = None
    as_member: Callable[[dict], dict] | None = None
    describe: Callable[[ModelConfig], str] | None = None
    card: Callable[[ModelConfig], str] | None = None
    card_tags: tuple[str, ...] = ()
    fresh: tuple[str, ...] = ()

    @classmethod
    def from_hook(cls, name: str, owner: str, backbone: bool, cfg: ArchitectureCfg | None = None,
                  **kwargs: Any) -> ArchitectureCfg:
        """The cfg of ``register(name, factory, description, cfg=... or **fields)`` in a plugin hook."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise errors.PluginError(f"{owner}: architecture {name!r} was registered with unknown field(s) "
                                     f"{unknown}; ArchitectureCfg takes {sorted(known)}")
        if cfg is not None and kwargs:
            raise errors.PluginError(f"{owner}: give architecture {name!r} either cfg= or its fields, not both")
        if cfg is None:
            kwargs.setdefault("backbone", backbone)
            cfg = cls(**kwargs)
        for tag, p in cfg.pretrained.items():
            if not isinstance(p, PretrainedCfg) or not isinstance(tag, str) or not tag:
                raise errors.PluginError(f"{owner}: {name}.pretrained must map tags to PretrainedCfg, got {tag!r}: {p!r}")
        return cfg

    # The defaults below describe a plain backbone called ``name``.
    def normalized_args(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.normalize(dict(args)) if self.normalize else dict(args)

    def components_of(self, name: str, args: dict[str, Any]) -> list[tuple[str, str]]:
        if self.components:
            return self.components(args)
        return [("backbone", name)] if self.backbone else []

    def member_of(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return self.as_member(args) if self.as_member else {"backbone": name, "args": dict(args)}

    def description_of(self, config: ModelConfig) -> str:
        return self.describe(config) if self.describe else f"A `{config.architecture}` network"

    def card_of(self, config: ModelConfig) -> str:
        if self.card:
            return self.card(config)
        return f"Backbone `{config.architecture}` with arguments `{json.dumps(config.model_args)}`."

    @property
    def default_tag(self) -> str | None:
        return next(iter(self.pretrained), None)


TIMM_CFG = ArchitectureCfg()


def architecture_cfg(name: str) -> ArchitectureCfg:
    """The :class:`ArchitectureCfg` of a registered architecture (or of any ``timm/`` name)."""
    if name.startswith(TIMM_PREFIX):
        return TIMM_CFG
    return ARCHITECTURES.get(name).meta["cfg"]


def member_spec(spec: Any) -> dict[str, Any]:
    """Normalise a member given as ``"name"``, ``("name", {args})`` or ``{"backbone": name, "args": {}}``.

    The dict form may add ``"input_size": [H, W]``: the member then sees the ensemble's input resized to
    that size (a member trained on upsampled faces, beside members at the ensemble's own size).
    """
    if isinstance(spec, str):
        return {"backbone": spec, "args": {}}
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], dict):
        return {"backbone": spec[0], "args": dict(spec[1])}
    if (isinstance(spec, dict) and isinstance(spec.get("backbone"), str)
            and set(spec) <= {"backbone", "args", "input_size"}):
        normalized = {"backbone": spec["backbone"], "args": dict(spec.get("args") or {})}
        if spec.get("input_size") is not None:  # checked as a model's input size is
            try:
                normalized["input_size"] = list(InputSpec(size=spec["input_size"]).size)
            except (errors.ConfigError, TypeError, ValueError) as e:
                raise errors.ConfigError(f"member {spec['backbone']!r}: {e}") from None
        return normalized
    raise errors.ConfigError(
        f"invalid member {spec!r}: give a backbone name, (name, {{args}}) or {{'backbone': name, 'args': {{...}}}}"
    )


def build_architecture(name: str, num_classes: int, in_chans: int, args: dict[str, Any],
                       member: bool = False) -> nn.Module:
    """Build a registered (or ``timm/``-prefixed) architecture, turning bad arguments into clear errors.

    ``member=True`` refuses an architecture that cannot be an ensemble member (one that is no backbone).
    """
    if name.startswith(TIMM_PREFIX):
        factory, owner = TimmBackbone, "timm"
        args = {"model_name": name[len(TIMM_PREFIX):], **args}
    else:
        if member and name not in ARCHITECTURES:
            raise errors.UnknownBackboneError(name, ARCHITECTURES.names(where=is_backbone),
                                              hint="timm architectures work as 'timm/<name>'.")
        entry = ARCHITECTURES.get(name)
        if member and not is_backbone(entry):
            raise errors.ConfigError(f"{name!r} is not a backbone and cannot be an ensemble member; "
                                     "members are: " + ", ".join(ARCHITECTURES.names(where=is_backbone)))
        factory, owner = entry.factory, entry.owner
    check_model_args(name, args)
    kind = "backbone" if member or architecture_cfg(name).backbone else "model"
    try:
        module = factory(num_classes=num_classes, in_chans=in_chans, **args)
    except errors.EmozooError:
        raise
    except TypeError as exc:
        raise errors.ConfigError(f"{kind} {name!r} (from {owner}) rejected its arguments {args}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a third-party factory: name it in one line (KeyboardInterrupt passes)
        raise _failed(kind, name, owner, exc) from None
    if not isinstance(module, nn.Module):
        raise errors.PluginError(f"{name!r} (from {owner}) returned {type(module).__name__}, not an nn.Module")
    return module


def is_backbone(entry) -> bool:
    """Whether a registered architecture can be an ensemble member (its cfg's ``backbone``)."""
    return entry.meta["cfg"].backbone


def build_backbone(name: str, num_classes: int, in_chans: int, **args: Any) -> nn.Module:
    """Build one ensemble member (a registered backbone or a ``timm/`` name)."""
    return build_architecture(name, num_classes, in_chans, args, member=True)


def build_fusion(name: str, num_members: int, num_classes: int, feature_dims: Sequence[int], **args: Any) -> nn.Module:
    entry = FUSIONS.get(name)
    check_model_args(f"fusion {name}", args)
    try:
        module = entry.factory(num_members=num_members, num_classes=num_classes, feature_dims=list(feature_dims), **args)
    except errors.EmozooError:
        raise
    except TypeError as exc:
        raise errors.ConfigError(f"fusion {name!r} (from {entry.owner}) rejected its arguments {args}: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise _failed("fusion", name, entry.owner, exc) from None
    if not isinstance(module, nn.Module):
        raise errors.PluginError(f"fusion {name!r} (from {entry.owner}) returned {type(module).__name__}, not an nn.Module")
    return module


def member_outputs(member: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, pooled features)`` of one member; modules without ``forward_features`` give logits twice."""
    if hasattr(member, "forward_features") and hasattr(member, "forward_head"):
        features = member.forward_features(x)
        return member.forward_head(features), features
    logits = member(x)
    return logits, logits


def check_flip(name: str, args: dict[str, Any]) -> bool:
    """The ``flip`` argument of an architecture that takes one: a bool, or a clear :class:`ConfigError`."""
    flip = args.get("flip", False)
    if not isinstance(flip, bool):
        raise errors.ConfigError(f"{name}'s flip= must be true or false, not {flip!r}")
    return flip


class TestTimeFlip(nn.Module):
    """Test-time flip for one network: its logits averaged over the face and its mirror.

    Twice the MACs, one call on a doubled batch. The state dict is the wrapped network's own (no
    ``model.`` prefix), so the same ``model.safetensors`` loads with and without flip.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        logits = self.model(torch.cat([x, x.flip(-1)]))
        return (logits[:n] + logits[n:]) / 2

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)
