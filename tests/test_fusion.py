"""Built-in fusions, checked against values computed by hand with ``math``."""
import math

import pytest
import torch
from conftest import softmax  # noqa: E402

from emozoo.builtins.fusion import (
    BUILTIN_FUSIONS,
    LearnedWeights,
    MajorityVote,
    MeanLogit,
    MeanProb,
    Stacking,
)
from emozoo.errors import ConfigError


def stack(*members):
    """Logits ``(M, 1, C)`` for one sample from plain lists, one per member."""
    return torch.tensor([[m] for m in members], dtype=torch.float64)


Z1, Z2 = [1.0, 0.0], [0.0, 2.0]  # two members, two classes
P1, P2 = softmax(Z1), softmax(Z2)


def test_every_builtin_fusion_is_registered_through_its_hook_and_builds():
    import emozoo
    from emozoo._registry import FUSIONS

    builtin = {"mean_prob", "mean_logit", "learned_weights", "stacking", "majority_vote"}
    assert builtin <= set(emozoo.list_fusions())
    for name in builtin:
        entry = FUSIONS.get(name)
        assert entry.owner == "emozoo.builtins.fusion" and entry.description, name
        fusion = entry.factory(num_members=3, num_classes=4, feature_dims=[6, 7, 8])
        assert isinstance(fusion, emozoo.Fusion)
        fused = fusion(torch.randn(3, 2, 4), [torch.randn(2, d) for d in (6, 7, 8)])
        assert fused.shape == (2, 4) and torch.isfinite(fused).all(), name


@pytest.mark.parametrize("name", sorted(BUILTIN_FUSIONS))
def test_shapes_distribution_and_gradient(name):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 4, requires_grad=True)
    features = [torch.randn(5, d) for d in (6, 7, 8)]
    fusion = BUILTIN_FUSIONS[name](num_members=3, num_classes=4, feature_dims=[6, 7, 8])
    out = fusion(logits, features)
    assert out.shape == (5, 4)
    probs = out.softmax(-1)
    assert torch.all(probs >= 0) and torch.allclose(probs.sum(-1), torch.ones(5))
    out[:, 0].sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_trainable_flags():
    assert {n: f.trainable for n, f in BUILTIN_FUSIONS.items()} == {
        "mean_prob": False, "mean_logit": False, "learned_weights": True, "stacking": True,
        "majority_vote": False}
    assert not list(MeanProb(2, 2).parameters()) and not list(MajorityVote(2, 2).parameters())


def test_mean_prob_hand_computed():
    out = MeanProb(2, 2)(stack(Z1, Z2), [])
    expected = [math.log((a + b) / 2) for a, b in zip(P1, P2)]
    assert out[0].tolist() == pytest.approx(expected, abs=1e-12)


def test_mean_prob_is_mean_of_probabilities_and_stable():
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 5, dtype=torch.float64) * 3
    out = MeanProb(4, 5)(logits, [])
    assert torch.allclose(out.exp(), logits.softmax(-1).mean(0))
    extreme = torch.tensor([[[1000.0, -1000.0]], [[-1000.0, 1000.0]]])
    assert MeanProb(2, 2)(extreme, [])[0].tolist() == pytest.approx([math.log(0.5)] * 2)


def test_mean_logit_hand_computed():
    assert MeanLogit(2, 2)(stack(Z1, Z2), [])[0].tolist() == [0.5, 1.0]


def test_learned_weights_hand_computed():
    fusion = LearnedWeights(2, 2).double()
    assert fusion.weights.tolist() == [0.5, 0.5]
    out = fusion(stack(Z1, Z2), [])
    assert out[0].tolist() == pytest.approx([0.5 * math.log(a) + 0.5 * math.log(b) for a, b in zip(P1, P2)])
    with torch.no_grad():
        fusion.weight_logits.copy_(torch.tensor([math.log(3.0), 0.0]))  # w = (0.75, 0.25)
    out = fusion(stack(Z1, Z2), [])
    assert out[0].tolist() == pytest.approx([0.75 * math.log(a) + 0.25 * math.log(b) for a, b in zip(P1, P2)])
    out.sum().backward()
    assert fusion.weight_logits.grad is not None


