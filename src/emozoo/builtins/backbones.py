"""Built-in ensemble members: six architecture families, each sized for 48x48 faces.

All accept any input size and 1 or 3 channels (``in_chans``); downsampling is chosen so that a 48x48
face still ends at a 3x3 to 6x6 feature map before global pooling. Each ``forward_features`` returns
pooled features ``(B, num_features)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .. import errors
from .._backbone import BackboneBase, LinearHead
from ..hookspecs import hookimpl


def _conv_bn(cin, cout, k=3, s=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _width(c: float, mult: float, divisor: int = 8) -> int:
    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not mult > 0:
        raise errors.ConfigError(f"width must be a positive number (1.0 is the standard width), got {mult!r}")
    return max(divisor, int(c * mult + divisor / 2) // divisor * divisor)


# --------------------------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, stride)
        self.conv2 = _conv_bn(cout, cout, 3, 1, act=False)
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else _conv_bn(cin, cout, 1, stride, act=False))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


def _resnet_stage(cin, cout, blocks, stride):
    return nn.Sequential(*[BasicBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1) for j in range(blocks)])


class ResNet(BackboneBase):
    """ResNet with basic blocks (He et al. 2016) and a small-image stem (one 3x3 conv, no max-pool).

    The stem has stride 2 (48x48 reaches the last stage at 3x3); ``stem_stride=1`` keeps full
    resolution for four times the compute.
    """

    def __init__(self, layers=(2, 2, 2, 2), num_classes=8, in_chans=1, width=1.0, stem_stride=2,
                 drop_rate=0.0):
        super().__init__()
        widths = [_width(c, width) for c in (64, 128, 256, 512)]
        self.stem = _conv_bn(in_chans, widths[0], 3, stem_stride)
        stages, cin = [], widths[0]
        for i, (n, cout) in enumerate(zip(layers, widths)):
            stages.append(_resnet_stage(cin, cout, n, 2 if i > 0 else 1))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features, self.num_classes = cin, num_classes
        self.head = LinearHead(cin, num_classes, drop_rate)

    def forward_features(self, x):
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward_head(self, features):
        return self.head(features)


def resnet18(num_classes=8, in_chans=1, **kwargs):
    """ResNet-18 (basic blocks 2-2-2-2, 64-512 channels), small-image stem."""
    return ResNet((2, 2, 2, 2), num_classes, in_chans, **kwargs)


def resnet10(num_classes=8, in_chans=1, **kwargs):
    """ResNet-10 (basic blocks 1-1-1-1), small-image stem; with ``width=0.5`` a fast student."""
    return ResNet((1, 1, 1, 1), num_classes, in_chans, **kwargs)


# ------------------------------------------------------------------------------------------------ ESR
class ESR(BackboneBase):
    """Shared early layers, several branches: an ensemble in one network (ESR, Siqueira et al. 2020).

    The base is a ResNet-18's stem and first two stages, computed once; each of ``branches`` branches is
    its last two stages at ``width`` with its own classifier. :meth:`forward` returns the mean of the
    branches' logits (a ``mean_logit`` fusion), :meth:`forward_branches` each branch's. While
    ``return_branches`` is set (the training loop sets it), a training-mode forward returns every
    branch's logits, ``(B, branches, num_classes)``, and the loop gives each branch its own loss, as ESR
    does, so the branches stay different.
    """

    return_branches = False

    def __init__(self, branches=4, width=0.75, num_classes=8, in_chans=1, stem_stride=2, drop_rate=0.0):
        super().__init__()
        if isinstance(branches, bool) or not isinstance(branches, int) or branches < 1:
            raise errors.ConfigError(f"esr: branches must be a positive integer, got {branches!r}")
        c3, c4 = _width(256, width), _width(512, width)
        self.base = nn.Sequential(_conv_bn(in_chans, 64, 3, stem_stride), _resnet_stage(64, 64, 2, 1),
                                  _resnet_stage(64, 128, 2, 2))
        self.branches = nn.ModuleList(
            nn.Sequential(_resnet_stage(128, c3, 2, 2), _resnet_stage(c3, c4, 2, 2), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(1))
            for _ in range(branches))
        self.heads = nn.ModuleList(LinearHead(c4, num_classes, drop_rate) for _ in range(branches))
        self.branch_features = c4
        self.num_features, self.num_classes = c4 * branches, num_classes

    def forward_features(self, x):
        """Each branch's pooled features, concatenated: ``(B, branches * branch_features)``."""
        shared = self.base(x)
        return torch.cat([branch(shared) for branch in self.branches], 1)

    def forward_branches(self, x):
        """Every branch's logits, ``(B, branches, num_classes)``."""
        return self._heads(self.forward_features(x))

    def _heads(self, features):
        chunks = features.split(self.branch_features, 1)
        return torch.stack([head(f) for head, f in zip(self.heads, chunks)], 1)

    def forward_head(self, features):
        return self._heads(features).mean(1)

    def forward(self, x):
        logits = self.forward_branches(x)
        return logits if self.training and self.return_branches else logits.mean(1)

    def init_branches(self, states: Sequence[dict[str, torch.Tensor]]) -> None:
        """Start from trained ResNet-18s (full-width ``resnet18`` state dicts; ``width=1.0``), one per branch: the
        base is the first one's stem and first two stages, branch ``i`` the last two stages and head of the
        ``i``-th. Branch 0 with the base computes what the first ResNet-18 does; the others start from weights
        that learned on another base, so training adapts them (``emozoo train esr --init A --init B``)."""
        if len(states) != len(self.branches):
            raise errors.ConfigError(f"esr has {len(self.branches)} branches; give one --init per branch, not "
                                     f"{len(states)} (or --model-arg branches={len(states)})")
        ours = {}
        for i, state in enumerate(states):
            for key, value in state.items():
                part, _, rest = key.partition(".")
                if part == "stages" and rest[:1] in "01" and rest[1:2] == ".":
                    target = f"base.{int(rest[0]) + 1}.{rest[2:]}" if i == 0 else None
                elif part == "stages" and rest[:1] in "23" and rest[1:2] == ".":
                    target = f"branches.{i}.{int(rest[0]) - 2}.{rest[2:]}"
                elif part == "stem":
                    target = f"base.0.{rest}" if i == 0 else None
                elif part == "head":
                    target = f"heads.{i}.{rest}"
                else:
                    raise errors.ConfigError(f"esr --init: weight {key!r} is not a resnet18's; every --init must be "
                                             "a trained resnet18")
                if target is not None:
                    ours[target] = value
        mine = self.state_dict()
        wrong = sorted(k for k in mine if k not in ours or ours[k].shape != mine[k].shape)
        if wrong:
            raise errors.ConfigError(f"esr --init: the resnet18 weights do not fit ({len(wrong)} tensors, e.g. "
                                     f"{wrong[0]}); give full-width resnet18s with the same in_chans and classes, "
                                     "and --model-arg width=1.0")
        self.load_state_dict(ours)


