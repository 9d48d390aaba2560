"""Compare emozoo's face detectors on real photos that ship inside PyPI packages.

Faces found, false positives and milliseconds per photo for each detector (``haar``, and ``blazeface``
and ``blazeface_short`` from ``plugins/emozoo-blazeface``, used from the source tree when the plugin is
not installed). The photos are read straight out of the packages' wheels (nothing is redistributed)::

    pip download scikit-image==0.26.0 insightface==2.1 --no-deps -d /tmp/wheels
    python benchmarks/compare_detectors.py --wheels /tmp/wheels      # writes benchmarks/results/detectors.md

``grace_hopper.jpg`` comes from the installed matplotlib. Each photo lists its faces by hand (boxes in
pixels); a detection is a hit when its centre lies in a face's box and its size is within 0.4-2.5x the
face's, one detection per face; any other detection is a false positive (except in ``ignore`` boxes:
a painted portrait in the background). Three more cases are made from the astronaut photo: turned
30 and 45 degrees in the image plane, and shrunk so the face is about 55 or 25 pixels wide in 640x480.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import statistics
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

#: (name, file inside its package, face boxes, ignore boxes, licence of the photo)
PHOTOS = [
    ("astronaut", "skimage/data/astronaut.png", [(170, 60, 280, 175)], [],
     "public domain (NASA; Eileen Collins)"),
    ("cameraman (profile)", "skimage/data/camera.png", [(175, 90, 265, 205)], [], "CC0 (Lav Varshney)"),
    ("grace_hopper", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", [(150, 100, 375, 335)], [],
     "public domain (US Navy)"),
    ("group of six (t1)", "insightface/data/images/t1.jpg",
     [(52, 275, 169, 391), (266, 166, 373, 274), (454, 287, 568, 401), (733, 364, 829, 459), (870, 65, 1006, 207),
      (1120, 285, 1230, 395)], [(290, 45, 370, 115)], "unknown (a TV promotional still): used here, not redistributed"),
    ("aligned face crop 112px", "insightface/data/images/Tom_Hanks_54745.png", [(0, 0, 112, 112)], [],
     "unknown: used here, not redistributed"),
    *[(name, f"skimage/data/{name}.png", [], [], "CC0") for name in ("coffee", "chelsea", "brick", "grass", "gravel")],
    ("rocket", "skimage/data/rocket.jpg", [], [], "public domain (SpaceX)"),
]


def read_member(member: str, wheels: list[Path]) -> Image.Image | None:
    """A file of a package: from the installed package if there is one, else from a downloaded wheel."""
    package, _, rest = member.partition("/")
    spec = importlib.util.find_spec(package)
    if spec and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / rest
        if path.is_file():
            return Image.open(path)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            if member in z.namelist():
                return Image.open(io.BytesIO(z.read(member)))
    return None


def derived(astronaut: np.ndarray):
    """Harder cases made from the astronaut photo: turned faces and a small face."""
    face = (170, 60, 280, 175)
    out = []
    for angle in (30, 45):
        turned = np.asarray(Image.fromarray(astronaut).rotate(angle, center=(225, 117), resample=Image.BILINEAR))
        out.append((f"astronaut turned {angle} deg", turned, [face], []))
    for side, px in ((256, 55), (128, 25)):
        canvas = np.full((480, 640, 3), 120, np.uint8)
        small = Image.fromarray(astronaut).resize((side, side), Image.BILINEAR)
        canvas[200:200 + side, 340:340 + side] = np.asarray(small)
        box = tuple(v * side / 512 + off for v, off in zip(face, (340, 200, 340, 200)))
        out.append((f"astronaut small ({px} px face in 640x480)", canvas, [box], []))
    return out


def score(boxes, faces, ignore):
    """(hits, false positives) of detected ``boxes`` against the hand-marked ``faces``."""
    def centre_in(b, g):
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        return g[0] <= cx <= g[2] and g[1] <= cy <= g[3]

    def size_ok(b, g):
        ratio = ((b[2] - b[0]) * (b[3] - b[1]) / ((g[2] - g[0]) * (g[3] - g[1]))) ** 0.5
        return 0.4 <= ratio <= 2.5

    unmatched, hits, fps = list(faces), 0, 0
    for b in boxes:
        match = next((g for g in unmatched if centre_in(b, g) and size_ok(b, g)), None)
        if match is not None:
            unmatched.remove(match)
            hits += 1
        elif not any(centre_in(b, g) for g in ignore):
            fps += 1
    return hits, fps


def detectors(threads: int):
    import cv2
    from _plugins import ensure_blazeface

    import emozoo

    cv2.setNumThreads(threads)
    ensure_blazeface()
    made = {"haar": emozoo.create_detector("haar")}
    for name in ("blazeface", "blazeface_short"):
        if name in emozoo.list_detectors():
            made[name] = emozoo.create_detector(name, num_threads=threads)
    return made


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wheels", type=Path, default=None, help="folder of downloaded wheels to read photos from")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per photo (the median is kept)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "detectors.md")
    args = p.parse_args(argv)
    wheels = sorted(args.wheels.glob("*.whl")) if args.wheels else []

    cases, missing = [], []
    for name, member, faces, ignore, _licence in PHOTOS:
        im = read_member(member, wheels)
        if im is None:
            missing.append(member)
            continue
        cases.append((name, np.asarray(im.convert("RGB")), faces, ignore))
    astronaut = next((c[1] for c in cases if c[0] == "astronaut"), None)
    if astronaut is not None:
        cases += derived(astronaut)
    if missing:
        print(f"not found (see --wheels): {', '.join(missing)}", file=sys.stderr)

    dets = detectors(args.threads)
    rows, totals = [], {n: dict(hits=0, fps=0, ms=[]) for n in dets}
    n_faces = sum(len(c[2]) for c in cases)
    for name, image, faces, ignore in cases:
        row = [name, f"{image.shape[1]}x{image.shape[0]}", str(len(faces))]
        for dname, det in dets.items():
            det.detect(image)  # warm-up
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                found = det.detect(image)
                times.append((time.perf_counter() - t) * 1000)
            hits, fps = score([f.box for f in found], faces, ignore)
            ms = statistics.median(times)
            totals[dname]["hits"] += hits
            totals[dname]["fps"] += fps
            totals[dname]["ms"].append(ms)
            row.append(f"{hits}/{len(faces)}" + (f", {fps} FP" if fps else "") + f" ({ms:.1f} ms)")
        rows.append(row)
        print(" | ".join(row), flush=True)

    summary = {n: {"faces_found": t["hits"], "faces": n_faces, "false_positives": t["fps"],
                   "median_ms_per_photo": round(statistics.median(t["ms"]), 2),
                   "mean_ms_per_photo": round(statistics.mean(t["ms"]), 2)} for n, t in totals.items()}
    command = "python benchmarks/compare_detectors.py --wheels /tmp/wheels"
    command += (f" --repeat {args.repeat}" if args.repeat != 5 else "") + (
        f" --threads {args.threads}" if args.threads != 2 else "")
    lines = [
        "# Face detectors on real photos",
        "",
        f"{len(cases)} photos ({n_faces} faces, {sum(not c[2] for c in cases)} photos without a face), "
        f"{args.threads} threads, median of {args.repeat} runs per photo; machine: {os.cpu_count()} CPUs "
        "(shared: times are indicative).",
        "",
        "```bash",
        "pip download scikit-image==0.26.0 insightface==2.1 --no-deps -d /tmp/wheels",
        command,
        "```",
        "",
        "| detector | faces found | false positives | median ms / photo | mean ms / photo |",
        "| --- | --- | --- | --- | --- |",
        *[f"| `{n}` | {s['faces_found']}/{s['faces']} | {s['false_positives']} | {s['median_ms_per_photo']} | "
          f"{s['mean_ms_per_photo']} |" for n, s in summary.items()],
        "",
        "| photo | size | faces | " + " | ".join(f"`{n}`" for n in dets) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in dets) + " |",
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        "Photos: " + "; ".join(f"{name}: `{member}` ({licence})" for name, member, _, _, licence in PHOTOS) + ".",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "summary": summary,
                                                         "photos": [r[0] for r in rows]}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
