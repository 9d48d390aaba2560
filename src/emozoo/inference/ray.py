"""Predicting on a Ray cluster: :func:`predict_ray`, the same :class:`Prediction` records as :class:`Predictor`.

The inputs are expanded on the driver (as :func:`emozoo.inference.expand_inputs` does) into tasks: groups of image
files, and for videos frame ranges (segments) of ``segment_frames`` frames read by seeking. Ray Data's
``map_batches`` hands the tasks to a pool of actors, each of which builds its :class:`Predictor` (model and face
detector) once and reuses it for every task it gets. Results stream back in input order and are the same, row by
row, as a single-process run:

- Each face's scores depend only on its own crop (the model is in eval mode), so splitting the work changes none of
  them; the tests check that the records are equal, to the last bit, for emoxnetlite on CPU (kernels that round
  differently by batch size, as some GPU ones do, could differ in the last digits).
- A video carries state from frame to frame: detection on key frames with the boxes between interpolated
  (``detect_every > 1``), track numbers (ByteTrack) and smoothed scores (``smooth > 0``). With the defaults each video
  is therefore one task, read whole by one worker, exactly as in one process (videos run in parallel with each
  other and with the images). With ``detect_every=1`` and ``smooth=0`` the faces of a frame depend on that frame
  alone, and only the track numbers cross frames: videos are then split into segments, and the driver replays the
  numbers in frame order with the same :class:`FaceTracker` and scene-cut test the single-process path uses (each
  segment also reads the frame before it, for the test).
- A video that cannot be read to its end stops where one process would stop: the segments after the first one that
  could not read on are dropped.

Seeking is checked: when ``CAP_PROP_POS_FRAMES`` does not land on the asked frame, the segment is read by decoding
from the start and skipping. A worker that dies is restarted and its task retried (``max_retries`` times); a task
that still fails gives its input an ``error`` and the run goes on (a task of several images is first run again
image by image, so only the one that kills its worker is lost). Paths must be readable at the same
place on every node of the cluster (a shared or copied folder), and emozoo, its plugins and the model weights must
be installed on every node.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._detectors import Face
from ..errors import ConfigError
from .engine import check_min_confidence
from .results import FacePrediction, Prediction
from .sources import CAMERA_PREFIX, IMAGE_EXTS, VIDEO_EXTS, expand_inputs
from .tracking import DEFAULT_DETECT_EVERY, LOST_FRAMES, FaceTracker, scene_cut, tiny_grey

INSTALL_HINT = "Ray is not installed: pip install 'emozoo[ray]' (or pip install 'ray[data]')"


def predict_ray(inputs: Any, model: Any = "emoxnetlite", detector: Any = "auto", *, address: str | None = None,
                num_workers: int | None = None, batch_size: int = 32, every: int = 1, smooth: float = 0.0,
                min_face: float = 0, min_confidence: float = 0.0, flip: bool | None = None, device: str | None = None,
                images_per_task: int = 16, segment_frames: int = 64, max_retries: int = 3,
                detect_every: int = DEFAULT_DETECT_EVERY) -> Iterator[Prediction]:
    """Yield a :class:`Prediction` per image and per ``every``-th video frame, in input order, computed by
    ``num_workers`` Ray actors; the records are those of :func:`emozoo.iter_predict` on the same inputs.

    - ``inputs``: paths (files, folders, glob patterns), as for :func:`emozoo.predict`; arrays, bytes and cameras
      are refused (workers read files).
    - ``model``: a name as ``emozoo.create(model, pretrained=True, flip=flip)`` takes (each worker loads it once),
      or a model made by :func:`emozoo.create` (sent to the workers through Ray's object store).
    - ``address``: None starts a local Ray instance (``ray.init()``, which joins the cluster ``ray start`` runs on
      this machine if there is one) and stops it at the end, unless Ray is already initialised in this process;
      ``"auto"`` or ``"HOST:6379"`` joins that cluster from one of its nodes (``ray://`` is refused: Ray Data does
      not run through Ray Client).
    - ``num_workers``: actors, one CPU each (and one GPU each when ``device`` is cuda); None: one per cluster CPU.
    - ``images_per_task``: image files per task; ``segment_frames``: video frames per task when videos are split
      (``detect_every=1`` and ``smooth=0``; otherwise each video is one task); ``max_retries``: restarts of a dead
      worker and retries of its task.
    - ``batch_size``, ``every``, ``smooth``, ``detect_every``, ``min_face``, ``min_confidence``, ``device``: as
      :func:`emozoo.predict`.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    for name, value in (("every", every), ("batch_size", batch_size), ("images_per_task", images_per_task),
                        ("segment_frames", segment_frames), ("detect_every", detect_every)):
        if int(value) < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if not 0 <= smooth < 1:
        raise ConfigError(f"smooth must be in [0, 1) (0: no smoothing), got {smooth}")
    if num_workers is not None and num_workers < 1:
        raise ConfigError(f"num_workers must be at least 1, got {num_workers}")
    check_min_confidence(min_confidence)
    if str(address or "").startswith("ray://"):  # Ray Data's executor needs a core worker, which a client lacks
        raise ConfigError(f"{address}: Ray Data does not run through Ray Client (ray://): run emozoo on a machine of "
                          "the cluster (e.g. over ssh) with --ray=auto or --ray=HEAD:6379")
    split = smooth == 0 and detect_every == 1  # otherwise frames depend on earlier ones: whole videos
    tasks = plan_tasks(expand_inputs(inputs), every, segment_frames if split else None, images_per_task)
    settings = dict(model=model, detector=detector, flip=flip, batch_size=batch_size, every=every, smooth=smooth,
                    detect_every=detect_every, min_face=min_face, min_confidence=min_confidence, device=device)
    return _stream(ray, address, tasks, settings, num_workers, max_retries)


def _stream(ray, address, tasks, settings, num_workers, max_retries) -> Iterator[Prediction]:
    """Start or join the cluster, run the tasks, and stop the cluster this started."""
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"Ray cluster {address!r}: {' '.join(str(exc).split())[:200]} (is `ray start --head` "
                              "running there? With Ray's token authentication on, set RAY_AUTH_MODE=token and copy the "
                              "head's ~/.ray/auth_token here; leave the address out for a local cluster)") from None
    try:
        if not isinstance(settings["model"], str):
            settings = dict(settings, model=ray.put(settings["model"]))
        yield from _run(ray, tasks, settings, num_workers, max_retries, settings["device"])
    finally:
        if started:
            ray.shutdown()


