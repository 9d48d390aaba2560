"""EmoXNet: an ensemble of architecturally different members whose outputs a fusion combines.

This module is the whole of the architecture: the module class, its builder, and what it declares
to the registry (arguments, test-time flip, model-card text, published weights).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import errors
from .._models import (
    ArchitectureCfg,
    PretrainedCfg,
    build_backbone,
    build_fusion,
    check_flip,
    member_outputs,
    member_spec,
)
from ..hookspecs import hookimpl

DEFAULT_MEMBERS = ("resnet18", "vgg13", "convnext_pico")
DEFAULT_FUSION = "mean_prob"
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


class EmoXNet(nn.Module):
    """An ensemble of architecturally different members whose outputs a fusion module combines.

    ``forward(x)`` returns fused logits ``(B, num_classes)``; :meth:`forward_members` also returns
    each member's logits and features (used to fit learned fusions and by ``emozoo eval``), and
    :meth:`forward_with_members` the fused logits with the members' (what ``predict`` reports per member).

    With ``flip=True`` every member also sees the mirrored image and its logits and features are the
    mean of both views (test-time flip: twice the MACs, one member call on a doubled batch). A member
    with an ``input_size`` (``member_sizes``) sees the input resized to it (bilinear).
    """

    def __init__(self, members: Sequence[nn.Module], fusion: nn.Module, member_names: Sequence[str],
                 flip: bool = False, member_sizes: Sequence[Sequence[int] | None] | None = None):
        super().__init__()
        if len(members) < 1:
            raise errors.ConfigError("an EmoXNet needs at least one member")
        self.members = nn.ModuleList(members)
        self.fusion = fusion
        self.member_names = list(member_names)
        self.flip = bool(flip)
        self.member_sizes = [tuple(s) if s else None for s in (member_sizes or [None] * len(members))]

    def _inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's input: ``x``, or ``x`` resized to the member's own input size."""
        return [x if size is None or tuple(x.shape[-2:]) == size
                else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
                for size in self.member_sizes]

    def forward_members(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.flip:
            outputs = [member_outputs(m, xm) for m, xm in zip(self.members, self._inputs(x))]
            return torch.stack([o[0] for o in outputs]), [o[1] for o in outputs]
        n = x.shape[0]
        doubled = self._inputs(torch.cat([x, x.flip(-1)]))
        outputs = [member_outputs(m, xm) for m, xm in zip(self.members, doubled)]
        logits = torch.stack([(z[:n] + z[n:]) / 2 for z, _ in outputs])
        return logits, [(f[:n] + f[n:]) / 2 for _, f in outputs]

    def forward_with_members(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused logits ``(B, num_classes)`` and each member's logits ``(M, B, num_classes)`` from one pass: the
        members' outputs are those the fusion combined (with ``flip``, each the mean over the face and its mirror)."""
        logits, features = self.forward_members(x)
        return self.fusion(logits, features), logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_members(x)[0]


def emoxnet(num_classes: int = 8, in_chans: int = 1, members: Sequence[Any] = DEFAULT_MEMBERS,
            fusion: str = DEFAULT_FUSION, fusion_args: dict | None = None, flip: bool = False) -> EmoXNet:
    """EmoXNet: an ensemble of different backbones combined by a fusion (Momin et al., 2021)."""
    specs = [member_spec(m) for m in _member_list(members)]
    built = [build_backbone(s["backbone"], num_classes, in_chans, **s["args"]) for s in specs]
    dims = [int(getattr(m, "num_features", num_classes)) for m in built]
    fuse = build_fusion(fusion, len(built), num_classes, dims, **(fusion_args or {}))
    return EmoXNet(built, fuse, [s["backbone"] for s in specs], flip=flip,
                   member_sizes=[s.get("input_size") for s in specs])


def _member_list(members: Any) -> Sequence[Any]:
    if isinstance(members, (str, bytes, dict)) or not isinstance(members, Sequence) or not members:
        raise errors.ConfigError(f"members must be a non-empty list of backbones, e.g. members=['resnet18', "
                                 f"'vgg13'], got {members!r}")
    return members


def _normalize(args: dict[str, Any]) -> dict[str, Any]:
    unknown = set(args) - {"members", "fusion", "fusion_args", "flip"}
    if unknown:
        raise errors.ConfigError(f"emoxnet takes members=, fusion=, fusion_args= and flip=, not {sorted(unknown)}")
    normalized = {"members": [member_spec(m) for m in _member_list(args.get("members", DEFAULT_MEMBERS))],
                  "fusion": args.get("fusion", DEFAULT_FUSION), "fusion_args": dict(args.get("fusion_args") or {})}
    if check_flip("emoxnet", args):
        normalized["flip"] = True
    return normalized


def _components(args: dict[str, Any]) -> list[tuple[str, str]]:
    return [*(("backbone", m["backbone"]) for m in args.get("members", [])), ("fusion", args.get("fusion"))]


def _as_member(args: dict[str, Any]) -> dict[str, Any]:
    raise errors.ConfigError("an ensemble cannot be a member of another ensemble; give its member folders")


def _describe(config) -> str:
    args = config.model_args
    names = ", ".join(m["backbone"] for m in args["members"])
    flip = ", each averaged over the face and its mirror," if args.get("flip") else ""
    return f"An EmoXNet ensemble of {len(args['members'])} members ({names}){flip} fused by `{args['fusion']}`"


def _card(config) -> str:
    args = config.model_args
    lines = ["| member | backbone | arguments | input |", "| --- | --- | --- | --- |"]
    size = "x".join(map(str, config.input.size))
    lines += [f"| {i} | `{m['backbone']}` | `{json.dumps(m['args'])}` | "
              f"{'x'.join(map(str, m['input_size'])) + ' (resized)' if m.get('input_size') else size} |"
              for i, m in enumerate(args["members"])]
    lines += ["", f"Fusion: `{args['fusion']}` with arguments `{json.dumps(args.get('fusion_args', {}))}`. "
                  "The members and the fusion are stored together in `model.safetensors` (member i under "
                  "`members.i.*`, the fusion under `fusion.*`), and `config.json` names them, so `emozoo.create` "
                  "rebuilds the whole ensemble in one call."]
    if args.get("flip"):
        lines += ["", "Test-time flip (`flip: true`): each member scores the face and its mirror image in one "
                      "doubled batch and passes the mean of both logits and features to the fusion "
                      "(twice the members' MACs). `emozoo.create(..., flip=False)` turns it off (same weights)."]
    return "\n".join(lines)


EMOXNET_CFG = ArchitectureCfg(
    backbone=False, flip=True, normalize=_normalize, components=_components, as_member=_as_member,
    describe=_describe, card=_card, card_tags=("ensemble",), fresh=("fusion.",),
    pretrained={"ferplus": PretrainedCfg(
        hf_hub_id="emozoo/emoxnet.ferplus", folder=WEIGHTS / "emoxnet.ferplus",
        description="EmoXNet ensemble trained on FER+; 8 expressions from 48x48 grayscale faces")},
)


@hookimpl
def register_architectures(register):
    register("emoxnet", emoxnet, cfg=EMOXNET_CFG)
