"""Built-in distillation losses, checked against values computed by hand with ``math``."""
import math

import pytest
import torch
from conftest import softmax  # noqa: E402

from emozoo.builtins.distill import (
    BUILTIN_DISTILL_LOSSES,
    DISTLoss,
    KDLoss,
    KDSmoothLoss,
    soft_cross_entropy,
)
from emozoo.errors import ConfigError


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def ce(logits, y):
    return -sum(a * math.log(b) for a, b in zip(y, softmax(logits)))


def pearson(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def t64(rows):
    return torch.tensor(rows, dtype=torch.float64)


S, TEACH = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]], [[2.0, 0.5, 0.0], [0.0, 1.0, 1.5]]
Y = [0, 1]
ONE_HOT = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def test_every_builtin_loss_is_registered_through_its_hook_and_gives_a_scalar():
    import emozoo
    from emozoo._registry import DISTILL_LOSSES

    assert {"kd", "kd_smooth", "dist"} <= set(emozoo.list_distill_losses())
    student, teacher = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    for name in ("kd", "kd_smooth", "dist"):
        entry = DISTILL_LOSSES.get(name)
        assert entry.owner == "emozoo.builtins.distill" and entry.description, name
        loss = entry.factory()(student, teacher, torch.tensor([0, 1, 2, 0]))
        assert loss.ndim == 0 and loss.item() > 0, name


def test_soft_cross_entropy_hand_computed():
    logits = t64([[1.0, 2.0, 0.0]])
    assert soft_cross_entropy(logits, torch.tensor([1])).item() == pytest.approx(-math.log(softmax([1, 2, 0])[1]))
    y = [0.25, 0.75, 0.0]
    assert soft_cross_entropy(logits, t64([y])).item() == pytest.approx(ce([1, 2, 0], y))
    with pytest.raises(ValueError, match="shape"):
        soft_cross_entropy(logits, t64([[0.5, 0.5]]))


def test_kd_hand_computed():
    T, alpha = 2.0, 0.5
    loss = KDLoss(T=T, alpha=alpha)(t64(S), t64(TEACH), torch.tensor(Y)).item()
    soft = sum(kl(softmax(t, T), softmax(s, T)) for s, t in zip(S, TEACH)) / 2
    hard = sum(ce(s, y) for s, y in zip(S, ONE_HOT)) / 2
    assert loss == pytest.approx(alpha * T * T * soft + (1 - alpha) * hard, rel=1e-12)


def test_kd_with_alpha_one_is_scaled_kl():
    T = 3.0
    loss = KDLoss(T=T, alpha=1.0)(t64(S), t64(TEACH), torch.tensor(Y)).item()
    expected = T * T * sum(kl(softmax(t, T), softmax(s, T)) for s, t in zip(S, TEACH)) / 2
    assert loss == pytest.approx(expected, rel=1e-12)
    assert KDLoss(alpha=1.0)(t64(S), t64(S), torch.tensor(Y)).item() == pytest.approx(0.0, abs=1e-12)


def test_kd_defaults():
    loss = KDLoss()
    assert (loss.T, loss.alpha) == (4.0, 0.9)
    smooth = KDSmoothLoss()
    assert (smooth.T, smooth.alpha, smooth.eps) == (2.0, 0.9, 0.1)
    dist = DISTLoss()
    assert (dist.beta, dist.gamma, dist.T, dist.alpha_ce) == (1.0, 1.0, 1.0, 1.0)


def test_kd_smooth_hand_computed():
    T, alpha, eps = 2.0, 0.7, 0.1
    loss = KDSmoothLoss(T=T, alpha=alpha, eps=eps)(t64(S), t64(TEACH), torch.tensor(Y)).item()
    qs = [[(1 - eps) * p + eps / 3 for p in softmax(t, T)] for t in TEACH]
    soft = sum(kl(q, softmax(s, T)) for s, q in zip(S, qs)) / 2
    hard = sum(ce(s, y) for s, y in zip(S, ONE_HOT)) / 2
    assert loss == pytest.approx(alpha * T * T * soft + (1 - alpha) * hard, rel=1e-12)


def test_kd_smooth_without_smoothing_is_kd():
    args = (t64(S), t64(TEACH), torch.tensor(Y))
    assert KDSmoothLoss(T=3.0, alpha=0.6, eps=0.0)(*args).item() == pytest.approx(
        KDLoss(T=3.0, alpha=0.6)(*args).item(), rel=1e-12)


def test_dist_hand_computed():
    beta, gamma, T, alpha_ce = 2.0, 0.5, 2.0, 0.3
    loss = DISTLoss(beta=beta, gamma=gamma, T=T, alpha_ce=alpha_ce)(t64(S), t64(TEACH), torch.tensor(Y)).item()
    P = [softmax(s, T) for s in S]
    Q = [softmax(t, T) for t in TEACH]
    inter = 1 - sum(pearson(p, q) for p, q in zip(P, Q)) / 2
    intra = 1 - sum(pearson(pc, qc) for pc, qc in zip(zip(*P), zip(*Q))) / 3
    hard = sum(ce(s, y) for s, y in zip(S, ONE_HOT)) / 2
    assert loss == pytest.approx(beta * T * T * inter + gamma * T * T * intra + alpha_ce * hard, rel=1e-9)


def test_dist_is_cross_entropy_when_student_matches_teacher():
    loss = DISTLoss()(t64(S), t64(S), torch.tensor(Y)).item()
    assert loss == pytest.approx(sum(ce(s, y) for s, y in zip(S, ONE_HOT)) / 2, rel=1e-9)


@pytest.mark.parametrize("name", sorted(BUILTIN_DISTILL_LOSSES))
def test_hard_and_one_hot_targets_agree(name):
    loss = BUILTIN_DISTILL_LOSSES[name]()
    hard = loss(t64(S), t64(TEACH), torch.tensor(Y))
    soft = loss(t64(S), t64(TEACH), t64(ONE_HOT))
    assert hard.item() == pytest.approx(soft.item(), rel=1e-12)


@pytest.mark.parametrize("name", sorted(BUILTIN_DISTILL_LOSSES))
@pytest.mark.parametrize("soft_target", [False, True])
def test_gradients_reach_the_student_only(name, soft_target):
    torch.manual_seed(0)
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    target = torch.randn(4, 5).softmax(-1) if soft_target else torch.tensor([0, 1, 4, 2])
    loss = BUILTIN_DISTILL_LOSSES[name]()(student, teacher, target)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    assert teacher.grad is None


@pytest.mark.parametrize("factory, kwargs, argument", [
    (KDLoss, {"T": 0}, "T"),
    (KDLoss, {"T": -1.0}, "T"),
    (KDLoss, {"alpha": 1.5}, "alpha"),
    (KDLoss, {"alpha": -0.1}, "alpha"),
    (KDSmoothLoss, {"eps": 1.0}, "eps"),
    (KDSmoothLoss, {"eps": -0.1}, "eps"),
    (KDSmoothLoss, {"T": 0.0}, "T"),
    (DISTLoss, {"T": 0}, "T"),
    (DISTLoss, {"beta": -1}, "beta"),
    (DISTLoss, {"gamma": -1}, "gamma"),
    (DISTLoss, {"alpha_ce": "1"}, "alpha_ce"),
])
def test_invalid_arguments_raise_config_error(factory, kwargs, argument):
    with pytest.raises(ConfigError, match=rf"\b{argument}\b"):
        factory(**kwargs)
