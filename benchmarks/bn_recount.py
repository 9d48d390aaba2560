"""BatchNorm recount ("precise BN"): does a model score higher once its BatchNorm statistics are measured
afresh over the training faces instead of the running averages training left behind?

    python benchmarks/bn_recount.py emoxnetlite.ferplus --aug clean --save recounted.safetensors
    python benchmarks/bn_recount.py emoxnet.ferplus --aug default --flip 1

Scores the model on FER+ PublicTest (with ``--members``' accuracies for an ensemble), resets every
BatchNorm layer's running mean and variance, averages them over ``--faces`` training faces (all by
default, in a fixed order) in training mode, and scores it again. ``--aug clean`` recounts on the faces
as the model sees them at test time, ``--aug default`` (or ``light``, ``strong``) under the training
augmentation, with a fixed seed so that a rerun measures the same statistics. ``--flip`` 0/1 overrides
the model's test-time flip (with flip on, the recount sees each face and its mirror). ``--save FILE``
writes the recounted weights as safetensors. ``--members 2`` (or ``0,3``) recounts only those members of an
ensemble and keeps the others' statistics as trained.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Subset

from emozoo.data import eval_transform, train_transform
from emozoo.train import update_batchnorm
from emozoo.workflows import evaluate_model, open_split, resolve_model


def member_list(text: str) -> list[int]:
    """``--members 0,3`` -> [0, 3]."""
    try:
        return [int(i) for i in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated member numbers, e.g. 2 or 0,3, not {text!r}") from None


def score(model, data: str, split: str) -> dict:
    r = evaluate_model(model, data, split, progress=False)
    return {"accuracy": round(r["accuracy"], 4), "correct": round(r["accuracy"] * r["n"]), "n": r["n"],
            "members": r.get("members")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a model name or folder")
    ap.add_argument("--aug", default="clean", choices=["clean", "light", "default", "strong"])
    ap.add_argument("--faces", type=int, default=0, help="training faces to recount over [0: all]")
    ap.add_argument("--flip", type=int, choices=[0, 1], help="override the model's test-time flip")
    ap.add_argument("--data", default="ferplus")
    ap.add_argument("--split", default="PublicTest")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--members", type=member_list, help="an ensemble's members to recount, e.g. 2 or 0,3 [all]")
    ap.add_argument("--save", help="write the recounted weights here (safetensors)")
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()
    if args.faces < 0:
        ap.error(f"--faces must be 0 (all) or a positive number, not {args.faces}")
    torch.set_num_threads(args.threads)
    start = time.time()

    model = resolve_model(args.model, flip=None if args.flip is None else bool(args.flip))
    result = {"model": args.model, "aug": args.aug, "flip": args.flip, "before": score(model, args.data, args.split)}
    print("before:", result["before"], flush=True)
    tf = eval_transform(model.config.input) if args.aug == "clean" else train_transform(model.config.input, args.aug)
    train = open_split(args.data, "Training", tf, model.config.label_names)
    faces = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
    faces = faces[:args.faces] if args.faces else faces
    torch.manual_seed(0)  # the augmentation draws
    loader = DataLoader(Subset(train, faces), batch_size=256)
    with torch.no_grad():
        if args.members is None:
            update_batchnorm(model, (x for x, _ in loader))
        else:  # each chosen member alone, on the batches it sees inside the ensemble (face and mirror with flip)
            if not hasattr(model, "members"):
                raise SystemExit(f"--members needs an ensemble; {args.model} is a single network")
            chosen = args.members
            if not all(0 <= i < len(model.members) for i in chosen):
                raise SystemExit(f"--members: {args.model} has members 0-{len(model.members) - 1}, not "
                                 f"{','.join(map(str, chosen))}")
            batches = [x for x, _ in loader]  # loaded (and augmented) once, so that every member sees the same draws
            for i in chosen:
                update_batchnorm(model.members[i], (torch.cat([x, x.flip(-1)]) if model.flip else x for x in batches))
            result["members_recounted"] = chosen
    result["faces"] = len(faces)
    result["after"] = score(model, args.data, args.split)
    result["seconds"] = round(time.time() - start)
    print("after: ", result["after"], f"({len(faces)} faces, {args.aug}; {result['seconds']} s)", flush=True)
    if args.save:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.save)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
