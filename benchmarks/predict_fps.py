"""End-to-end frames per second of ``emozoo predict`` on a 640x480 video, with its parts split out.

A video of a real face (the public-domain astronaut photo in ``examples/``, moving across the frame)
is written to a temporary folder, then for each available detector it measures:

- end to end: ``Predictor(model, detector)(video)`` (decode, detect, crop, classify in batches);
- decode: reading and converting the frames alone;
- detect: the detector on the decoded frames;
- classify: preparing the face crops and the model on them, per frame and per face.

::

    python benchmarks/predict_fps.py --frames 300 --threads 2    # writes benchmarks/results/predict_fps.{md,json}

Target: at least 30 frames per second with ``emoxnetlite`` and the default detector on 2 CPU cores.
The BlazeFace detectors come from ``plugins/emozoo-blazeface`` (used from the source tree when the
plugin is not installed).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TARGET_FPS = 30


def make_video(path: Path, frames: int, fps: float = 30.0) -> Path:
    """640x480 MPEG-4 video: the astronaut's head and shoulders (about 100 px face) sliding left and right
    over a noisy colour gradient."""
    import cv2

    photo = np.asarray(Image.open(ROOT / "examples" / "astronaut.jpg").convert("RGB"))
    ramp = np.linspace(0, 1, 640)[None, :, None] * np.array([90, 60, 30]) + np.linspace(0, 1, 480)[:, None, None] * 80
    background = (ramp + np.random.default_rng(0).normal(0, 8, (480, 640, 3)) + 60).clip(0, 255).astype(np.uint8)
    head = photo[20:320, 100:350]  # 300 x 250
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    for i in range(frames):
        x = int(195 + 180 * np.sin(2 * np.pi * i / 150))
        frame = background.copy()
        frame[90:390, x:x + 250] = head
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def read_frames(path: Path) -> list[np.ndarray]:
    import cv2

    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def detectors(names: list[str] | None, threads: int) -> dict:
    from _plugins import ensure_blazeface

    import emozoo

    ensure_blazeface()
    names = names or [n for n in ("blazeface", "blazeface_short", "haar") if n in emozoo.list_detectors()]
    return {n: emozoo.create_detector(n, **({"num_threads": threads} if n.startswith("blazeface") else {}))
            for n in names}


def measure(model_name: str, name: str, detector, video: Path, frames: list[np.ndarray], batch_size: int) -> dict:
    from emozoo import Predictor

    predictor = Predictor(model_name, detector, batch_size=batch_size)
    list(predictor(frames[:5], progress=False))  # warm-up

    t = time.perf_counter()
    faces = sum(len(p.faces) for p in predictor(video, progress=False))
    e2e = time.perf_counter() - t

    t = time.perf_counter()
    read_frames(video)
    decode = time.perf_counter() - t

    t = time.perf_counter()
    found = [predictor.detect(f) for f in frames]
    detect = time.perf_counter() - t

    t = time.perf_counter()
    crops = [c for f, fs in zip(frames, found) for c in predictor.crops(f, fs)]
    prep = time.perf_counter() - t
    t = time.perf_counter()
    predictor.classify(crops)
    classify = time.perf_counter() - t
    t = time.perf_counter()
    for c in crops[:100]:
        predictor.classify([c])
    one = (time.perf_counter() - t) / max(1, min(100, len(crops)))

    n = len(frames)
    return {"detector": name, "frames": n, "faces": faces, "fps_end_to_end": round(n / e2e, 1),
            "decode_ms_per_frame": round(1000 * decode / n, 2), "detect_ms_per_frame": round(1000 * detect / n, 2),
            "crop_ms_per_face": round(1000 * prep / max(1, len(crops)), 3),
            "classify_ms_per_face_batched": round(1000 * classify / max(1, len(crops)), 3),
            "classify_ms_per_face_alone": round(1000 * one, 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=300, help="length of the generated video")
    p.add_argument("--model", default="emoxnetlite")
    p.add_argument("--detector", action="append", help="detector(s) to measure (default: every one available)")
    p.add_argument("--threads", type=int, default=2, help="torch, OpenCV and LiteRT threads")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict_fps.md")
    args = p.parse_args(argv)

    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    dets = detectors(args.detector, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "clip.mp4", args.frames)
        frames = read_frames(video)
        rows = []
        for name, det in dets.items():
            rows.append(measure(args.model, name, det, video, frames, args.batch_size))
            print(json.dumps(rows[-1]), flush=True)

    command = f"python benchmarks/predict_fps.py --frames {args.frames} --threads {args.threads}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, {args.threads} threads, "
               f"load average {load:.1f} at the end")
    default = next((r for r in rows if r["detector"] == "blazeface"), rows[0] if rows else None)
    lines = [
        "# emozoo predict: frames per second on a 640x480 video",
        "",
        f"`{args.model}`, {args.frames} frames with one face, {machine}; torch {torch.__version__}, "
        f"OpenCV {cv2.__version__}. Target: {TARGET_FPS} fps end to end with the default detector.",
        "",
        "```bash",
        command,
        "```",
        "",
        "| detector | fps end to end | decode ms/frame | detect ms/frame | crop ms/face | classify ms/face (batched) "
        "| classify ms/face (alone) | faces |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *[f"| `{r['detector']}` | **{r['fps_end_to_end']}** | {r['decode_ms_per_frame']} | "
          f"{r['detect_ms_per_frame']} | "
          f"{r['crop_ms_per_face']} | {r['classify_ms_per_face_batched']} | {r['classify_ms_per_face_alone']} | "
          f"{r['faces']}/{r['frames']} |" for r in rows],
        "",
    ]
    if default:
        verdict = "meets" if default["fps_end_to_end"] >= TARGET_FPS else "misses"
        lines += [f"Default detector `{default['detector']}`: {default['fps_end_to_end']} fps, {verdict} the "
                  f"{TARGET_FPS} fps target on this machine.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "machine": machine, "model": args.model,
                                                         "results": rows}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
