"""Test-time augmentation beyond the mirror: does averaging a model over shifted, scaled or rotated
copies of the face add accuracy? Scored on FER+ PublicTest, each view computed once.

    python benchmarks/tta_views.py emoxnetlite.ferplus --out results/ferplus/tta_views_emoxnetlite.json

Views are the shapes the training augmentation draws from (``augment="default"``): shifts of 4 px
(1/12 of 48), scales 0.9 / 1.1 and rotations of 5 degrees, each also mirrored, resampled as training
resamples them (``RandomAffine``: nearest neighbour, black fill; ``--resample bilinear`` for smooth
resampling with the border repeated). Probabilities are averaged over the views of a set.
"""
from __future__ import annotations

import argparse
import json
import math

import torch
import torch.nn.functional as F

import emozoo
from emozoo._builder import model_spec
from emozoo.data import eval_transform
from emozoo.train import preload
from emozoo.workflows import open_split


def affine(x: torch.Tensor, black: torch.Tensor, resample: str = "nearest", scale: float = 1.0, tx: float = 0.0,
           ty: float = 0.0, degrees: float = 0.0) -> torch.Tensor:
    """Normalised faces ``x`` zoomed by ``scale``, shifted by (``tx``, ``ty``) (fractions of half the side)
    and rotated; ``black`` is the normalised value of a black pixel, per channel, used as fill."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a) / scale, -math.sin(a) / scale, tx],
                          [math.sin(a) / scale, math.cos(a) / scale, ty]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    if resample == "bilinear":
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    black = black.view(1, -1, 1, 1)
    return F.grid_sample(x - black, grid, mode="nearest", padding_mode="zeros", align_corners=False) + black


SHIFT = 4 / 24  # 4 px of a 48 px face, in grid units (half the side is 1)
PIXEL = 1 / 24  # one pixel: nearest-neighbour sampling makes shifts by whole pixels exact
VIEWS = {"identity": {}, "zoom 1.1": {"scale": 1.1}, "zoom 0.9": {"scale": 0.9},
         "right 4px": {"tx": -SHIFT}, "left 4px": {"tx": SHIFT}, "down 4px": {"ty": -SHIFT}, "up 4px": {"ty": SHIFT},
         "rotate +5": {"degrees": 5}, "rotate -5": {"degrees": -5},
         "right 1px": {"tx": -PIXEL}, "left 1px": {"tx": PIXEL}, "down 1px": {"ty": -PIXEL}, "up 1px": {"ty": PIXEL},
         "right 2px": {"tx": -2 * PIXEL}, "left 2px": {"tx": 2 * PIXEL}, "down 2px": {"ty": -2 * PIXEL},
         "up 2px": {"ty": 2 * PIXEL}}
SETS = {"identity + mirror": ["identity"],
        "+ 1px shifts": ["identity", "right 1px", "left 1px", "down 1px", "up 1px"],
        "+ 2px shifts": ["identity", "right 2px", "left 2px", "down 2px", "up 2px"],
        "+ zooms": ["identity", "zoom 1.1", "zoom 0.9"],
        "+ shifts": ["identity", "right 4px", "left 4px", "down 4px", "up 4px"],
        "+ rotations": ["identity", "rotate +5", "rotate -5"],
        "+ shifts and zooms": ["identity", "zoom 1.1", "zoom 0.9", "right 4px", "left 4px", "down 4px", "up 4px"],
        "all 4px, zooms, rotations": [v for v in VIEWS if not v.endswith(("1px", "2px"))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a model name with weights or a folder (its saved flip is turned off)")
    ap.add_argument("--data", default="ferplus")
    ap.add_argument("--split", default="PublicTest")
    ap.add_argument("--resample", choices=["nearest", "bilinear"], default="nearest")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--views", help="comma-separated view names to compute (default: all); sets that need "
                                    "others are left out. Names: " + ", ".join(VIEWS))
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = emozoo.create(model_spec(args.model), pretrained=True, flip=False).eval()
    data = open_split(args.data, args.split, eval_transform(model.config.input), model.config.label_names)
    x, y = preload(data)  # each face read and transformed once
    spec = model.config.input
    mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
    black = (-mean / std).expand(x.shape[1])
    names = [v.strip() for v in args.views.split(",")] if args.views else list(VIEWS)
    unknown = sorted(set(names) - set(VIEWS))
    if unknown:
        ap.error(f"unknown view(s) {unknown}; known: {', '.join(VIEWS)}")
    views = {name: VIEWS[name] for name in names}
    sets = {name: members for name, members in SETS.items() if set(members) <= set(views)}
    probs = {}
    with torch.no_grad():
        for name, kw in views.items():
            view = affine(x, black, args.resample, **kw) if kw else x
            for mirror in (False, True):
                v = view.flip(-1) if mirror else view
                probs[name, mirror] = torch.cat([model(v[i:i + 512]) for i in range(0, len(v), 512)]).softmax(1)

    def accuracy(p: torch.Tensor) -> float:
        return round((p.argmax(1) == y).float().mean().item(), 4)

    result = {"model": args.model, "data": args.data, "split": args.split, "n": len(y), "resample": args.resample,
              "views": {name: {"alone": accuracy(probs[name, False]),
                               "with mirror": accuracy(probs[name, False] + probs[name, True])} for name in views},
              "sets": {name: {"views": 2 * len(names), "accuracy": accuracy(sum(probs[k, False] + probs[k, True]
                                                                                  for k in names))}
                       for name, names in sets.items()}}
    print(f"{args.model} on {args.data} {args.split} ({len(y)} faces), {args.resample} resampling")
    for name, row in result["views"].items():
        print(f"  {name:<12} alone {row['alone']:.4f}  with its mirror {row['with mirror']:.4f}")
    for name, row in result["sets"].items():
        print(f"  {name:<20} {row['views']:>2} views  {row['accuracy']:.4f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
