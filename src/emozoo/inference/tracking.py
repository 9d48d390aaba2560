"""Following faces through a video: detection on key frames, boxes interpolated between them, ByteTrack for the
track numbers, a scene-cut test, and each track's scores smoothed.

The work is split so that a stretch of a video can be followed on its own (:mod:`emozoo.inference.ray` gives
segments to separate workers) with the same result as the whole video in one process:

- :func:`follow_video` does the per-frame work. Processed frame ``k`` of a video is a key frame when ``k`` is a
  multiple of ``detect_every``, when it is the last one, or when a scene cut lies between it and its neighbour (the
  frames on both sides of a cut); the detector runs on key frames. The faces of two consecutive key frames are
  paired by IoU (Hungarian assignment, :func:`pair_faces`), a frame between them gets each pair's box interpolated, and
  a face seen in only one of the two is shown in the half of the frames next to it. Each face carries a
  :class:`Link` to the key-frame face it comes from. All of this needs only the frames from the key frame before
  to the key frame after, so a segment that starts on a multiple of ``detect_every`` and reads on to the next key
  frame (and the frame before it, for the cut test) knows exactly what the whole video would give.
- :class:`TrackNumbers` does the sequential part, cheap: ByteTrack (``trackers.ByteTrackTracker``, from Roboflow's
  ``trackers`` package, the successor of ``supervision.ByteTrack``) over the key frames' faces in frame order, reset
  at a cut, and each face between key frames takes the number of the key-frame face it comes from. Then
  :class:`Smoother` averages each track's scores in frame order.

:class:`Follower` chains the two for one process; the Ray driver runs :class:`TrackNumbers` and :class:`Smoother` on
its workers' records in the same order, so both give the same records.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np

from .._detectors import Face
from ..errors import DataError
from .results import Prediction
from .sources import CAMERA_PREFIX

#: detect on every N-th processed video frame by default (benchmarks/results/predict_fps.md chose it: boxes and labels
#: agree with detection on every frame, at over 300 fps)
DEFAULT_DETECT_EVERY = 6
#: a lost track (a hidden face) keeps its number this many frames
LOST_FRAMES = 30
#: the tiny grey frame of the scene-cut test, and the mean absolute difference (0-255) between two of them that is a cut
SCENE_SIZE = (32, 24)
SCENE_CUT = 30.0
#: two faces of consecutive key frames under this IoU are not paired (ByteTrack's minimum IoU too)
PAIR_IOU = 0.1


class FaceTracker:
    """Track numbers of the faces of successive key frames of one video, from ByteTrack (``trackers`` package).

    ``assign(faces)`` returns a number per face: the same number as in the previous key frames for the same face (also
    after it was hidden for up to ``lost`` key frames), a new one for a new face. ``reset()`` forgets every track (a scene
    cut) and keeps counting, so numbers stay unique within a video."""

    def __init__(self, lost: int = LOST_FRAMES):
        try:
            from trackers import ByteTrackTracker
        except ImportError:
            raise DataError("following faces in videos needs the trackers package: pip install 'trackers>=2.1,<2.2' "
                            "(or reinstall emozoo)") from None
        # every face the detector kept is a confident one: no low/high split, a track from the first detection
        self._make = lambda: ByteTrackTracker(lost_track_buffer=max(1, lost), frame_rate=30.0,
                                              track_activation_threshold=0.0, minimum_consecutive_frames=1,
                                              minimum_iou_threshold=PAIR_IOU, high_conf_det_threshold=0.0)
        self.tracker = self._make()
        self.next_id = 0

    def reset(self) -> None:
        """Forget every track (the numbers of new faces go on from the last one)."""
        self.tracker = self._make()

    def assign(self, faces: list[Face]) -> list[int]:
        """The track number of each face of a new key frame."""
        import supervision as sv

        if not faces and not self.tracker.tracks:
            return []
        boxes = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
        found = self.tracker.update(sv.Detections(xyxy=boxes, confidence=np.ones(len(faces), np.float32),
                                                  class_id=np.arange(len(faces))))
        ids = [-1] * len(faces)
        for index, track in zip(found.class_id if found.class_id is not None else [], found.tracker_id):
            ids[int(index)] = int(track)
        fresh = [t for t in self.tracker.tracks if t.tracker_id == -1]
        for i, box in enumerate(boxes):
            if ids[i] == -1:  # a track ByteTrack started on this box in this frame: number it
                ids[i], self.next_id = self.next_id, self.next_id + 1
                track = next((t for t in fresh if np.allclose(t.get_state_bbox(), box, atol=1e-2)), None)
                if track is not None:
                    track.tracker_id = ids[i]
                    fresh.remove(track)
        return ids


def tiny_grey(image: np.ndarray) -> np.ndarray:
    """The image shrunk to :data:`SCENE_SIZE`, grey, as float32: what the scene-cut test compares."""
    import cv2

    h, w = image.shape[:2]  # every step-th pixel first: INTER_AREA over the whole frame costs milliseconds
    step = max(1, min(h // (2 * SCENE_SIZE[1]), w // (2 * SCENE_SIZE[0])))
    small = cv2.resize(image[step // 2::step, step // 2::step], SCENE_SIZE, interpolation=cv2.INTER_AREA)
    return (small.mean(axis=2) if small.ndim == 3 else small).astype(np.float32)


def scene_cut(before: np.ndarray | None, now: np.ndarray) -> bool:
    """True when two tiny grey frames differ by more than :data:`SCENE_CUT` on average (a cut to another scene)."""
    return before is not None and float(np.abs(now - before).mean()) > SCENE_CUT


class Link(NamedTuple):
    """Where the faces of a followed video frame come from: ``key`` (a key frame, whose faces the detector found),
    ``cut`` (a scene cut lies between this frame and the one before; only key frames have it) and ``origins``, one
    ``(key frame index, face index)`` per face: for a key frame its own faces, for a frame between two key frames
    the key-frame face each one is interpolated from (the earlier one's for a pair)."""

    key: bool
    cut: bool
    origins: tuple[tuple[int, int], ...]


def follow_video(frames: Iterable[tuple[Prediction, np.ndarray]], detect: Callable[[Prediction, np.ndarray], list[Face]],
                 detect_every: int, first: int = 0, before: np.ndarray | None = None
                 ) -> Iterator[tuple[Prediction, np.ndarray, list[Face], Link]]:
    """Follow the faces of consecutive processed frames ``first, first + 1, ...`` of one video: yields ``(prediction,
    image, faces, link)`` for each, in order, with ``detect(prediction, image)`` run on the key frames only (see
    the module's docstring). Frames between two key frames wait for the second one (at most ``detect_every - 1``).

    To follow a stretch of a video alone, start it on a key frame (``first`` a multiple of ``detect_every``), give
    the :func:`tiny_grey` of the frame before it as ``before``, and read on to the next multiple of ``detect_every``
    (or the end of the video): the frames before that one are then exactly those of the whole video."""
    held: list[tuple[Prediction, np.ndarray]] = []
    last: tuple[int, list[Face]] | None = None
    tiny = before
    for k, (pred, image) in enumerate(frames, first):
        now = tiny_grey(image)
        cut = scene_cut(tiny, now)
        tiny = now
        if cut and held:  # the last frame of the old scene is a key frame too
            last = yield from _key(held, last, detect, False)
            held = []
        held.append((pred, image))
        if k % detect_every == 0 or cut:
            last = yield from _key(held, last, detect, cut)
            held = []
    if held:  # the last frame of the video
        yield from _key(held, last, detect, False)


def _key(held, last, detect, cut):
    """Detect on the last held frame, then yield the held frames with their faces; return the new key frame."""
    pred, image = held[-1]
    faces = detect(pred, image)
    new = (pred.frame, faces)
    if len(held) > 1:
        pairs = pair_faces(last[1], faces) if last is not None else {}
        for before, img in held[:-1]:
            between = _between(last, new, pairs, before.frame) if last is not None else []
            yield before, img, [f for f, _ in between], Link(False, False, tuple(o for _, o in between))
    yield pred, image, faces, Link(True, cut, tuple((pred.frame, i) for i in range(len(faces))))
    return new


def pair_faces(a: list[Face], b: list[Face], threshold: float = PAIR_IOU) -> dict[int, int]:
    """The faces of two consecutive key frames paired by IoU, ``{index in a: index in b}``: the assignment that
    maximises the total IoU (Hungarian, ``scipy.optimize.linear_sum_assignment``), less the pairs under
    ``threshold`` (the faces of those stay unpaired)."""
    if not a or not b:
        return {}
    from scipy.optimize import linear_sum_assignment

    overlap = np.array([[iou(f.box, g.box) for g in b] for f in a])
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return {int(i): int(j) for i, j in zip(rows, cols) if overlap[i, j] >= threshold}


def _between(a, b, pairs: dict[int, int], frame: int) -> list[tuple[Face, tuple[int, int]]]:
    """The faces at ``frame`` between key frames ``a`` and ``b`` (``(frame, faces)``), each with its origin: a pair
    interpolated, a face of one key frame only shown in the half of the frames next to it."""
    (fa, faces_a), (fb, faces_b) = a, b
    t = (frame - fa) / (fb - fa) if fb > fa else 0.0
    out = []
    for i, face in enumerate(faces_a):
        j = pairs.get(i)
        if j is not None:
            other = faces_b[j]
            box = tuple(float(p + (q - p) * t) for p, q in zip(face.box, other.box))
            out.append((Face(box, face.score + (other.score - face.score) * t), (fa, i)))
        elif t < 0.5:
            out.append((Face(face.box, face.score), (fa, i)))
    paired = set(pairs.values())
    if t >= 0.5:
        out += [(Face(face.box, face.score), (fb, j)) for j, face in enumerate(faces_b) if j not in paired]
    return out


class TrackNumbers:
    """The track numbers of one video's followed frames, given in frame order with their :class:`Link`: ByteTrack
    (:class:`FaceTracker`, reset at a cut) numbers the faces of the key frames, and a face between two key frames
    takes the number of the key-frame face it comes from.

    ``push(item, frame, faces, link)`` returns the ``(item, tracks)`` now numbered, in order: a frame between key
    frames waits for the next key frame; ``flush()`` returns the waiting ones when no key frame follows (a video cut
    short), their faces from a missing key frame numbered anew. ``lost``: key frames a hidden face keeps its number."""

    def __init__(self, lost: int):
        self.tracker = FaceTracker(lost)
        self.numbers: dict[int, list[int]] = {}  # the last two key frames' track numbers
        self.held: list[tuple[Any, Link]] = []

    def push(self, item: Any, frame: int, faces: list, link: Link) -> list[tuple[Any, list[int]]]:
        """Number a frame (``faces``: anything with a ``box``), and those that waited for it."""
        if not link.key:
            self.held.append((item, link))
            return []
        if link.cut:
            self.tracker.reset()
        tracks = self.tracker.assign(faces)
        self.numbers = {k: v for k, v in self.numbers.items() if k == max(self.numbers)} if self.numbers else {}
        self.numbers[frame] = tracks
        return self.flush() + [(item, tracks)]

    def flush(self) -> list[tuple[Any, list[int]]]:
        """The frames that wait, numbered from the key frames known."""
        out = [(item, [self._number(k, i) for k, i in link.origins]) for item, link in self.held]
        self.held = []
        return out

    def _number(self, frame: int, index: int) -> int:
        known = self.numbers.setdefault(frame, [])
        while len(known) <= index:  # a key frame that never came (its segment was lost): new numbers
            known.append(self.tracker.next_id)
            self.tracker.next_id += 1
        return known[index]


class Follower:
    """Runs ``detect`` on the key frames of each video and follows the faces between them.

    Calling it on ``(prediction, image)`` pairs (from :func:`iter_frames`) yields ``(prediction, image, faces,
    tracks)`` in the same order: images get ``detect(image)`` and ``tracks`` None; camera frames are detected every
    frame (a camera waits for nothing); video files go through :func:`follow_video` (key frames, interpolated boxes)
    and :class:`TrackNumbers`. ``detect`` raises :class:`emozoo.DataError` to make that frame's error."""

    def __init__(self, detect: Callable[[np.ndarray], list[Face]], detect_every: int = DEFAULT_DETECT_EVERY):
        self.detect, self.every = detect, detect_every
        self.lost = lost_key_frames(detect_every)

    def __call__(self, frames) -> Iterator[tuple[Prediction, np.ndarray | None, list[Face], list[int] | None]]:
        for video, group in itertools.groupby(_videos(frames), key=lambda item: item[0]):
            if video is None:
                for _, pred, image in group:
                    yield pred, image, self.detected(pred, image), None
                continue
            items = ((pred, image) for _, pred, image in group)
            if video[0].startswith(CAMERA_PREFIX):  # every frame a key frame, at once
                followed = ((p, i, f, Link(True, False, ())) for p, i in items for f in [self.detected(p, i)])
            else:
                followed = follow_video(items, self.detected, self.every)
            numbers = TrackNumbers(self.lost)
            for pred, image, faces, link in followed:
                for (p, i, f), tracks in numbers.push((pred, image, faces), pred.frame, faces, link):
                    yield p, i, f, tracks
            for (p, i, f), tracks in numbers.flush():  # none: a video ends on a key frame
                yield p, i, f, tracks

    def detected(self, pred: Prediction, image: np.ndarray | None) -> list[Face]:
        """``detect(image)``, or no face and the error in ``pred.error`` when it raises :class:`emozoo.DataError`."""
        if image is None:
            return []
        try:
            return self.detect(image)
        except DataError as exc:
            pred.error = f"{pred.source}: {exc}"
            return []


def lost_key_frames(detect_every: int) -> int:
    """How many key frames a hidden face keeps its track number: :data:`LOST_FRAMES` processed frames."""
    return max(1, math.ceil(LOST_FRAMES / detect_every))


def _videos(frames):
    """``(video, prediction, image)``: ``video`` is ``(source, run)`` for the frames of one reading of a video or
    camera (a new run when the source changes or the frame index goes back), None for anything else."""
    source, last, run = None, None, 0
    for pred, image in frames:
        if pred.frame is None or image is None:
            source = None
            yield None, pred, image
            continue
        if pred.source != source or pred.frame <= last:
            source, run = pred.source, run + 1
        last = pred.frame
        yield (source, run), pred, image


class Smoother:
    """Per-track exponential moving average of scores: ``p = smooth * p_previous + (1 - smooth) * p_now``, reset for
    each new video; a track unseen for :data:`LOST_FRAMES` processed frames is forgotten (memory stays constant)."""

    def __init__(self, smooth: float):
        self.smooth, self.source, self.past, self.count = smooth, None, {}, 0

    def __call__(self, pred: Prediction, tracks: list[int], probs: np.ndarray) -> list[np.ndarray]:
        if pred.source != self.source:
            self.source, self.past, self.count = pred.source, {}, 0
        self.count += 1
        out = []
        for track, p in zip(tracks, probs):
            if self.smooth and track in self.past:
                p = self.smooth * self.past[track][0] + (1 - self.smooth) * p
            self.past[track] = (p, self.count)
            out.append(p)
        if len(self.past) > 16:
            self.past = {t: v for t, v in self.past.items() if self.count - v[1] <= LOST_FRAMES}
        return out


def iou(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
