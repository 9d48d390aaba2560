"""``emozoo predict``: the expression of every face in photos, videos and a webcam."""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import click

from .output import echo_json
from .predict_output import JsonLines, JsonList, frame_key
from .predict_output import resume as resume_output

#: --detect-every's default: emozoo.inference.tracking.DEFAULT_DETECT_EVERY (not imported here: it would load torch for
#: every command; a test checks they agree)
DETECT_EVERY = 6

#: extensions an annotated image keeps; any other input is written as PNG
ANNOTATE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@click.command("predict")
@click.argument("paths", nargs=-1)
@click.option("--model", default="emoxnetlite", show_default=True,
              help="Model: a name with published weights (arch or arch.tag), local-dir:PATH or hf-hub:ORG/NAME.")
@click.option("--detector", default="auto", show_default=True,
              help="Face detector: auto (blazeface when emozoo-blazeface is installed, else haar), haar, "
                   "full (the inputs are face crops), or one a plugin registered (`emozoo plugins`).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Faces per forward pass; faces of many images share a batch.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list: one object per image or video frame, one per line as they come "
                   "(with --summary: the per-track summary instead).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write one CSV row per face (and per faceless image or error) to FILE, or - for stdout.")
@click.option("--jsonl", "jsonl_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write one JSON object per image or video frame and line (JSON Lines) to FILE, or - for stdout.")
@click.option("--resume", is_flag=True,
              help="Append to the --csv / --jsonl FILE a killed run left, skipping the (source, frame) results "
                   "already in it (videos are read again from the start, so tracks match an uninterrupted run).")
@click.option("--annotate", "annotate_dir", type=click.Path(file_okay=False),
              help="Write copies of the inputs with boxes and labels drawn into this folder.")
@click.option("--every", default=1, show_default=True, type=click.IntRange(min=1),
              help="Videos and camera: classify every N-th frame.")
