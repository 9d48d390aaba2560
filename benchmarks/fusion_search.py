"""Every subset of an ensemble's members under every built-in averaging or learned fusion, with and without
test-time flip, scored on FER+ PublicTest; member outputs are computed once per view.

    emozoo ensemble M1 M2 ... --fusion learned_weights --flip --out runs/emoxnet.v2
    python benchmarks/fusion_search.py runs/emoxnet.v2 --out results/ferplus/fusion_search_PublicTest.jsonl

Learned fusions are fitted exactly as ``emozoo ensemble`` fits them (the members' shared training holdout,
``fit_fusion_on_outputs``, 30 epochs), so each row equals what ``emozoo ensemble SUBSET --fusion F [--flip]``
reports for that subset.
"""
from __future__ import annotations

import argparse
import itertools
import json

import torch
from torch.utils.data import Subset

import emozoo
from emozoo._models import build_fusion
from emozoo.data.transforms import eval_transform
from emozoo.train import holdout_split
from emozoo.workflows import _member_outputs, fit_fusion_on_outputs, open_split

FUSIONS = ("mean_prob", "mean_logit", "learned_weights")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ensemble", help="a saved EmoXNet folder (its members are searched)")
    ap.add_argument("--data", default="ferplus")
    ap.add_argument("--split", default="PublicTest")
    ap.add_argument("--fit-epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write one JSON object per row here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = emozoo.create(f"local-dir:{args.ensemble}", pretrained=True).eval()
    config, names = model.config, model.member_names
    holdout = config.recipe.get("holdout")
    if not holdout:
        raise SystemExit(f"{args.ensemble} has no training holdout in its recipe; build it with a learned fusion")
    fit = open_split(args.data, "Training", eval_transform(config.input), config.label_names, soft=True)
    fit = Subset(fit, holdout_split(len(fit), holdout)[1])
    val = open_split(args.data, args.split, eval_transform(config.input), config.label_names)
    rows = []
    for flip in (False, True):
        model.flip = flip
        (fl, ff, ft), (vl, vf, vt) = _member_outputs(model, fit, True), _member_outputs(model, val, True)
        for k in range(1, len(names) + 1):
            for subset in itertools.combinations(range(len(names)), k):
                for fusion in FUSIONS[:1] if k == 1 else FUSIONS:
                    pick = list(subset)
                    torch.manual_seed(0)
                    module = build_fusion(fusion, k, len(config.label_names), [vf[i].shape[1] for i in pick]).eval()
                    if getattr(module, "trainable", False):
                        fit_fusion_on_outputs(module, fl[pick], [ff[i] for i in pick], ft, args.fit_epochs)
                    with torch.no_grad():
                        accuracy = (module(vl[pick], [vf[i] for i in pick]).argmax(1) == vt).float().mean().item()
                    rows.append({"members": [f"{i}:{names[i]}" for i in pick], "fusion": fusion, "flip": flip,
                                 "accuracy": round(accuracy, 4), "n": len(vt)})
                    print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
