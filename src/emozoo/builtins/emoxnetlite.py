"""EmoXNetLite: one small network distilled from an EmoXNet (by default a half-width ResNet-10).

This module is the whole of the architecture: its builder and what it declares to the registry
(arguments, test-time flip, model-card text, published weights).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from .. import errors
from .._models import ArchitectureCfg, PretrainedCfg, TestTimeFlip, build_backbone, check_flip, member_spec
from ..hookspecs import hookimpl

#: the default student: a half-width ResNet-10 (about 36 M MACs at 48x48)
DEFAULT_STUDENT = {"backbone": "resnet10", "args": {"width": 0.5}}
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def emoxnetlite(num_classes: int = 8, in_chans: int = 1, student: Any = None, flip: bool = False) -> nn.Module:
    """EmoXNetLite: a small student network distilled from an EmoXNet teacher."""
    spec = member_spec(student or DEFAULT_STUDENT)
    model = build_backbone(spec["backbone"], num_classes, in_chans, **spec["args"])
    return TestTimeFlip(model) if flip else model


def _normalize(args: dict[str, Any]) -> dict[str, Any]:
    unknown = set(args) - {"student", "flip"}
    if unknown:
        raise errors.ConfigError(f"emoxnetlite takes student= and flip=, not {sorted(unknown)}")
    normalized = {"student": member_spec(args.get("student") or DEFAULT_STUDENT)}
    if check_flip("emoxnetlite", args):
        normalized["flip"] = True
    return normalized


def _components(args: dict[str, Any]) -> list[tuple[str, str]]:
    return [("backbone", args.get("student", {}).get("backbone"))]


def _as_member(args: dict[str, Any]) -> dict[str, Any]:
    return args["student"]


def _describe(config) -> str:
    args = config.model_args
    flip = ", averaged over the face and its mirror at test time" if args.get("flip") else ""
    return (f"An EmoXNetLite student (`{args['student']['backbone']}`{flip}) trained by knowledge distillation "
            "from a larger teacher (see the training recipe)")


def _card(config) -> str:
    args = config.model_args
    student = args["student"]
    lines = [f"Student backbone `{student['backbone']}` with arguments `{json.dumps(student['args'])}`."]
    if args.get("flip"):
        lines += ["", "Test-time flip (`flip: true`): the student scores the face and its mirror image in one "
                      "doubled batch and returns the mean of both logits (twice the MACs). "
                      "`emozoo.create(..., flip=False)` turns it off (same weights)."]
    return "\n".join(lines)


EMOXNETLITE_CFG = ArchitectureCfg(
    backbone=False, flip=True, normalize=_normalize, components=_components, as_member=_as_member,
    describe=_describe, card=_card, card_tags=("knowledge-distillation",),
    pretrained={"ferplus": PretrainedCfg(
        hf_hub_id="emozoo/emoxnetlite.ferplus", folder=WEIGHTS / "emoxnetlite.ferplus",
        description="EmoXNetLite (ResNet-10 width 0.5) distilled on FER+; 8 expressions from 48x48 grayscale faces")},
)


@hookimpl
def register_architectures(register):
    register("emoxnetlite", emoxnetlite, cfg=EMOXNETLITE_CFG)