def test_stacking_over_logits_starts_as_mean_logit():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5)
    fusion = Stacking(3, 5)
    assert fusion.linear.weight.shape == (5, 15)
    assert torch.allclose(fusion(logits, []), MeanLogit(3, 5)(logits, []), atol=1e-6)


def test_stacking_over_logits_hand_computed():
    fusion = Stacking(2, 2).double()
    with torch.no_grad():  # class 0 reads member 0's class-0 logit, class 1 reads member 1's class-1 logit
        fusion.linear.weight.copy_(torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]]))
        fusion.linear.bias.copy_(torch.tensor([0.5, -1.0]))
    assert fusion(stack(Z1, Z2), [])[0].tolist() == [2 * 1.0 + 0.5, 3 * 2.0 - 1.0]


def test_stacking_over_features():
    fusion = Stacking(2, 3, feature_dims=[2, 1], input="features").double()
    assert fusion.linear.weight.shape == (3, 3)
    with torch.no_grad():
        fusion.linear.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, -1.0, 2.0]]))
        fusion.linear.bias.zero_()
    features = [torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([[3.0]], dtype=torch.float64)]
    logits = torch.zeros(2, 1, 3, dtype=torch.float64)  # ignored
    assert fusion(logits, features)[0].tolist() == [1.0, 5.0, 5.0]


def test_majority_vote_picks_the_majority_over_mean_probability():
    # members 0 and 1 weakly prefer class 1; member 2 is very sure of class 0, which wins on mean prob
    members = [[0.0, 0.1, -5.0], [0.0, 0.2, -5.0], [10.0, 0.0, -5.0]]
    logits = stack(*members)
    assert MeanProb(3, 3)(logits, []).argmax(-1).item() == 0
    out = MajorityVote(3, 3)(logits, [])
    assert out.argmax(-1).item() == 1
    pbar = [sum(col) / 3 for col in zip(*(softmax(m) for m in members))]
    votes = [1, 2, 0]
    assert out[0].tolist() == pytest.approx([math.log((n + p) / 4) for n, p in zip(votes, pbar)], abs=1e-12)
    assert out.exp().sum().item() == pytest.approx(1.0)


def test_majority_vote_breaks_ties_by_mean_probability():
    # one vote each for classes 0 and 1; member 0 is more confident, so class 0 has the higher mean prob
    logits = stack([3.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    out = MajorityVote(2, 3)(logits, [])
    assert out.argmax(-1).item() == 0
    pbar = [(a + b) / 2 for a, b in zip(softmax([3.0, 0.0, 0.0]), softmax([0.0, 1.0, 0.0]))]
    assert out[0].tolist() == pytest.approx([math.log((n + p) / 3) for n, p in zip([1, 1, 0], pbar)], abs=1e-12)
    swapped = MajorityVote(2, 3)(stack([1.0, 0.0, 0.0], [0.0, 3.0, 0.0]), [])
    assert swapped.argmax(-1).item() == 1


def test_majority_vote_gradient_and_extreme_logits():
    logits = torch.tensor([[[100.0, -100.0]], [[200.0, -300.0]], [[-50.0, 50.0]]], requires_grad=True)
    out = MajorityVote(3, 2)(logits, [])
    assert torch.isfinite(out).all()
    out[0, 0].backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_invalid_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="input"):
        Stacking(2, 3, input="probs")
    with pytest.raises(ConfigError, match="feature_dims"):
        Stacking(2, 3, feature_dims=[4], input="features")
    with pytest.raises(ConfigError, match="num_members"):
        MeanProb(0, 3)
    with pytest.raises(ConfigError, match="num_classes"):
        LearnedWeights(2, 0)
