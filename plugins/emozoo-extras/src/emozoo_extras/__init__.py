"""emozoo-extras: an example plugin adding a backbone (with published weights), a fusion and a distillation loss."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import emozoo


class Fire(nn.Module):
    """SqueezeNet's Fire module: a 1x1 squeeze, then parallel 1x1 and 3x3 expands."""

    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.BatchNorm2d(squeeze), nn.ReLU(inplace=True))
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.BatchNorm2d(expand), nn.ReLU(inplace=True))
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.BatchNorm2d(expand), nn.ReLU(inplace=True))

    def forward(self, x):
        x = self.squeeze(x)
        return torch.cat([self.e1(x), self.e3(x)], 1)


class SqueezeNet(emozoo.BackboneBase):
    """SqueezeNet 1.1 with batch norm and a stride-1 stem, so 48x48 faces end at 6x6; ``width`` scales
    every layer's channels."""

    def __init__(self, num_classes: int = 8, in_chans: int = 1, drop_rate: float = 0.2, width: float = 1.0):
        super().__init__()

        def c(n):
            return max(4, int(round(n * width)))

        self.features = nn.Sequential(
            nn.Conv2d(in_chans, c(64), 3, padding=1), nn.BatchNorm2d(c(64)), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), Fire(c(64), c(16), c(64)), Fire(2 * c(64), c(16), c(64)),
            nn.MaxPool2d(2), Fire(2 * c(64), c(32), c(128)), Fire(2 * c(128), c(32), c(128)),
            nn.MaxPool2d(2), Fire(2 * c(128), c(48), c(192)), Fire(2 * c(192), c(48), c(192)),
            Fire(2 * c(192), c(64), c(256)), Fire(2 * c(256), c(64), c(256)),
        )
        self.num_features, self.num_classes = 2 * c(256), num_classes
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x):
        return self.features(x).mean((2, 3))

    def forward_head(self, features):
        return self.fc(self.drop(features))


class GeometricMean(nn.Module):
    """Product of experts: fused logits = mean over members of ``log_softmax(logits)``."""

    trainable = False

    def __init__(self, num_members: int, num_classes: int, feature_dims: list[int]):
        super().__init__()

    def forward(self, logits: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        return logits.log_softmax(-1).mean(0)


class LogitMSE(nn.Module):
    """Ba & Caruana (2014): ``alpha * mean((s - t)^2) + (1 - alpha) * CE(s, target)``."""

    def __init__(self, alpha: float = 0.5):
        super().__init__()
        if not 0 <= alpha <= 1:
            raise emozoo.ConfigError(f"logit_mse: alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def forward(self, student_logits, teacher_logits, target):
        mse = F.mse_loss(student_logits, teacher_logits)
        ce = F.cross_entropy(student_logits, target)  # accepts class indices or a distribution
        return self.alpha * mse + (1 - self.alpha) * ce


#: weights shipped inside this package, laid out like their Hub repos (config.json, model.safetensors, README.md)
WEIGHTS = Path(__file__).parent / "weights"


@emozoo.hookimpl
def register_backbones(register):
    # ``squeezenet.ferplus_w25``: a quarter-width SqueezeNet trained briefly on FER+, to show how a plugin
    # publishes weights; pretrained=True finds the shipped copy offline, or the Hub repo.
    register("squeezenet", SqueezeNet, pretrained={"ferplus_w25": emozoo.PretrainedCfg(
        hf_hub_id="emozoo/squeezenet.ferplus_w25", folder=WEIGHTS / "squeezenet.ferplus_w25",
        description="SqueezeNet 1.1 at width 0.25 (48 k parameters), 4 epochs on FER+: a demo tag")})


@emozoo.hookimpl
def register_fusions(register):
    register("geometric_mean", GeometricMean)


@emozoo.hookimpl
def register_distill_losses(register):
    register("logit_mse", LogitMSE)
