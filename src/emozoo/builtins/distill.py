"""Built-in knowledge-distillation losses, used to train an EmoXNetLite student from an EmoXNet teacher.

Every loss is an ``nn.Module`` called as ``loss(student_logits, teacher_logits, target)`` with logits
``(B, C)`` and ``target`` either class indices ``(B,)`` or label distributions ``(B, C)`` (e.g. FER+
vote distributions); it returns a scalar. Notation: ``s`` and ``t`` are student and teacher logits,
``T`` the temperature, ``CE(s, y)`` :func:`soft_cross_entropy`. The teacher is treated as a constant
(its logits are detached).

- ``kd``: ``alpha T^2 KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) CE(s, y)``;
- ``kd_smooth``: ``kd`` with the teacher distribution smoothed, ``q = (1 - eps) softmax(t/T) + eps/C``;
- ``dist``: ``beta T^2 (1 - rho_inter) + gamma T^2 (1 - rho_intra) + alpha_ce CE(s, y)``, Pearson
  correlations between student and teacher probabilities per sample and per class.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..hookspecs import hookimpl


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the batch, for class indices ``(B,)`` or distributions ``(B, C)``.

    ``-1/B sum_b sum_c y_bc log softmax(logits_b)_c``; an index target is the one-hot ``y``.
    """
    if not target.is_floating_point():
        return F.cross_entropy(logits, target)
    if target.shape != logits.shape:
        raise ValueError(f"a label-distribution target must have the logits' shape {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    return -(target.to(logits.dtype) * logits.log_softmax(-1)).sum(-1).mean()


def _number(name: str, value: float, ok: Callable[[float], bool], requirement: str) -> float:
    """``value`` as a float, or a :class:`ConfigError` naming ``name`` unless it is a number meeting ``ok``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise ConfigError(f"distillation loss argument {name} must be {requirement}, got {value!r}")
    return float(value)


def _kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, T: float) -> torch.Tensor:
    """``T^2 KL(teacher_probs || softmax(s/T))``, summed over classes and averaged over the batch."""
    return T * T * F.kl_div((student_logits / T).log_softmax(-1), teacher_probs, reduction="batchmean")


class KDLoss(nn.Module):
    """Hinton et al. 2015: ``alpha T^2 KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) CE(s, y)``.

    KL is summed over classes and averaged over the batch; ``T^2`` keeps the soft term's gradient
    scale independent of ``T``. Defaults: ``T=4``, ``alpha=0.9``.
    """

    def __init__(self, T: float = 4.0, alpha: float = 0.9):
        super().__init__()
        self.T = _number("T", T, lambda v: v > 0, "> 0")
        self.alpha = _number("alpha", alpha, lambda v: 0 <= v <= 1, "in [0, 1]")

    def teacher_probs(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """The distribution the student is pulled towards: ``softmax(t/T)``, detached."""
        return (teacher_logits.detach() / self.T).softmax(-1)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        soft = _kl(student_logits, self.teacher_probs(teacher_logits).to(student_logits.dtype), self.T)
        return self.alpha * soft + (1 - self.alpha) * soft_cross_entropy(student_logits, target)

    def extra_repr(self) -> str:
        return f"T={self.T}, alpha={self.alpha}"


class KDSmoothLoss(KDLoss):
    """EmoXNetLite's distillation loss: KD towards a label-smoothed teacher distribution.

    ``alpha T^2 KL(q || softmax(s/T)) + (1 - alpha) CE(s, y)`` with ``q = (1 - eps) softmax(t/T) + eps/C``.

    ``KL(q || .)`` equals the soft cross-entropy ``-sum_c q_c log softmax(s/T)_c`` minus the entropy
    of ``q``, a constant: same gradients, but the loss is 0 when the student matches ``q`` and
    ``eps=0`` gives exactly ``kd``. Defaults: ``eps=0.1``, ``T=2``, ``alpha=0.9``.
    """

    def __init__(self, T: float = 2.0, alpha: float = 0.9, eps: float = 0.1):
        super().__init__(T, alpha)
        self.eps = _number("eps", eps, lambda v: 0 <= v < 1, "in [0, 1)")

    def teacher_probs(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        return (1 - self.eps) * super().teacher_probs(teacher_logits) + self.eps / teacher_logits.shape[-1]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"


def _mean_pearson(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim``, averaged over the other dimension."""
    return F.cosine_similarity(a - a.mean(dim, keepdim=True), b - b.mean(dim, keepdim=True), dim=dim).mean()


class DISTLoss(nn.Module):
    """DIST (Huang et al., NeurIPS 2022): matches inter- and intra-class correlations of probabilities.

    ``beta T^2 (1 - rho_inter) + gamma T^2 (1 - rho_intra) + alpha_ce CE(s, y)``.

    With ``P = softmax(s/T)`` and ``Q = softmax(t/T)`` (both ``(B, C)``), ``rho_inter`` is the Pearson
    correlation of rows ``P_b`` and ``Q_b`` (across classes) averaged over samples, and ``rho_intra``
    that of columns ``P_:c`` and ``Q_:c`` (across the batch) averaged over classes. Defaults
    ``beta=gamma=1``, ``T=1``, ``alpha_ce=1`` are the paper's ImageNet setting (its CIFAR-100 setting is
    ``beta=gamma=2``, ``T=4``). For a batch of one sample ``rho_intra`` is 0, a constant.
    """

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, T: float = 1.0, alpha_ce: float = 1.0):
        super().__init__()
        self.beta = _number("beta", beta, lambda v: v >= 0, ">= 0")
        self.gamma = _number("gamma", gamma, lambda v: v >= 0, ">= 0")
        self.T = _number("T", T, lambda v: v > 0, "> 0")
        self.alpha_ce = _number("alpha_ce", alpha_ce, lambda v: v >= 0, ">= 0")

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        p = (student_logits / self.T).softmax(-1)
        q = (teacher_logits.detach() / self.T).softmax(-1).to(p.dtype)
        inter = 1 - _mean_pearson(p, q, dim=1)
        intra = 1 - _mean_pearson(p, q, dim=0)
        return (self.T ** 2 * (self.beta * inter + self.gamma * intra)
                + self.alpha_ce * soft_cross_entropy(student_logits, target))

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, T={self.T}, alpha_ce={self.alpha_ce}"


BUILTIN_DISTILL_LOSSES = {
    "kd": KDLoss,
    "kd_smooth": KDSmoothLoss,
    "dist": DISTLoss,
}


@hookimpl
def register_distill_losses(register):
    for name, factory in BUILTIN_DISTILL_LOSSES.items():
        register(name, factory)
