"""Predicting on a Ray cluster: :func:`predict_ray`, the same :class:`Prediction` records as :class:`Predictor`.

The inputs are expanded on the driver (as :func:`emozoo.inference.expand_inputs` does) into tasks: groups of image
files, and for videos frame ranges (segments) of ``segment_frames`` frames read by seeking. Ray Data's
``map_batches`` hands the tasks to a pool of actors, each of which builds its :class:`Predictor` (model and face
detector) once and reuses it for every task it gets. Results stream back in input order and are the same, row by
row, as a single-process run:

- Each face's scores depend only on its own crop (the model is in eval mode), so splitting the work changes none of
  them; the tests check that the records are equal, to the last bit, for emoxnetlite on CPU (kernels that round
  differently by batch size, as some GPU ones do, could differ in the last digits).
- A video carries state from frame to frame: detection on key frames with the boxes between interpolated, track
  numbers (ByteTrack) and smoothed scores. :mod:`emozoo.inference.tracking` splits that work in two: the per-frame
  part (:func:`follow_video`: key frames, detection, interpolation, classification) needs only the frames from one
  key frame to the next, and the sequential part (:class:`TrackNumbers`: ByteTrack over the key frames' faces, and
  :class:`Smoother`) is cheap. So every video is split into segments of about ``segment_frames`` frames that start on
  a key frame (a multiple of ``every * detect_every``); each worker reads its segment by seeking, with the frame
  before it (for the scene-cut test) and on to the next segment's first frame (a key frame, detected again there, to
  end its own frames), and returns each frame's faces and scores with their links to key-frame faces. The driver
  numbers the tracks and smooths the scores in frame order with the same :class:`TrackNumbers` and
  :class:`Smoother` one process runs, on the same inputs.
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

import itertools
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
from .engine import check_min_confidence, face_prediction
from .results import FacePrediction, Prediction
from .sources import CAMERA_PREFIX, IMAGE_EXTS, VIDEO_EXTS, expand_inputs
from .tracking import DEFAULT_DETECT_EVERY, Follower, Link, Smoother, TrackNumbers, follow_video, lost_key_frames, tiny_grey

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
    - ``images_per_task``: image files per task; ``segment_frames``: video frames per task (rounded up to a multiple
      of ``every * detect_every``); ``max_retries``: restarts of a dead worker and retries of its task.
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
    tasks = plan_tasks(expand_inputs(inputs), every, segment_frames, images_per_task, detect_every)
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


def plan_tasks(items: list[Any], every: int, segment_frames: int, images_per_task: int,
               detect_every: int = DEFAULT_DETECT_EVERY) -> list[dict]:
    """The work as rows ``{"task", "item", "source", "start", "stop", "whole"}``: image files share a ``task`` (up
    to ``images_per_task``), a video is split into segments ``[start, stop)`` of about ``segment_frames`` frames
    (a multiple of ``every * detect_every``, so each starts on a key frame; ``stop`` -1: to the end), and anything
    else (a video that cannot be opened, a missing path, an empty folder) is one ``whole`` task read as one process
    would read it."""
    rows, task, in_task = [], -1, images_per_task
    step = every * detect_every * math.ceil(segment_frames / (every * detect_every))
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
        total = _frame_count(path) if path.suffix.lower() in VIDEO_EXTS and path.is_file() else None
        if total is None:
            task += 1
            rows.append(dict(task=task, item=item, source=source, start=-1, stop=-1, whole=True))
            continue
        for start in range(0, max(total, 1), step):
            task += 1
            stop = start + step if start + step < total else -1
            rows.append(dict(task=task, item=item, source=source, start=start, stop=stop, whole=False))
    return rows


def _frame_count(path: Path) -> int | None:
    """The frame count a video declares (0 when OpenCV does not know it), None when OpenCV cannot open it."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else None
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
        workers = min(workers, len(tasks))  # an actor without a task would only load the model for nothing
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
        follow = FollowUp(settings["detect_every"], settings["smooth"], settings["min_confidence"])
        yield from _collect(ds.iter_rows(), tasks, rerun, follow)
    finally:
        ctx.execution_options.preserve_order, ctx.max_errored_blocks, ctx.enable_progress_bars = saved
        data_log.setLevel(level)