def plan_tasks(items: list[Any], every: int, segment_frames: int | None, images_per_task: int) -> list[dict]:
    """The work as rows ``{"task", "item", "source", "start", "stop", "whole"}``: image files share a ``task`` (up
    to ``images_per_task``), a video is split into segments ``[start, stop)`` of about ``segment_frames`` frames
    (a multiple of ``every``; ``stop`` -1: to the end; ``segment_frames`` None: whole videos), and anything else
    (a video that cannot be opened, a missing path, an empty folder) is one ``whole`` task read as one process
    would read it."""
    rows, task, in_task = [], -1, images_per_task
    for item, entry in enumerate(items):
        if not isinstance(entry, (str, Path)) or str(entry).startswith(CAMERA_PREFIX) or str(entry) == "-":
            raise ConfigError("Ray workers read files: give paths (files, folders, glob patterns), not arrays, bytes, "
                              "standard input (-) or a camera")
        source, path = str(entry), Path(entry)
        if path.suffix.lower() in IMAGE_EXTS and path.is_file():
            if in_task >= images_per_task:
                task, in_task = task + 1, 0
            rows.append(dict(task=task, item=item, source=source, start=-1, stop=-1, whole=False))
            in_task += 1
            continue
        in_task = images_per_task  # the next image starts a new task, so tasks stay in input order
        total = _frame_count(path) if segment_frames and path.suffix.lower() in VIDEO_EXTS and path.is_file() else 0
        step = every * math.ceil(segment_frames / every) if segment_frames else 0
        if total <= step:
            task += 1
            rows.append(dict(task=task, item=item, source=source, start=-1, stop=-1, whole=True))
            continue
        for start in range(0, total, step):
            task += 1
            stop = start + step if start + step < total else -1
            rows.append(dict(task=task, item=item, source=source, start=start, stop=stop, whole=False))
    return rows


