"""Weight soups: does the plain mean of the weights of several fine-tunes of one model beat each of them?
Scored on FER+ PublicTest, with the averaged model's BatchNorm statistics as averaged and recounted.

    python benchmarks/weight_soup.py emoxnetlite.ferplus runs/lite.swa_a runs/lite.swa_b

Every model must have the architecture and arguments of the first (fine-tunes that started from the same
weights, as ``emozoo distill --init`` makes them); the soup takes the first model's config. Recounting runs
the models in training mode over ``--recount`` training faces with the default augmentation, as
``--swa-epochs`` does after training.
"""
from __future__ import annotations

import argparse
import json

import torch
from torch.utils.data import DataLoader, Subset

from emozoo._weights import state_dict_mismatch
from emozoo.data import train_transform
from emozoo.train import WeightAverage, update_batchnorm
from emozoo.workflows import evaluate_model, open_split, resolve_model


def soup(models: list[torch.nn.Module]) -> torch.nn.Module:
    """The first model with every floating-point tensor replaced by the mean over ``models``."""
    first = models[0]
    for model in models[1:]:
        mismatch = state_dict_mismatch(first.state_dict(), model.state_dict())
        if mismatch:
            raise SystemExit(f"not the same architecture as the first model: {mismatch}")
    mean = WeightAverage(first)
    for model in models:
        mean.update(model)
    mean.apply(first)
    return first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model names or folders, fine-tunes of one architecture")
    ap.add_argument("--data", default="ferplus")
    ap.add_argument("--split", default="PublicTest")
    ap.add_argument("--recount", type=int, default=8192, help="training faces for the BatchNorm recount [8192]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    def accuracy(model) -> float:
        return round(evaluate_model(model, args.data, args.split, progress=False)["accuracy"], 4)

    models = [resolve_model(spec) for spec in args.models]
    result = {"models": {spec: accuracy(m) for spec, m in zip(args.models, models)}}
    mixed = soup(models)
    result["soup"] = accuracy(mixed)
    data = open_split(args.data, "Training", train_transform(mixed.config.input, "default"), mixed.config.label_names)
    faces = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:args.recount].tolist()
    torch.manual_seed(0)  # the augmentation draws, so that a rerun recounts the same statistics
    with torch.no_grad():
        update_batchnorm(mixed, (x for x, _ in DataLoader(Subset(data, faces), batch_size=64)))
    result["soup, BatchNorm recounted"] = accuracy(mixed)
    for name, value in [*result["models"].items(), ("soup", result["soup"]),
                        ("soup, BatchNorm recounted", result["soup, BatchNorm recounted"])]:
        print(f"  {name:<40} {value:.4f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
