"""Every subset of an ensemble's members under every built-in averaging or learned fusion, with and without
test-time flip, scored on FER+ PublicTest; member outputs are computed once per view.

    emozoo ensemble M1 M2 ... --fusion learned_weights --flip --out runs/emoxnet.v2
    python benchmarks/fusion_search.py runs/emoxnet.v2 --out results/ferplus/fusion_search_PublicTest.jsonl
    python benchmarks/fusion_search.py --members runs/m1 runs/m2 runs/m3 --fusions mean_logit --flip on
    python benchmarks/fusion_search.py --members runs/m1 runs/m2 runs/m3 --fusions mean_logit --flip on --holdout

Learned fusions are fitted exactly as ``emozoo ensemble`` fits them (the members' shared training holdout,
``fit_fusion_on_outputs``, 30 epochs), so each row equals what ``emozoo ensemble SUBSET --fusion F [--flip]``
reports for that subset.

A row picked as the best of many on PublicTest is flattered by the picking. ``--holdout`` scores the same rows on
the members' shared training holdout instead (the faces every member kept aside, with their majority labels as on
PublicTest): a second split that none of the members trained on and the search did not choose on. Learned fusions
are fitted on that holdout, so only the plain means are searched with it.
"""
from __future__ import annotations

import argparse
import itertools
import json

import torch
import emozoo
from emozoo._models import build_fusion
from emozoo.data.transforms import eval_transform
from emozoo.errors import EmozooError
from emozoo.workflows import (_member_outputs, assemble_ensemble, fit_fusion_on_outputs, open_holdout, open_split,
                              shared_holdout)

FUSIONS = ("mean_prob", "mean_logit", "learned_weights")


def load_members(ensemble: str | None, member_dirs: list[str]):
    """The ensemble to search: a saved EmoXNet folder, or one assembled in memory from member folders."""
    if ensemble:
        model = emozoo.create(f"local-dir:{ensemble}", pretrained=True)
        return model, model.config.recipe.get("holdout"), [f"{i}:{n}" for i, n in enumerate(model.member_names)]
    members = [emozoo.create(f"local-dir:{d}", pretrained=True) for d in member_dirs]
    return assemble_ensemble(members, names=list(member_dirs)), shared_holdout(members), list(member_dirs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ensemble", nargs="?", help="a saved EmoXNet folder (its members are searched)")
    ap.add_argument("--members", nargs="+", default=[], metavar="DIR",
                    help="member folders to search instead of a saved ensemble")
    ap.add_argument("--data", default="ferplus")
    ap.add_argument("--split", default="PublicTest")
    ap.add_argument("--holdout", action="store_true",
                    help="score on the members' shared training holdout instead of --split (plain means only)")
    ap.add_argument("--fusions", default=",".join(FUSIONS), help=f"comma-separated, from {','.join(FUSIONS)}")
    ap.add_argument("--flip", choices=["both", "on", "off"], default="both", help="test-time flip settings to try")
    ap.add_argument("--fit-epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write one JSON object per row here")
    args = ap.parse_args()
    if bool(args.ensemble) == bool(args.members):
        ap.error("give either an ensemble folder or --members")
    unknown = set(args.fusions.split(",")) - set(FUSIONS)
    if unknown:
        ap.error(f"--fusions: unknown {', '.join(sorted(unknown))}; choose from {','.join(FUSIONS)}")
    fusions = [f for f in FUSIONS if f in args.fusions.split(",")]
    learned = any(f not in ("mean_prob", "mean_logit") for f in fusions)
    if args.holdout and learned:
        ap.error("--holdout scores on the faces a learned fusion is fitted on; search --fusions mean_prob,mean_logit")
    torch.set_num_threads(args.threads)
    model, holdout, labels = load_members(args.ensemble, args.members)
    model.eval()
    config, names = model.config, model.member_names
    if (learned or args.holdout) and not holdout:
        raise SystemExit("the members share no training holdout in their recipes; "
                         + ("--holdout has nothing to score on" if args.holdout else
                            "a learned fusion cannot be fitted (search --fusions mean_prob,mean_logit)"))
    if learned:
        fit = open_holdout(args.data, "Training", holdout, eval_transform(config.input), config.label_names, soft=True)
    if args.holdout:  # majority labels, as on PublicTest
        val = open_holdout(args.data, "Training", holdout, eval_transform(config.input), config.label_names)
        split = f"Training holdout ({holdout:g})"
    else:
        val, split = open_split(args.data, args.split, eval_transform(config.input), config.label_names), args.split
    rows = []
    for flip in {"both": (False, True), "on": (True,), "off": (False,)}[args.flip]:
        model.flip = flip
        vl, vf, vt = _member_outputs(model, val, True)
        if learned:
            fl, ff, ft = _member_outputs(model, fit, True)
        for k in range(1, len(names) + 1):
            for subset in itertools.combinations(range(len(names)), k):
                for fusion in fusions[:1] if k == 1 else fusions:
                    pick = list(subset)
                    torch.manual_seed(0)
                    module = build_fusion(fusion, k, len(config.label_names), [vf[i].shape[1] for i in pick]).eval()
                    if getattr(module, "trainable", False):
                        fit_fusion_on_outputs(module, fl[pick], [ff[i] for i in pick], ft, args.fit_epochs)
                    with torch.no_grad():
                        accuracy = (module(vl[pick], [vf[i] for i in pick]).argmax(1) == vt).float().mean().item()
                    rows.append({"members": [labels[i] for i in pick], "fusion": fusion, "flip": flip,
                                 "accuracy": round(accuracy, 4), "n": len(vt), "split": split})
                    print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    try:
        main()
    except EmozooError as exc:  # bad members or data: one line, no traceback
        raise SystemExit(f"fusion_search.py: error: {exc}")