@click.option("--smooth", default=0.0, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Videos and camera: weight of past frames in a moving average of each track's scores (0: none).")
@click.option("--detect-every", default=DETECT_EVERY, show_default=True, type=click.IntRange(min=1),
              help="Video files: run the detector on every N-th classified frame (and on both sides of a scene cut) and "
                   "follow the faces between; 1: detect on every frame.")
@click.option("--summary", is_flag=True,
              help="Videos: print per track its duration, dominant expression and each label's share of its frames.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Videos: draw each track's scores over time into this image file (needs emozoo[plot]).")
@click.option("--camera", type=click.IntRange(min=0), metavar="INDEX",
              help="Read webcam INDEX; with a display, show the overlay (q or Esc quits; Ctrl-C stops).")
@click.option("--min-face", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Ignore faces narrower or shorter than this many pixels.")
@click.option("--min-confidence", default=0.0, show_default=True, metavar="P",
              help="Label a face 'uncertain' when its top calibrated probability is below P, in [0, 1) "
                   "(benchmarks/results/coverage.md shows the accuracy and coverage of each P).")
@click.option("--device", default=None, help="torch device for the model (default: cpu).")
@click.option("--flip/--no-flip", default=None,
              help="Turn test-time flip (face and mirror averaged) on or off for emoxnet / emoxnetlite "
                   "[default: as published].")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Spread the inputs over a Ray cluster: a local one (--ray alone, put after PATHS) or the one "
                   "this machine belongs to (--ray=auto, --ray=HOST:6379); videos are split into segments, and the "
                   "records are those of one process. "
                   "Needs pip install 'emozoo[ray]'.")
@click.option("--ray-workers", type=click.IntRange(min=1), default=None,
              help="With --ray: worker processes, one CPU each [default: one per cluster CPU].")
@click.pass_context
def predict_cmd(ctx, paths, model, detector, batch_size, as_json, csv_path, jsonl_path, resume, annotate_dir, every,
                smooth, detect_every, summary, plot_path, camera, min_face, min_confidence, device, flip, ray_address,
                ray_workers):
    """Find the faces in PATHS (images, videos, directories, glob patterns) and classify their expressions.

    Prints one line per face, or writes --json / --csv with every label's calibrated score, the margin
    between the top two, whether the face is uncertain (--min-confidence) and, for an ensemble, each
    member's top label and the members' agreement. An input that cannot be read is reported on one
    line and the others go on; the exit status is 1 if any failed.

    In videos, faces are detected on every --detect-every-th frame and followed between (ByteTrack), and each keeps
    a track number. Results are written as they come, so memory stays the same for a video of any length.
    """
    from tqdm import tqdm

    from .._builder import create
    from .._plot import check_plot
    from ..inference import CAMERA_PREFIX, Predictor, resolve_device
    from ..inference.engine import check_min_confidence
    from ..inference.timeline import Timeline

    if camera is not None and paths:
        raise click.UsageError("give PATH... or --camera INDEX, not both")
    if camera is None and not paths:
        raise click.UsageError("give at least one PATH (image, video, directory or glob pattern) or --camera INDEX")
    if sum((as_json, csv_path == "-", jsonl_path == "-")) > 1:
        raise click.UsageError("--json, --csv - and --jsonl - all write to standard output: give a FILE to all but one")
    if resume and not (csv_path not in (None, "-") or jsonl_path not in (None, "-")):
        raise click.UsageError("--resume appends to the --csv FILE or --jsonl FILE a killed run left: give one")
    if plot_path:
        check_plot(plot_path)
    if ray_address is not None and (camera is not None or annotate_dir):
        raise click.UsageError("--ray reads files on its workers: it does not take --camera or --annotate")
    device = resolve_device(device)  # before any work: a device this machine lacks is a one-line error
    for path, option in ((csv_path, "--csv"), (jsonl_path, "--jsonl")):
        if path:
            _check_output(path, option)  # before the model loads; the file is opened once its header is known
    min_confidence = check_min_confidence(min_confidence)
    csv_file = jsonl_file = None
    csv_done, jsonl_done = set(), set()
    annotator = None
    try:
        annotator = _Annotator(annotate_dir, every) if annotate_dir else None
        window = _overlay_window(writes_files=bool(as_json or csv_path or annotate_dir)) if camera is not None else None
        model_name, model = model, create(model, pretrained=True, flip=flip)
        predictor = Predictor(model, detector, batch_size=batch_size, min_face=min_face, device=device,
                              min_confidence=min_confidence)
        if csv_path:
            header = _CsvWriter.header(predictor.labels, predictor.member_names)
            csv_file, csv_done = resume_output(csv_path, "--csv", header) if resume else (None, set())
            csv_file = csv_file or _open_output(csv_path, "--csv")
        if jsonl_path:
            jsonl_file, jsonl_done = resume_output(jsonl_path, "--jsonl") if resume else (None, set())
            jsonl_file = jsonl_file or _open_output(jsonl_path, "--jsonl", newline=None)
    except BaseException:
        for f in (csv_file, jsonl_file):
            if f not in (None, sys.stdout):
                f.close()
        raise
    inputs = [f"{CAMERA_PREFIX}{camera}"] if camera is not None else _expand(paths)
    if resume:  # an image whose result every output file has is not read again
        inputs = [i for i in inputs if not all(frame_key(i, None) in d for d, given in
                                               ((csv_done, csv_path), (jsonl_done, jsonl_path)) if given)]
    rows = _CsvWriter(csv_file, predictor.labels, predictor.member_names, header=not csv_done and _at_start(csv_file),
                      done=csv_done) if csv_file else None
    lines = JsonLines(jsonl_file, jsonl_done) if jsonl_file else None
    timeline = Timeline(predictor.labels, series=bool(plot_path)) if summary or plot_path else None
    records = JsonList() if as_json and not summary else None
    failed, faces = 0, 0
    try:
        if ray_address is not None:
            from ..inference.ray import predict_ray

            stream = predict_ray(inputs, model_name, detector, address=ray_address or None, num_workers=ray_workers,
                                 batch_size=batch_size, every=every, smooth=smooth, min_face=min_face,
                                 min_confidence=min_confidence, flip=flip, device=str(device), detect_every=detect_every)
        else:
            stream = predictor(inputs, every=every, smooth=smooth, keep_images=bool(annotator or window),
                               detect_every=detect_every)
        for pred in stream:
            failed += pred.error is not None
            faces += len(pred.faces)
            if pred.error:
                with tqdm.external_write_mode(file=sys.stderr):
                    click.echo(f"Error: {pred.error}", err=True)
            if records:
                records.write(pred.as_dict())
            if rows:
                rows.write(pred)
            if lines:
                lines.write(pred)
            if timeline:
                timeline.add(pred)
            if annotator:
                annotator.write(pred)
            if window and pred.image is not None and not window.show(pred):
                break
            if not (as_json or summary or csv_path == "-" or jsonl_path == "-") and not pred.error:
                with tqdm.external_write_mode(file=sys.stdout):
                    click.echo("\n".join(_lines(pred)))
    except KeyboardInterrupt:
        if camera is None:
            raise
    finally:
        for sink in (rows, lines, records, annotator, window):
            if sink:
                sink.close()
    if timeline and plot_path:
        timeline.plot(plot_path)
    if timeline and summary:
        if as_json:
            echo_json({"tracks": timeline.summary()})
        else:
            click.echo("\n".join(timeline.lines() or ["no tracked face"]))
    if failed:
        click.echo(f"{failed} input(s) failed.", err=True)
        ctx.exit(1)


COMMANDS = (predict_cmd,)


def _expand(paths) -> list:
    """The inputs, directories expanded, ``-`` read from standard input as one encoded image; the files a
    directory scan left out are listed on standard error, one line each (so nothing is skipped silently)."""
    from ..inference.sources import expand_inputs, stdin_image

    skipped: list[tuple[str, str]] = []
    if list(paths).count("-") > 1:
        raise click.UsageError("- (standard input) can be given only once")
    if "-" in paths and sys.stdin.isatty():
        raise click.UsageError("- reads one image from standard input, which is a terminal here: "
                               "pipe one in (emozoo predict - < face.jpg)")
    items = expand_inputs([stdin_image(sys.stdin.buffer.read()) if p == "-" else p for p in paths], skipped)
    for path, reason in skipped:
        click.echo(f"Skipped {path}: {reason}", err=True)
    return items


def _lines(pred) -> list[str]:
    where = pred.source if pred.frame is None else f"{pred.source} frame {pred.frame}"
    if not pred.faces:
        return [f"{where}: no face"]
    return [f"{where}: face {i + 1} at ({', '.join(f'{v:.0f}' for v in f.box)}): {_verdict(f)}"
            for i, f in enumerate(pred.faces)]


def _verdict(face) -> str:
    """``happiness 0.91 (margin 0.85, 5/5 members agree, detector 0.99)``; ``uncertain (happiness 0.41) (...)``."""
    top = face.top_label
    text = f"uncertain ({top} {face.scores[top]:.2f})" if face.uncertain else f"{face.label} {face.scores[top]:.2f}"
    notes = [f"margin {face.margin:.2f}"]
    if face.members is not None:
        notes.append(f"{sum(m['label'] == top for m in face.members)}/{len(face.members)} members agree")
    return f"{text} ({', '.join(notes + [f'detector {face.confidence:.2f}'])})"


def _check_output(path: str, option: str) -> None:
    """A one-line :class:`emozoo.DataError` when ``--csv FILE`` (or ``--jsonl FILE``) cannot be written, checked
    before any work (``-``, standard output, always can)."""
    from ..errors import DataError

    if path == "-":
        return
    parent = Path(path).parent
    if not parent.is_dir():
        raise DataError(f"{option} {path}: the folder {parent} does not exist; create it or write elsewhere")
    if Path(path).is_dir() or not os.access(parent, os.W_OK) or (Path(path).exists() and not os.access(path, os.W_OK)):
        raise DataError(f"{option} {path}: cannot write it; choose a writable path")


def _open_output(path: str, option: str = "--csv", newline: str | None = ""):
    """``--csv FILE`` (or ``--jsonl FILE``) opened for writing (``-``: standard output), or a one-line
    :class:`emozoo.DataError` that says why it cannot be."""
    from ..errors import DataError

    if path == "-":
        return sys.stdout
    _check_output(path, option)
    try:
        return open(path, "w", newline=newline)  # noqa: SIM115 - closed by its writer's close()
    except OSError as exc:
        raise DataError(f"{option} {path}: cannot write it ({exc.strerror or exc}); choose a writable path") from None


def _at_start(file) -> bool:
    return file is sys.stdout or file.tell() == 0


class _CsvWriter:
    """One row per face (or one row for an image without a face, or with an error), flushed as it goes: the box,
    label and every label's score, then ``margin``, ``uncertain`` (0/1), ``agreement`` and, for an ensemble, a
    ``member:i:backbone`` column per member holding its top label."""

    def __init__(self, file, labels, member_names=None, header: bool = True, done: set | None = None):
        self.labels, self.members = list(labels), list(member_names or [])
        self.file, self.done = file, done or set()
        self.csv = csv.writer(self.file)
        if header:
            self.csv.writerow(self.header(self.labels, self.members))
        self.file.flush()

    @staticmethod
    def header(labels, member_names=None) -> list[str]:
        return ["source", "frame", "time", "face", "track", "x0", "y0", "x1", "y1", "confidence", "label", *labels,
                "margin", "uncertain", "agreement", *(f"member:{n}" for n in member_names or []), "error"]

    def write(self, pred) -> None:
        if frame_key(pred.source, pred.frame) in self.done:
            return
        head = [pred.source, _blank(pred.frame), _blank(pred.time, "{:.3f}")]
        if not pred.faces:
            self.csv.writerow(head + [""] * (11 + len(self.labels) + len(self.members)) + [pred.error or ""])
        for i, f in enumerate(pred.faces):
            self.csv.writerow(head + [i, _blank(f.track), *(f"{v:.1f}" for v in f.box), f"{f.confidence:.4f}", f.label,
                                     *(f"{f.scores[n]:.4f}" for n in self.labels), f"{f.margin:.4f}", int(f.uncertain),
                                     _blank(f.agreement, "{:.4f}"), *(m["label"] for m in f.members or []), ""])
        self.file.flush()

    def close(self) -> None:
        if self.file is not sys.stdout:
            self.file.close()


def _blank(value, fmt="{}"):
    return "" if value is None else fmt.format(value)


class _Annotator:
    """Writes each image with its faces drawn into a folder (same name and format where it can), and
    each video as ``NAME.mp4`` of its processed frames."""

    def __init__(self, out_dir: str, every: int):
        from ..errors import DataError

        self.dir = Path(out_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"--annotate {out_dir}: cannot create this folder ({exc.strerror or exc}); "
                            "choose a writable folder") from None
        self.every, self.used, self.videos = every, set(), {}

    def _name(self, source: str, ext: str | None = None) -> Path:
        base = Path(source).name if not source.startswith("<") else source.strip("<>").replace(" ", "-")
        stem, suffix = Path(base).stem, ext or Path(base).suffix.lower()
        if suffix not in ANNOTATE_EXTS and ext is None:
            suffix = ".png"
        name, n = f"{stem}{suffix}", 1
        while name in self.used:
            name, n = f"{stem}-{n}{suffix}", n + 1
        self.used.add(name)
        return self.dir / name

    def write(self, pred) -> None:
        import cv2

        from ..inference import draw_faces

        if pred.image is None:
            return
        bgr = cv2.cvtColor(draw_faces(pred.image, pred.faces), cv2.COLOR_RGB2BGR)
        if pred.frame is None:
            path = self._name(pred.source)
            ok, data = cv2.imencode(path.suffix, bgr)
            if ok:
                path.write_bytes(data.tobytes())
            return
        if pred.source not in self.videos:
            fps = _video_fps(pred.source) / self.every
            path = self._name(pred.source.replace(":", "-"), ".mp4")
            self.videos[pred.source] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), max(fps, 1.0),
                                                       (bgr.shape[1], bgr.shape[0]))
        self.videos[pred.source].write(bgr)

    def close(self) -> None:
        for writer in self.videos.values():
            writer.release()