def _collect(results: Iterator[dict], tasks: dict[int, list[dict]], rerun, follow: FollowUp) -> Iterator[Prediction]:
    """The predictions of the result rows, in order: the segments after the one where a video stopped are dropped,
    and the frames of videos get their track numbers and smoothed scores (``follow``) in frame order.

    A task that never came back (its worker died on every retry) becomes one error per input when it held one
    input; one that held several images is run again, each image its own task (``rerun(units)``), once this run
    is over, so that only the input that kills its worker is lost; the predictions after it wait until then."""
    stopped, expected, waiting = {}, 0, []

    def lost(task: int) -> list:
        units = [u for u in tasks[task] if u["item"] not in stopped]
        if len(units) > 1:
            return [units]
        return [(Prediction(u["source"], error=f"{u['source']}:{_frames(u)} the Ray worker failed on this input after "
                                                "its retries (see the Ray logs)"), None) for u in units]

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
                yield decode(result["record"]), decode_link(result["link"])
            if result["stopped"]:
                stopped[item] = task
        for missing in range(expected, max(tasks) + 1):
            yield from lost(missing)

    def ready() -> Iterator:
        for piece in pieces():
            yield from follow.flush() + [piece] if isinstance(piece, list) else follow(*piece)
        yield from follow.flush()

    for piece in ready():
        if waiting or isinstance(piece, list):
            waiting.append(piece)
        else:
            yield piece
    for piece in waiting:
        if isinstance(piece, list):
            yield from rerun(piece)
        else:
            yield piece


class FollowUp:
    """The sequential part of following videos, on the driver: given the workers' predictions in order, each with
    its :class:`Link` (None: not a followed video frame), it numbers the tracks of each video's frames
    (:class:`TrackNumbers`, a new one when the source changes or the frame index goes back, as :class:`Follower`
    does) and smooths their scores (:class:`Smoother`), as one process does; calling it returns the predictions now
    ready, in order (a frame between key frames waits for the next key frame)."""

    def __init__(self, detect_every: int, smooth: float, min_confidence: float):
        self.lost, self.min_confidence = lost_key_frames(detect_every), min_confidence
        self.smoother = Smoother(smooth)
        self.source, self.last, self.numbers = None, -1, None

    def __call__(self, pred: Prediction, link: tuple[Link, list] | None) -> list[Prediction]:
        if link is None:
            return self.flush() + [pred]
        out = []
        if self.numbers is None or pred.source != self.source or pred.frame <= self.last:
            out, self.numbers, self.source = self.flush(), TrackNumbers(self.lost), pred.source
        self.last = pred.frame
        link, boxes = link
        faces = [Face(tuple(box)) for box in boxes]  # a key frame's faces as detected (an error may drop them)
        return out + [self._finish(p, tracks) for p, tracks in self.numbers.push(pred, pred.frame, faces, link)]

    def flush(self) -> list[Prediction]:
        """The frames that wait for a key frame that will not come (a segment lost)."""
        return [self._finish(p, tracks) for p, tracks in self.numbers.flush()] if self.numbers else []

    def _finish(self, pred: Prediction, tracks: list[int]) -> Prediction:
        probs = [np.array(list(f.scores.values()), np.float32) for f in pred.faces]  # classify()'s float32, exactly
        pred.faces = [_rescored(f, p, track, self.min_confidence)
                      for f, p, track in zip(pred.faces, self.smoother(pred, tracks, probs), tracks)]
        return pred