def _frame_count(path: Path) -> int:
    """The frame count a video declares (0 when OpenCV cannot open it or does not know)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    finally:
        cap.release()


def _run(ray, rows: list[dict], settings: dict, num_workers, max_retries, device) -> Iterator[Prediction]:
    if not rows:
        return
    ctx = ray.data.DataContext.get_current()
    saved = ctx.execution_options.preserve_order, ctx.max_errored_blocks, ctx.enable_progress_bars
    ctx.execution_options.preserve_order = True  # results come back in input order, so videos can be renumbered
    ctx.max_errored_blocks = -1                  # a task that fails after its retries becomes its inputs' errors
    ctx.enable_progress_bars = False
    data_log = logging.getLogger("ray.data")  # "Starting execution of Dataset ..." on every run
    level = data_log.level
    data_log.setLevel(logging.ERROR)
    try:
        workers = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        tasks: dict[int, list[dict]] = {}
        for row in rows:
            tasks.setdefault(row["task"], []).append(row)
        # one task per block, so a block that fails loses one task, which is then reported input by input; one task
        # at a time per actor, so a worker that dies takes no other task's retries with it
        ds = ray.data.from_items([{"task": t, "units": json.dumps(units)} for t, units in tasks.items()],
                                 override_num_blocks=len(tasks))
        with warnings.catch_warnings():  # Ray 2.60 names no parameter for these yet (pyproject pins ray < 2.64)
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
            ds = ds.map_batches(RayPredictor, fn_constructor_kwargs=settings, batch_size=None,
                                compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
                                num_cpus=1,
                                num_gpus=1 if str(device or "cpu").startswith("cuda") else 0,
                                max_restarts=max_retries, max_task_retries=max_retries)
        rerun = lambda units: _run(ray, [dict(u, task=i) for i, u in enumerate(units)], settings, num_workers,
                                   max_retries, device)
        yield from _collect(ds.iter_rows(), tasks, rerun)
    finally:
        ctx.execution_options.preserve_order, ctx.max_errored_blocks, ctx.enable_progress_bars = saved
        data_log.setLevel(level)


def _collect(results: Iterator[dict], tasks: dict[int, list[dict]], rerun) -> Iterator[Prediction]:
    """The predictions of the result rows, in order: the segments after the one where a video stopped are dropped,
    and the track numbers of split videos are replayed in frame order, as one process numbers them.

    A task that never came back (its worker died on every retry) becomes one error per input when it held one
    input; one that held several images is run again, each image its own task (``rerun(units)``), once this run
    is over, so that only the input that kills its worker is lost; the predictions after it wait until then."""
    stopped, expected, waiting = {}, 0, []
    numbers = _Renumber()
    finish = numbers.update
    split_tasks = {t for t, units in tasks.items() if any(u["start"] >= 0 for u in units)}

    def lost(task: int) -> list:
        units = [u for u in tasks[task] if u["item"] not in stopped]
        if len(units) > 1:
            return [units]
        return [finish(Prediction(u["source"], error=f"{u['source']}:{_frames(u)} the Ray worker failed on this input "
                                                     "after its retries (see the Ray logs)"), False, False)
                for u in units]

    def pieces() -> Iterator:
        nonlocal expected
        for result in results:
            task, item = int(result["task"]), int(result["item"])
            for missing in range(expected, task):
                yield from lost(missing)
            expected = max(expected, task + 1)
            if stopped.get(item, task) < task:
                continue
            if result["record"]:
                yield finish(decode(result["record"]), bool(result["cut"]), task in split_tasks)
            if result["stopped"]:
                stopped[item] = task
        for missing in range(expected, max(tasks) + 1):
            yield from lost(missing)

    for piece in pieces():
        if waiting or isinstance(piece, list):
            waiting.append(piece)
        else:
            yield piece
    for piece in waiting:
        if isinstance(piece, list):
            yield from rerun(piece)
        else:
            yield piece


class _Renumber:
    """The track numbers of split videos' frames, replayed in frame order as :class:`Follower` numbers them with
    ``detect_every=1``: a :class:`FaceTracker` per video (restarted when the source changes or an image comes
    between), reset at a scene cut, fed each frame's faces."""

    def __init__(self):
        self.source, self.tracker = None, None

    def update(self, pred: Prediction, cut: bool, split: bool) -> Prediction:
        video = pred.frame is not None
        if pred.source != self.source or not video:
            self.source, self.tracker = pred.source, None
        if video and split:
            if self.tracker is None:
                self.tracker = FaceTracker(LOST_FRAMES)  # Follower's lost frames at detect_every=1
            elif cut:
                self.tracker.reset()
            for face, track in zip(pred.faces, self.tracker.assign([Face(f.box, f.confidence) for f in pred.faces])):
                face.track = track
        return pred