def esr(num_classes=8, in_chans=1, **kwargs):
    """ESR-style ensemble in one network: a shared ResNet base, ``branches`` (4) ResNet branches at ``width`` (0.75)."""
    return ESR(num_classes=num_classes, in_chans=in_chans, **kwargs)


# ------------------------------------------------------------------------------------------------ VGG
class VGG(BackboneBase):
    """VGG13 as in FER+ (Barsoum et al. 2016): 10 conv layers in 4 pooled blocks, two FC-1024 layers.

    Global average pooling before the FC layers makes it size-agnostic; the FC-1024 output is the
    feature vector.
    """

    def __init__(self, cfg=((64, 64), (128, 128), (256, 256, 256), (256, 256, 256)), num_classes=8,
                 in_chans=1, width=1.0, fc_dim=1024, drop_rate=0.5, block_drop=0.25):
        super().__init__()
        blocks, cin = [], in_chans
        for stage in cfg:
            layers = []
            for c in stage:
                c = _width(c, width)
                layers.append(_conv_bn(cin, c))
                cin = c
            layers += [nn.MaxPool2d(2), nn.Dropout(block_drop) if block_drop else nn.Identity()]
            blocks.append(nn.Sequential(*layers))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(cin, fc_dim), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
            nn.Linear(fc_dim, fc_dim), nn.ReLU(inplace=True),
        )
        self.num_features, self.num_classes = fc_dim, num_classes
        self.head = LinearHead(fc_dim, num_classes, drop_rate)

    def forward_features(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))

    def forward_head(self, features):
        return self.head(features)


def vgg13(num_classes=8, in_chans=1, **kwargs):
    """VGG13 of the FER+ paper (Barsoum et al. 2016) with batch norm."""
    return VGG(num_classes=num_classes, in_chans=in_chans, **kwargs)


