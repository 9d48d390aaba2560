"""Model assembly: single backbones, the EmoXNet ensemble and the EmoXNetLite student."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from . import errors
from ._backbone import TimmBackbone
from ._registry import BACKBONES, FUSIONS

TIMM_PREFIX = "timm/"

#: EmoXNetLite's default student: a half-width ResNet-10 (about 36 M MACs at 48x48).
DEFAULT_STUDENT = {"backbone": "resnet10", "args": {"width": 0.5}}
DEFAULT_MEMBERS = ("resnet18", "vgg13", "convnext_pico")
DEFAULT_FUSION = "mean_prob"
#: Architectures with a ``flip`` option (test-time flip; the weights are the same either way).
FLIP_ARCHITECTURES = ("emoxnet", "emoxnetlite")


def member_spec(spec: Any) -> dict[str, Any]:
    """Normalise a member given as ``"name"``, ``("name", {args})`` or ``{"backbone": name, "args": {}}``."""
    if isinstance(spec, str):
        return {"backbone": spec, "args": {}}
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], dict):
        return {"backbone": spec[0], "args": dict(spec[1])}
    if isinstance(spec, dict) and isinstance(spec.get("backbone"), str) and set(spec) <= {"backbone", "args"}:
        return {"backbone": spec["backbone"], "args": dict(spec.get("args") or {})}
    raise errors.ConfigError(
        f"invalid member {spec!r}: give a backbone name, (name, {{args}}) or {{'backbone': name, 'args': {{...}}}}"
    )


def build_backbone(name: str, num_classes: int, in_chans: int, **args: Any) -> nn.Module:
    """Build a registered (or ``timm/``-prefixed) backbone, turning bad arguments into clear errors."""
    if name.startswith(TIMM_PREFIX):
        factory, owner = TimmBackbone, "timm"
        args = {"model_name": name[len(TIMM_PREFIX):], **args}
    else:
        entry = BACKBONES.get(name)
        factory, owner = entry.factory, entry.owner
    try:
        module = factory(num_classes=num_classes, in_chans=in_chans, **args)
    except TypeError as exc:
        raise errors.ConfigError(f"backbone {name!r} (from {owner}) rejected its arguments {args}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise errors.PluginError(f"backbone {name!r} (from {owner}) returned {type(module).__name__}, not an nn.Module")
    return module


def build_fusion(name: str, num_members: int, num_classes: int, feature_dims: Sequence[int], **args: Any) -> nn.Module:
    entry = FUSIONS.get(name)
    try:
        module = entry.factory(num_members=num_members, num_classes=num_classes, feature_dims=list(feature_dims), **args)
    except TypeError as exc:
        raise errors.ConfigError(f"fusion {name!r} (from {entry.owner}) rejected its arguments {args}: {exc}") from None
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


class EmoXNet(nn.Module):
    """An ensemble of architecturally different members whose outputs a fusion module combines.

    ``forward(x)`` returns fused logits ``(B, num_classes)``; :meth:`forward_members` also returns
    each member's logits and features (used to fit learned fusions and by ``emozoo eval``).

    With ``flip=True`` every member also sees the mirrored image and its logits and features are the
    mean of both views (test-time flip: twice the MACs, one member call on a doubled batch).
    """

    def __init__(self, members: Sequence[nn.Module], fusion: nn.Module, member_names: Sequence[str],
                 flip: bool = False):
        super().__init__()
        if len(members) < 1:
            raise errors.ConfigError("an EmoXNet needs at least one member")
        self.members = nn.ModuleList(members)
        self.fusion = fusion
        self.member_names = list(member_names)
        self.flip = bool(flip)

    def forward_members(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.flip:
            outputs = [member_outputs(m, x) for m in self.members]
            return torch.stack([o[0] for o in outputs]), [o[1] for o in outputs]
        n = x.shape[0]
        outputs = [member_outputs(m, torch.cat([x, x.flip(-1)])) for m in self.members]
        logits = torch.stack([(z[:n] + z[n:]) / 2 for z, _ in outputs])
        return logits, [(f[:n] + f[n:]) / 2 for _, f in outputs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, features = self.forward_members(x)
        return self.fusion(logits, features)


def _feature_dim(member: nn.Module, num_classes: int) -> int:
    return int(getattr(member, "num_features", num_classes))


def build_emoxnet(num_classes: int, in_chans: int, members: Sequence[Any] = DEFAULT_MEMBERS,
                  fusion: str = DEFAULT_FUSION, fusion_args: dict | None = None, flip: bool = False) -> EmoXNet:
    specs = [member_spec(m) for m in members]
    built = [build_backbone(s["backbone"], num_classes, in_chans, **s["args"]) for s in specs]
    fuse = build_fusion(fusion, len(built), num_classes, [_feature_dim(m, num_classes) for m in built],
                        **(fusion_args or {}))
    return EmoXNet(built, fuse, [s["backbone"] for s in specs], flip=flip)


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


def build_emoxnetlite(num_classes: int, in_chans: int, student: Any = None, flip: bool = False) -> nn.Module:
    spec = member_spec(student or DEFAULT_STUDENT)
    model = build_backbone(spec["backbone"], num_classes, in_chans, **spec["args"])
    return TestTimeFlip(model) if flip else model


def normalized_model_args(architecture: str, args: dict[str, Any]) -> dict[str, Any]:
    """Model args in the canonical form stored in ``config.json`` (defaults filled in)."""
    if architecture == "emoxnet":
        unknown = set(args) - {"members", "fusion", "fusion_args", "flip"}
        if unknown:
            raise errors.ConfigError(f"emoxnet takes members=, fusion=, fusion_args= and flip=, not {sorted(unknown)}")
        normalized = {"members": [member_spec(m) for m in args.get("members", DEFAULT_MEMBERS)],
                      "fusion": args.get("fusion", DEFAULT_FUSION), "fusion_args": dict(args.get("fusion_args") or {})}
    elif architecture == "emoxnetlite":
        unknown = set(args) - {"student", "flip"}
        if unknown:
            raise errors.ConfigError(f"emoxnetlite takes student= and flip=, not {sorted(unknown)}")
        normalized = {"student": member_spec(args.get("student") or DEFAULT_STUDENT)}
    else:
        return dict(args)
    if not isinstance(args.get("flip", False), bool):
        raise errors.ConfigError(f"{architecture}'s flip= must be true or false, not {args['flip']!r}")
    if args.get("flip"):
        normalized["flip"] = True
    return normalized


def build_architecture(architecture: str, num_classes: int, in_chans: int, model_args: dict[str, Any]) -> nn.Module:
    if architecture == "emoxnet":
        return build_emoxnet(num_classes, in_chans, **model_args)
    if architecture == "emoxnetlite":
        return build_emoxnetlite(num_classes, in_chans, **model_args)
    return build_backbone(architecture, num_classes, in_chans, **model_args)