def _rescored(face: FacePrediction, p: np.ndarray, track: int, min_confidence: float) -> FacePrediction:
    """A face's prediction again, with its track number and (smoothed) probabilities ``p``, as :class:`Predictor` makes
    it (:func:`emozoo.inference.engine.face_prediction`)."""
    labels = list(face.scores)
    names = tops = None
    if face.members is not None:
        names = [m["name"] for m in face.members]
        tops = np.array([labels.index(m["label"]) for m in face.members])
    return face_prediction(Face(face.box, face.confidence), p, track, labels, min_confidence, names, tops)


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
        self.follower = Follower(self.predictor.detect, detect_every)

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
                for key in ("task", "item", "record", "stopped", "link")}

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
        start, stop, every = u["start"], u["stop"], self.every
        segment = Segment(u["source"], start - every if start else 0, stop, every)
        frames = iter(segment)
        first, before = next(frames, None), None
        if first is not None and first[0] < start:  # the frame before the segment: for the scene-cut test only
            first, before = None, tiny_grey(first[2])
        preds = ((_frame(u["source"], index, seconds, image), image)
                 for index, seconds, image in itertools.chain([first] if first else [], frames))
        links: dict[int, tuple[Link, list]] = {}

        def followed():
            for pred, image, faces, link in follow_video(preds, self.follower.detected, self.detect_every,
                                                          start // every, before):
                if 0 <= stop <= pred.frame:  # the next segment's first frame, read only to end this one's
                    return
                links[pred.frame] = (link, [f.box for f in faces] if link.key else [])
                yield pred, image, faces, None

        # one process's classification, in batches; the track numbers and smoothing are the driver's (FollowUp)
        out = [dict(_row(u, pred), link=encode_link(*links.pop(pred.frame)))
               for pred in self.predictor.run_followed(followed(), Smoother(0.0))]
        if not out and start == 0:  # what one process says of a video with no readable frame
            return self._video(dict(u, whole=True))
        out = out or [dict(task=u["task"], item=u["item"], record="", stopped=False, link="")]  # the task came back
        return [dict(o, stopped=segment.ended) for o in out]


def _frame(source: str, index: int, seconds: float | None, image: np.ndarray) -> Prediction:
    """A video frame's prediction, before its faces: as :func:`emozoo.inference.iter_frames` makes it."""
    return Prediction(source, frame=index, time=seconds, size=(image.shape[1], image.shape[0]))


class Segment:
    """The processed frames ``first`` to ``last`` (both included; ``last`` -1: to the end) of a video, as one process
    reads them: iterating yields ``(frame index, seconds, RGB image)`` for every ``every``-th frame by absolute index,
    one at a time; afterwards ``ended`` is True when a frame could not be read up to ``last`` (one process stops
    reading the video there).

    Seeks with ``CAP_PROP_POS_FRAMES``; when the capture does not report the asked position, it decodes from the start
    and skips instead. ``first`` is a multiple of ``every``."""

    def __init__(self, source: str, first: int, last: int, every: int):
        self.source, self.first, self.last, self.every = source, first, last, every
        self.ended = False

    def __iter__(self) -> Iterator[tuple[int, float | None, np.ndarray]]:
        import cv2

        cap = cv2.VideoCapture(self.source)
        try:
            fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
            index = self.first
            if index and not (cap.set(cv2.CAP_PROP_POS_FRAMES, index) and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == index):
                cap.release()
                cap = cv2.VideoCapture(self.source)
                for _ in range(index):
                    if not cap.grab():
                        break
            while self.last < 0 or index <= self.last:
                if index % self.every:
                    ok = cap.grab()
                else:
                    ok, bgr = cap.read()
                    if ok:
                        yield index, index / fps if fps > 0 else None, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                if not ok:
                    self.ended = True
                    break
                index += 1
        finally:
            cap.release()


def _row(unit: dict, pred: Prediction) -> dict:
    return dict(task=unit["task"], item=unit["item"], record=encode(pred), stopped=False, link="")


def encode_link(link: Link, boxes: list) -> str:
    """A frame's :class:`Link` and, for a key frame, its detected boxes, as JSON for :func:`decode_link`."""
    return json.dumps([link.key, link.cut, link.origins, [[float(v) for v in box] for box in boxes]])


def decode_link(text: str) -> tuple[Link, list] | None:
    """The ``(link, boxes)`` of :func:`encode_link`'s JSON; None for an empty string (not a followed frame)."""
    if not text:
        return None
    key, cut, origins, boxes = json.loads(text)
    return Link(key, cut, tuple((int(k), int(i)) for k, i in origins)), boxes


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