# --------------------------------------------------------------------------------------- mini-Xception
class SeparableConv(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class XceptionModule(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.branch = nn.Sequential(SeparableConv(cin, cout), nn.ReLU(inplace=True),
                                    SeparableConv(cout, cout), nn.MaxPool2d(3, 2, 1))
        self.shortcut = _conv_bn(cin, cout, 1, 2, act=False)

    def forward(self, x):
        return self.branch(x) + self.shortcut(x)


class MiniXception(BackboneBase):
    """mini-Xception (Arriaga et al. 2017): two plain convs then residual depthwise-separable modules.

    ``width`` scales the original 8/16/32/64/128 channels (the original is ``width=1``).
    """

    def __init__(self, num_classes=8, in_chans=1, width=2.0, drop_rate=0.0):
        super().__init__()
        c = [_width(v, width) for v in (8, 16, 32, 64, 128)]
        self.stem = nn.Sequential(_conv_bn(in_chans, c[0]), _conv_bn(c[0], c[0]))
        self.modules_ = nn.Sequential(*[XceptionModule(a, b) for a, b in zip(c[:-1], c[1:])])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features, self.num_classes = c[-1], num_classes
        self.head = LinearHead(c[-1], num_classes, drop_rate)

    def forward_features(self, x):
        return self.pool(self.modules_(self.stem(x))).flatten(1)

    def forward_head(self, features):
        return self.head(features)


def mini_xception(num_classes=8, in_chans=1, **kwargs):
    """mini-Xception (Arriaga et al. 2017), depthwise-separable residual modules, twice the original width."""
    return MiniXception(num_classes, in_chans, **kwargs)


# ---------------------------------------------------------------------------------------- MobileNetV2
class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn(cin, hidden, 1)] if expand != 1 else []
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(BackboneBase):
    """MobileNetV2 (Sandler et al. 2018): inverted residuals with linear bottlenecks.

    Strides are those of ImageNet's MobileNetV2 minus one, so 48x48 ends at 3x3.
    """

    # expand, channels, repeats, stride
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes=8, in_chans=1, width=1.0, last_channels=1280, drop_rate=0.2,
                 stem_stride=2):
        super().__init__()
        cin = _width(32, width)
        layers = [_conv_bn(in_chans, cin, 3, stem_stride)]
        for t, c, n, s in self.SETTINGS:
            cout = _width(c, width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = _width(last_channels, max(1.0, width))
        layers.append(_conv_bn(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features, self.num_classes = last, num_classes
        self.head = LinearHead(last, num_classes, drop_rate)

    def forward_features(self, x):
        return self.pool(self.features(x)).flatten(1)

    def forward_head(self, features):
        return self.head(features)


def mobilenetv2(num_classes=8, in_chans=1, **kwargs):
    """MobileNetV2 (inverted residuals), strides adapted to 48x48 faces."""
    return MobileNetV2(num_classes, in_chans, **kwargs)


# ------------------------------------------------------------------------------------------- ConvNeXt
class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim, layer_scale=1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.mlp(self.norm(y)) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(BackboneBase):
    """ConvNeXt (Liu et al. 2022): 7x7 depthwise convs, LayerNorm, inverted MLP, layer scale.

    The stem patchifies 2x2 instead of 4x4, so a 48x48 face reaches the last stage at 3x3.
    """

    def __init__(self, depths=(2, 2, 6, 2), dims=(64, 128, 256, 512), num_classes=8, in_chans=1,
                 drop_rate=0.0):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 2, 2), LayerNorm2d(dims[0]))
        stages = []
        for i, (d, dim) in enumerate(zip(depths, dims)):
            down = (nn.Sequential(LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dim, 2, 2))
                    if i > 0 else nn.Identity())
            stages.append(nn.Sequential(down, *[ConvNeXtBlock(dim) for _ in range(d)]))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1])
        self.num_features, self.num_classes = dims[-1], num_classes
        self.head = LinearHead(dims[-1], num_classes, drop_rate)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features(self, x):
        return self.norm(self.stages(self.stem(x)).mean((2, 3)))

    def forward_head(self, features):
        return self.head(features)


def convnext_pico(num_classes=8, in_chans=1, **kwargs):
    """ConvNeXt-Pico (depths 2-2-6-2, dims 64-512) with a 2x2 stem for small faces."""
    return ConvNeXt((2, 2, 6, 2), (64, 128, 256, 512), num_classes, in_chans, **kwargs)


BUILTIN_BACKBONES = (resnet18, resnet10, esr, vgg13, mini_xception, mobilenetv2, convnext_pico)


@hookimpl
def register_backbones(register):
    for factory in BUILTIN_BACKBONES:
        register(factory.__name__, factory)