def _frames(unit: dict) -> str:
    if unit["start"] < 0:
        return ""
    return f" frames {unit['start']} to {unit['stop'] if unit['stop'] >= 0 else 'end'}:"


class RayPredictor:
    """The callable class Ray Data's ``map_batches`` runs in each actor: one :class:`Predictor`, built once, and
    called on each task (a block of one row: its units as JSON)."""

    def __init__(self, model, detector, flip, batch_size, every, smooth, detect_every, min_face, min_confidence, device):
        from .._builder import create
        from .engine import Predictor

        if type(model).__name__ == "ObjectRef":
            import ray

            model = ray.get(model)
        elif isinstance(model, str):
            model = create(model, pretrained=True, flip=flip)
        self.predictor = Predictor(model, detector, batch_size=batch_size, min_face=min_face, device=device,
                                   min_confidence=min_confidence)
        self.every, self.smooth, self.detect_every = every, smooth, detect_every

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for units in batch["units"]:
            units = json.loads(units)
            images = [u for u in units if u["start"] < 0 and not u["whole"]]
            if images:
                out += self._guarded(images, lambda images=images: self._images(images))
            for u in units:
                if u["start"] >= 0 or u["whole"]:
                    out += self._guarded([u], lambda u=u: self._video(u))
        return {key: np.array([o[key] for o in out], dtype=object if key == "record" else None)
                for key in ("task", "item", "record", "stopped", "cut")}

    def _guarded(self, units, work) -> list[dict]:
        """``work()``'s output rows, or, if it raises, one error row per input (a bug must not end the run)."""
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 - becomes these inputs' error, as in the single-process path
            text = " ".join(str(exc).split())[:300]
            return [_row(u, Prediction(u["source"], error=f"{u['source']}: {type(exc).__name__}: {text}"))
                    for u in units]

    def _images(self, units) -> list[dict]:
        preds = list(self.predictor([u["source"] for u in units], every=self.every, progress=False))
        if len(preds) != len(units):  # a file that changed since the driver looked: one by one
            return [o for u in units for o in self._video(dict(u, whole=True))]
        return [_row(u, p) for u, p in zip(units, preds)]

    def _video(self, u) -> list[dict]:
        if u["whole"]:
            return [_row(u, p) for p in self.predictor([u["source"]], every=self.every, smooth=self.smooth,
                                                       detect_every=self.detect_every, progress=False)]
        segment, chunk, out = Segment(u["source"], u["start"], u["stop"], self.every), [], []
        for frame in segment:  # frames go to the model batch_size at a time (a segment of 4K frames would not fit)
            chunk.append(frame)
            if len(chunk) >= self.predictor.batch_size:
                out += self._frames(u, chunk)
                chunk = []
        out += self._frames(u, chunk)
        if not out and u["start"] == 0:  # what one process says of a video with no readable frame
            return self._video(dict(u, whole=True))
        out = out or [dict(task=u["task"], item=u["item"], record="", stopped=False, cut=False)]  # the task came back
        return [dict(o, stopped=segment.ended) for o in out]

    def _frames(self, u, chunk) -> list[dict]:
        """Rows of video frames ``(index, seconds, image, cut)``, classified as images and then named as frames."""
        out = []
        for (index, seconds, _, cut), pred in zip(chunk, self.predictor([f[2] for f in chunk], progress=False)):
            if pred.error and pred.error.startswith(pred.source + ": "):
                pred.error = u["source"] + pred.error[len(pred.source):]
            pred.source, pred.frame, pred.time = u["source"], index, seconds
            out.append(dict(_row(u, pred), cut=cut))
        return out


