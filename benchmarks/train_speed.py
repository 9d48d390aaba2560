"""Training speed with per-image augmentation in loader workers against ``--batch-augment``.

    python benchmarks/train_speed.py mini_xception --images 4096 --out benchmarks/results/train_speed_mini_xception.json

Trains the same model on the same FER+ images with the same recipe twice in one process, once per
augmentation path (``Recipe.batch_augment`` False / True), for two epochs each, and prints images per
second of the second epoch (the first also decodes the images once when batches are augmented; that
one-time cost is printed apart). On a GPU the loader is the bottleneck that ``--batch-augment`` removes;
on a CPU both paths share the same cores with the model, so the gain is the loader's own work.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from torch.utils.data import Subset

import emozoo
from emozoo.cli.train import parse_kv
from emozoo.train import Recipe, device_for, fit
from emozoo.workflows import open_split, train_transform_for


def measure(name: str, model_args: dict, data_spec: str, images: int, batch_augment: bool, batch_size: int,
            num_workers: int) -> dict:
    data = open_split(data_spec, "Training", soft=True)
    torch.manual_seed(0)
    model = emozoo.create(name, label_names=data.label_names, **model_args)
    recipe = Recipe(epochs=2, batch_size=batch_size, num_workers=num_workers, batch_augment=batch_augment)
    data.transform = train_transform_for(model.config.input, recipe)
    images = min(images, len(data))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = fit(model, Subset(data, range(images)), None, recipe, out, progress=False)
        total = time.perf_counter() - start
    first, second = (h["seconds"] for h in result["history"])
    return {"path": "batch_augment" if batch_augment else f"loader ({num_workers} workers)",
            "images_per_s": round(images / second, 1), "epoch_s": second,
            "one_time_s": round(total - first - second, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="mini_xception")
    ap.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="e.g. width=0.5")
    ap.add_argument("--data", default="ferplus", help="data spec with a Training split")
    ap.add_argument("--images", type=int, default=4096, help="training images per epoch")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=1, help="loader workers of the per-image path")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_args = parse_kv(args.model_arg)
    rows = [measure(args.model, model_args, args.data, args.images, flag, args.batch_size, args.num_workers)
            for flag in (False, True)]
    speedup = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    report = {"model": args.model, "model_args": model_args, "device": str(device_for()), "threads": args.threads,
              "images": args.images, "batch_size": args.batch_size, "rows": rows, "speedup": round(speedup, 2)}
    print(f"{args.model} {model_args or ''} on {report['device']}, {args.threads} threads, {args.images} images, "
          f"batch {args.batch_size}")
    for r in rows:
        print(f"  {r['path']:<22} {r['images_per_s']:>8.1f} images/s  (epoch {r['epoch_s']} s; "
              f"one-time {r['one_time_s']} s)")
    print(f"  batch augmentation: {speedup:.2f}x the images/s of the loader path")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
