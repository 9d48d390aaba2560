"""Images per second of ``emozoo predict --ray`` with 1 and 2 Ray workers, against the plain single-process run.

A folder of ``--images`` variants of the photos in ``examples/`` (turned, mirrored, cropped and scaled, saved as
JPEG) is written to a temporary folder. Then, in one run:

- single process: ``emozoo.predict(folder, model, detector)`` with ``--threads`` torch threads (the baseline);
- Ray: a local cluster of ``max(--workers)`` CPUs (started once, its start-up timed apart), then
  ``emozoo.inference.ray.predict_ray(folder, ..., num_workers=N)`` for each N. Each time includes starting the
  actors and loading the model in each, as a real ``--ray`` run pays it; a 1-photo run with the same workers
  measures that start-up apart (take more ``--images`` to see past it).

Every Ray run's records are compared with the baseline's (``identical``)::

    python benchmarks/ray_predict.py --images 200 --workers 1,2    # writes benchmarks/results/ray_predict.{md,json}

Workers use one CPU each (Ray sets their torch threads to 1), so ``--threads 1`` is the like-for-like baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_folder(folder: Path, n: int) -> Path:
    """``n`` JPEG variants of the example photos, 320 to 640 pixels wide."""
    photos = [Image.open(p).convert("RGB") for p in sorted((ROOT / "examples").glob("*")) if p.suffix in (".jpg", ".png")]
    for i in range(n):
        im = photos[i % len(photos)].rotate((i * 7) % 25 - 12, expand=False)
        if i % 2:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        w, h = im.size
        c = (i % 5) * min(w, h) // 40
        im = im.crop((c, c, w - c, h - c))
        width = 320 + (i * 37) % 321
        im.resize((width, max(1, round(im.size[1] * width / im.size[0]))), Image.BILINEAR).save(
            folder / f"photo{i:04d}.jpg", quality=90)
    return folder


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--workers", default="1,2", help="comma list of Ray worker counts")
    p.add_argument("--model", default="emoxnetlite")
    p.add_argument("--detector", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the single-process baseline")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ray_predict.md")
    args = p.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]

    import ray
    import torch

    import emozoo
    from emozoo.inference.ray import predict_ray

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp), args.images)
        model = emozoo.create(args.model, pretrained=True)
        emozoo.predict(folder / "photo0000.jpg", model, args.detector)  # warm-up
        t = time.perf_counter()
        baseline = [r.as_dict() for r in emozoo.predict(folder, model, args.detector, progress=False)]
        wall = time.perf_counter() - t
        faces = sum(len(r["faces"]) for r in baseline)
        rows.append({"run": f"single process ({args.threads} thread{'s' if args.threads > 1 else ''})", "workers": 0,
                     "seconds": round(wall, 2), "images_per_s": round(args.images / wall, 1), "startup_s": None,
                     "identical": True})
        print(json.dumps(rows[-1]), flush=True)
        t = time.perf_counter()
        ray.init(address="local", num_cpus=max(workers), include_dashboard=False, logging_level="ERROR")
        cluster_start = time.perf_counter() - t
        try:
            for n in workers:
                t = time.perf_counter()
                list(predict_ray(folder / "photo0000.jpg", args.model, args.detector, num_workers=n))
                startup = time.perf_counter() - t  # starting n workers, loading the model, one photo
                t = time.perf_counter()
                got = [r.as_dict() for r in predict_ray(folder, args.model, args.detector, num_workers=n)]
                wall = time.perf_counter() - t
                rows.append({"run": f"Ray, {n} worker{'s' if n > 1 else ''}", "workers": n, "seconds": round(wall, 2),
                             "images_per_s": round(args.images / wall, 1), "startup_s": round(startup, 2),
                             "identical": got == baseline})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            ray.shutdown()

    command = f"python benchmarks/ray_predict.py --images {args.images} --workers {args.workers} --threads {args.threads}"
    if args.detector != "auto" or args.model != "emoxnetlite":
        command += f" --model {args.model} --detector {args.detector}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, load average {load:.1f} "
               f"at the end")
    detector = emozoo.create_detector(args.detector)
    lines = [
        "# emozoo predict --ray: images per second",
        "",
        f"`{args.model}` with the `{args.detector}` detector ({type(detector).__name__}), {args.images} photos "
        f"({faces} faces found), {machine}; torch {torch.__version__}, Ray {ray.__version__}. Starting the local "
        f"Ray cluster took {cluster_start:.1f} s (not counted below); each Ray time includes starting its workers "
        "and loading the model in each, which a 1-photo run with the same workers measures apart.",
        "",
        "```bash",
        command,
        "```",
        "",
        "| run | seconds | images/s | start-up s (a 1-photo run) | records identical to the single-process run |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {r['run']} | {r['seconds']} | **{r['images_per_s']}** | {_dash(r['startup_s'])} | "
          f"{'yes' if r['identical'] else 'NO'} |" for r in rows],
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(
        {"command": command, "machine": machine, "model": args.model, "detector": args.detector, "images": args.images,
         "faces": faces, "cluster_start_s": round(cluster_start, 2), "results": rows}, indent=2) + "\n")
    print("\n".join(lines))


def _dash(value) -> str:
    return "-" if value is None else str(value)


if __name__ == "__main__":
    main()