class Segment:
    """The frames ``[start, stop)`` of a video (``stop`` -1: to the end) as one process reads them: iterating yields
    ``(frame index, seconds, RGB image, cut)`` for every ``every``-th frame by absolute index, one at a time, where
    ``cut`` is the scene-cut test against the frame processed before (for the first, the one before ``start``, read
    for that alone); afterwards ``ended`` is True when a frame could not be read before ``stop`` (one process stops
    reading the video there).

    Seeks with ``CAP_PROP_POS_FRAMES``; when the capture does not report the asked position, it decodes from the start
    and skips instead. ``start`` is a multiple of ``every``."""

    def __init__(self, source: str, start: int, stop: int, every: int):
        self.source, self.start, self.stop, self.every = source, start, stop, every
        self.ended = False

    def __iter__(self) -> Iterator[tuple[int, float | None, np.ndarray, bool]]:
        import cv2

        cap = cv2.VideoCapture(self.source)
        try:
            fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
            index = self.start - self.every if self.start >= self.every else 0
            if index and not (cap.set(cv2.CAP_PROP_POS_FRAMES, index) and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == index):
                cap.release()
                cap = cv2.VideoCapture(self.source)
                for _ in range(index):
                    if not cap.grab():
                        break
            before = None
            while self.stop < 0 or index < self.stop:
                if index % self.every:
                    ok = cap.grab()
                else:
                    ok, bgr = cap.read()
                    if ok:
                        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                        now = tiny_grey(image)
                        if index >= self.start:
                            yield index, index / fps if fps > 0 else None, image, scene_cut(before, now)
                        before = now
                if not ok:
                    self.ended = True
                    break
                index += 1
        finally:
            cap.release()


def _row(unit: dict, pred: Prediction) -> dict:
    return dict(task=unit["task"], item=unit["item"], record=encode(pred), stopped=False, cut=False)


def encode(pred: Prediction) -> str:
    """A :class:`Prediction` (without its image) as JSON that :func:`decode` turns back into an equal one: every
    float exact, unlike ``as_dict()``, which rounds for display."""
    faces = [dict(vars(f), box=[float(v) for v in f.box], confidence=float(f.confidence)) for f in pred.faces]
    return json.dumps(dict(source=pred.source, frame=pred.frame, time=pred.time, size=pred.size, faces=faces,
                           error=pred.error))


def decode(text: str) -> Prediction:
    """The :class:`Prediction` of :func:`encode`'s JSON."""
    d = json.loads(text)
    faces = [FacePrediction(**dict(f, box=tuple(f["box"]))) for f in d.pop("faces")]
    return Prediction(**dict(d, size=tuple(d["size"]) if d["size"] else None), faces=faces)
