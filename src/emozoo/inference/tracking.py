"""Following faces through a video: detection on key frames, ByteTrack for the track numbers, boxes interpolated
between key frames, a scene-cut test, and each track's scores smoothed.

ByteTrack is ``trackers.ByteTrackTracker`` from Roboflow's ``trackers`` package (the successor of
``supervision.ByteTrack``, which supervision 0.31 removed). Detection runs on every ``detect_every``-th processed
frame of a video, on its last frame, and at once on the first frame of a new scene (a cut); the frames between two key
frames get each track's box interpolated between the two detections, so no box lags behind the face.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

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
                                              minimum_iou_threshold=0.1, high_conf_det_threshold=0.0)
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


class Follower:
    """Runs ``detect`` on the key frames of each video and follows the faces between them.

    Calling it on ``(prediction, image)`` pairs (from :func:`iter_frames`) yields ``(prediction, image, faces,
    tracks)`` in the same order: images get ``detect(image)`` and ``tracks`` None; camera frames are detected every
    frame (a camera waits for nothing); a video frame is a key frame when it is the ``detect_every``-th since the last
    one, the last of the video, or the first after a scene cut (which also resets the tracker). Frames between key
    frames wait (at most ``detect_every - 1`` of them) and get each track's box interpolated between its two key-frame
    boxes; a face seen in only one of the two is shown in the half of the frames next to it.
    ``detect`` raises :class:`emozoo.DataError` to make that frame's error."""

    def __init__(self, detect: Callable[[np.ndarray], list[Face]], detect_every: int = DEFAULT_DETECT_EVERY):
        self.detect, self.every = detect, detect_every
        self.tracker: FaceTracker | None = None
        self.lost = max(1, math.ceil(LOST_FRAMES / detect_every))

    def __call__(self, frames) -> Iterator[tuple[Prediction, np.ndarray | None, list[Face], list[int] | None]]:
        held: list[tuple[Prediction, np.ndarray]] = []
        key, source, tiny = None, None, None
        for pred, image in frames:
            video = pred.frame is not None and image is not None
            if pred.source != source or not video:
                yield from self._key(held, key)
                held, key, source, tiny = [], None, pred.source, None
                if video:
                    self.tracker = FaceTracker(self.lost)
            if not video:
                yield (pred, image, *self._detected(pred, image)[:1], None)
                continue
            if pred.source.startswith(CAMERA_PREFIX):
                faces, tracks = self._detected(pred, image)
                yield pred, image, faces, tracks
                continue
            now = tiny_grey(image)
            if scene_cut(tiny, now):
                key = yield from self._key(held, key)  # the last frame of the old scene is a key frame too
                held, key = [], None
                self.tracker.reset()
            tiny = now
            held.append((pred, image))
            if key is None or len(held) >= self.every:
                key = yield from self._key(held, key)
                held = []
        yield from self._key(held, key)

    def _detected(self, pred: Prediction, image: np.ndarray | None) -> tuple[list[Face], list[int]]:
        faces: list[Face] = []
        if image is not None:
            try:
                faces = self.detect(image)
            except DataError as exc:
                pred.error = f"{pred.source}: {exc}"
        tracks = self.tracker.assign(faces) if pred.frame is not None and self.tracker is not None else []
        return faces, tracks

    def _key(self, held, key):
        """Detect on the last held frame, then yield the held frames, boxes interpolated; return the new key frame."""
        if not held:
            return key
        pred, image = held[-1]
        faces, tracks = self._detected(pred, image)
        new = (pred.frame, dict(zip(tracks, faces)))
        for before, img in held[:-1]:
            between = _between(key, new, before.frame) if key is not None else {}
            yield before, img, list(between.values()), list(between)
        yield pred, image, faces, tracks
        return new


def _between(a, b, frame: int) -> dict[int, Face]:
    """Each track's face at ``frame``, between key frames ``a`` and ``b`` (``(frame, {track: face})``)."""
    (fa, faces_a), (fb, faces_b) = a, b
    t = (frame - fa) / (fb - fa) if fb > fa else 0.0
    out = {}
    for track, face in faces_a.items():
        other = faces_b.get(track)
        if other is not None:
            box = tuple(float(p + (q - p) * t) for p, q in zip(face.box, other.box))
            out[track] = Face(box, face.score + (other.score - face.score) * t)
        elif t < 0.5:
            out[track] = Face(face.box, face.score)
    for track, face in faces_b.items():
        if track not in faces_a and t >= 0.5:
            out[track] = Face(face.box, face.score)
    return out


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
