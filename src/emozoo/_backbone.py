"""The backbone contract, and the adapter that makes any timm architecture an emozoo backbone."""
from __future__ import annotations

import torch
from torch import nn

from . import errors


class BackboneBase(nn.Module):
    """Base class for backbones (ensemble members).

    Subclasses set ``self.num_features`` and implement :meth:`forward_features` (images to pooled
    features of shape ``(B, num_features)``) and :meth:`forward_head` (features to logits).
    ``forward`` is their composition. Fusions that stack features (e.g. ``stacking``) use
    ``forward_features``; everything else only needs ``forward``.
    """

    num_features: int
    num_classes: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class LinearHead(nn.Module):
    """Dropout followed by a linear classifier; ``num_classes=0`` gives an identity head."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x))


class TimmBackbone(BackboneBase):
    """Any timm architecture as a backbone: ``emozoo.create("timm/resnet34")``.

    Built with random weights (``pretrained=False``): this library never downloads ImageNet weights.
    Keyword arguments go to :func:`timm.create_model`.
    """

    def __init__(self, model_name: str, num_classes: int = 8, in_chans: int = 1, **kwargs):
        super().__init__()
        import timm

        if not timm.is_model(model_name):
            raise errors.UnknownBackboneError(
                f"timm/{model_name}", [f"timm/{n}" for n in timm.list_models()],
                hint="Names after 'timm/' are timm architectures (timm.list_models()).",
            )
        self.model = timm.create_model(model_name, pretrained=False, num_classes=num_classes,
                                       in_chans=in_chans, **kwargs)
        self.num_features = self.model.num_features
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.get_classifier()(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
