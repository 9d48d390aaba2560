"""Small fitted fusions beside the plain means: does calibrating the members on the training holdout before
averaging them add accuracy? Every subset of two or more members, test-time flip on, scored on FER+ PublicTest.

    python benchmarks/fitted_fusions.py --members runs/members/0_resnet18 runs/members/1_resnet18 \
        runs/members/2_vgg13 runs/members/3_mini_xception --out results/ferplus/fitted_fusions_PublicTest.jsonl

Each row scores, on the same member outputs (computed once per split):

- ``mean_logit`` and ``mean_prob``: the built-in fusions, nothing fitted;
- ``temperature_prob``: one temperature per member (``p_m = softmax(z_m / T_m)``), then ``mean_prob``;
- ``scaled_logit``: one positive scale per member on its logits, then ``mean_logit``;
- ``class_bias``: ``mean_logit`` plus one offset per class.

The fitted ones are fitted with L-BFGS on the members' shared training holdout (their recipe's ``holdout``, as
``emozoo ensemble`` fits ``learned_weights``), against the FER+ vote distributions, never on the split scored.
"""
from __future__ import annotations

import argparse
import itertools
import json

import torch
import torch.nn.functional as F

from emozoo.data.transforms import eval_transform
from emozoo.errors import EmozooError
from emozoo.workflows import _member_outputs, open_holdout, open_split
from fusion_search import load_members


def temperature_prob(z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.softmax(z * torch.exp(-p).view(-1, 1, 1), -1).mean(0) + 1e-12)


def scaled_logit(z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return (z * torch.exp(p).view(-1, 1, 1)).mean(0)


def class_bias(z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return z.mean(0) + p


#: name -> (fusion(logits (M, N, C), params) -> log-scores (N, C), number of parameters given M and C)
FITTED = {"temperature_prob": (temperature_prob, lambda m, c: m),
          "scaled_logit": (scaled_logit, lambda m, c: m),
          "class_bias": (class_bias, lambda m, c: c)}


def fit(fn, logits: torch.Tensor, targets: torch.Tensor, size: int) -> torch.Tensor:
    """Parameters (starting from zero: the plain fusion) minimising cross-entropy to ``targets``."""
    p = torch.zeros(size, requires_grad=True)
    opt = torch.optim.LBFGS([p], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(fn(logits, p), targets)
        loss.backward()
        return loss

    opt.step(closure)
    return p.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ensemble", nargs="?", help="a saved EmoXNet folder (its members are searched)")
    ap.add_argument("--members", nargs="+", default=[], metavar="DIR", help="member folders instead of an ensemble")
    ap.add_argument("--data", default="ferplus")
    ap.add_argument("--split", default="PublicTest")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write one JSON object per row here")
    args = ap.parse_args()
    if bool(args.ensemble) == bool(args.members):
        ap.error("give either an ensemble folder or --members")
    torch.set_num_threads(args.threads)
    model, holdout, labels = load_members(args.ensemble, args.members)
    if not holdout:
        raise SystemExit("fitted_fusions.py: error: the members share no training holdout in their recipes; "
                         "nothing to fit on (emozoo unpack keeps each member's holdout)")
    model.eval()
    model.flip = True
    config = model.config
    fit_set = open_holdout(args.data, "Training", holdout, eval_transform(config.input), config.label_names, soft=True)
    val = open_split(args.data, args.split, eval_transform(config.input), config.label_names)
    vl, _, vt = _member_outputs(model, val, True)
    fl, _, ft = _member_outputs(model, fit_set, True)
    rows = []
    for k in range(2, len(labels) + 1):
        for subset in itertools.combinations(range(len(labels)), k):
            pick = list(subset)
            scores = {"mean_logit": vl[pick].mean(0), "mean_prob": torch.log(vl[pick].softmax(-1).mean(0))}
            for name, (fn, size) in FITTED.items():
                p = fit(fn, fl[pick], ft, size(k, vl.shape[-1]))
                with torch.no_grad():
                    scores[name] = fn(vl[pick], p)
            for name, s in scores.items():
                correct = int((s.argmax(1) == vt).sum())
                rows.append({"members": [labels[i] for i in pick], "fusion": name, "flip": True,
                             "accuracy": round(correct / len(vt), 4), "correct": correct, "n": len(vt)})
                print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    try:
        main()
    except EmozooError as exc:
        raise SystemExit(f"fitted_fusions.py: error: {exc}")
