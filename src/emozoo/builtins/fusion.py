"""Built-in fusion strategies: how an EmoXNet turns its members' outputs into one prediction.

Every fusion maps the members' logits ``z`` of shape ``(M, B, C)`` (and their pooled features, a list
of ``(B, F_i)`` tensors) to fused logits ``(B, C)`` whose softmax is the ensemble's probability.
Below, ``p_m = softmax(z_m)`` is member ``m``'s probability and ``log`` is natural.

- ``mean_prob``: ``log(1/M sum_m p_m)``;
- ``mean_logit``: ``1/M sum_m z_m``;
- ``learned_weights`` (trainable): ``sum_m w_m log p_m`` with ``w = softmax(a)``;
- ``stacking`` (trainable): ``W [z_1; ...; z_M] + b``, or the same over the concatenated features;
- ``majority_vote``: ``log((n_c + 1/M sum_m p_m) / (M + 1))`` where ``n_c`` counts votes for class c.

Trainable fusions are fitted on held-out data. Before fitting, ``learned_weights`` gives the same
probabilities as ``mean_logit`` and ``stacking`` over logits the same logits.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..hookspecs import hookimpl


class Fusion(nn.Module):
    """Base class: stores the ensemble's shape; subclasses implement ``forward(logits, features)``."""

    trainable = False

    def __init__(self, num_members: int, num_classes: int, feature_dims: Sequence[int] = ()):
        super().__init__()
        for name, value in (("num_members", num_members), ("num_classes", num_classes)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{type(self).__name__}: {name} must be a positive integer, got {value!r}")
        self.num_members, self.num_classes = num_members, num_classes
        self.feature_dims = [int(d) for d in feature_dims]

    def extra_repr(self) -> str:
        return f"num_members={self.num_members}, num_classes={self.num_classes}"


def mean_log_prob(logits: torch.Tensor) -> torch.Tensor:
    """``log(1/M sum_m softmax(z_m))`` of logits ``(M, B, C)``, as ``logsumexp_m(log_softmax(z_m)) - log M``."""
    return torch.logsumexp(logits.log_softmax(-1), dim=0) - math.log(logits.shape[0])


class MeanProb(Fusion):
    """Average of the members' probabilities: ``log(1/M sum_m softmax(z_m))``.

    Computed as ``logsumexp_m(log_softmax(z_m)) - log M``, which never under- or overflows.
    """

    def forward(self, logits: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return mean_log_prob(logits)


class MeanLogit(Fusion):
    """Average of the members' logits: ``1/M sum_m z_m`` (softmax: normalised geometric mean of probabilities)."""

    def forward(self, logits: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return logits.mean(0)


class LearnedWeights(Fusion):
    """Learned log-linear pool: ``sum_m w_m log_softmax(z_m)`` with ``w = softmax(a)``.

    ``a`` is a learnable ``(M,)`` vector initialised to zeros, so ``w`` starts uniform. Weighting the
    log-probabilities (rather than the raw logits) makes the weights independent of each member's
    logit scale; softmax of the output is the normalised weighted geometric mean of the ``p_m``.
    """

    trainable = True

    def __init__(self, num_members: int, num_classes: int, feature_dims: Sequence[int] = ()):
        super().__init__(num_members, num_classes, feature_dims)
        self.weight_logits = nn.Parameter(torch.zeros(num_members))

    @property
    def weights(self) -> torch.Tensor:
        """The normalised member weights ``w`` (sum to 1)."""
        return self.weight_logits.softmax(0)

    def forward(self, logits: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.einsum("m,mbc->bc", self.weights.to(logits.dtype), logits.log_softmax(-1))


class Stacking(Fusion):
    """Stacked generalisation: a linear layer over the members' concatenated outputs.

    ``input="logits"`` (default): ``W [z_1; ...; z_M] + b`` with ``W`` of shape ``(C, M*C)``,
    initialised to ``[I/M, ..., I/M]`` and ``b = 0`` so it starts equal to ``mean_logit``.
    ``input="features"``: ``W [f_1; ...; f_M] + b`` over the pooled features (``sum(feature_dims)``
    inputs), with ``nn.Linear``'s default initialisation.
    """

    trainable = True
    INPUTS = ("logits", "features")

    def __init__(self, num_members: int, num_classes: int, feature_dims: Sequence[int] = (),
                 input: str = "logits"):
        super().__init__(num_members, num_classes, feature_dims)
        if input not in self.INPUTS:
            raise ConfigError(f"stacking: input must be one of {self.INPUTS}, got {input!r}")
        self.input = input
        if input == "features":
            if len(self.feature_dims) != num_members or min(self.feature_dims, default=0) < 1:
                raise ConfigError(f"stacking: input='features' needs feature_dims with one positive size "
                                  f"per member ({num_members}), got {self.feature_dims}")
            self.linear = nn.Linear(sum(self.feature_dims), num_classes)
        else:
            self.linear = nn.Linear(num_members * num_classes, num_classes)
            with torch.no_grad():
                self.linear.weight.copy_(torch.eye(num_classes).repeat(1, num_members) / num_members)
                self.linear.bias.zero_()

    def forward(self, logits: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.input == "features":
            x = torch.cat(list(features), dim=1)
        else:
            x = logits.permute(1, 0, 2).flatten(1)  # (B, M*C): member-major, matching the init
        return self.linear(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, input={self.input!r}"


class MajorityVote(Fusion):
    """Plurality vote, ties broken by mean probability: ``log((n_c + pbar_c) / (M + 1))``.

    ``n_c`` is the number of members whose argmax is class ``c`` and ``pbar = 1/M sum_m p_m``. Since
    ``0 < pbar_c < 1`` and the ``n_c`` are integers, the argmax is the most-voted class, and among
    tied classes the one of highest mean probability. The fractions sum to 1, so softmax of the output
    is exactly ``(n + pbar) / (M + 1)``. The votes carry no gradient; ``pbar`` keeps the fusion
    differentiable so an ensemble using it can still be trained end to end. Computed in log space,
    ``logaddexp(log n_c, log pbar_c) - log(M + 1)``, so it stays finite for extreme logits.
    """

    def forward(self, logits: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        m, _, c = logits.shape
        votes = F.one_hot(logits.argmax(-1), c).sum(0).to(logits.dtype)
        return torch.logaddexp(votes.log(), mean_log_prob(logits)) - math.log(m + 1)


BUILTIN_FUSIONS = {
    "mean_prob": MeanProb,
    "mean_logit": MeanLogit,
    "learned_weights": LearnedWeights,
    "stacking": Stacking,
    "majority_vote": MajorityVote,
}


@hookimpl
def register_fusions(register):
    for name, factory in BUILTIN_FUSIONS.items():
        register(name, factory)