def _video_fps(source: str) -> float:
    import cv2

    from ..inference import CAMERA_PREFIX

    if source.startswith(CAMERA_PREFIX):
        return 30.0
    cap = cv2.VideoCapture(source)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    cap.release()
    return fps


class _Window:
    """The webcam overlay: an OpenCV window showing each frame with its faces drawn."""

    name = "emozoo (q or Esc quits)"

    def show(self, pred) -> bool:
        """Draw one frame; False once the user pressed q or Esc or closed the window."""
        import cv2

        from ..inference import draw_faces

        cv2.imshow(self.name, cv2.cvtColor(draw_faces(pred.image, pred.faces), cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27) and cv2.getWindowProperty(self.name, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        import cv2

        cv2.destroyAllWindows()


def _has_display() -> bool:
    if sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _overlay_window(writes_files: bool) -> _Window | None:
    """The overlay window when a display and a GUI-enabled OpenCV exist; without them, None if results
    are written elsewhere, else a one-line error saying what to do."""
    import cv2

    hint = "or write the results with --csv FILE, --json or --annotate DIR"
    if not _has_display():
        if writes_files:
            return None
        raise click.ClickException(f"--camera shows its overlay on a display, and there is none (DISPLAY is not set): "
                                   f"run it on a desktop, {hint}")
    try:
        cv2.namedWindow(_Window.name, cv2.WINDOW_NORMAL)
    except cv2.error:
        if writes_files:
            return None
        raise click.ClickException("this OpenCV has no GUI (opencv-python-headless), so the overlay cannot be shown: "
                                   "pip uninstall opencv-python-headless && pip install 'opencv-python<5', "
                                   f"{hint}") from None
    return _Window()
