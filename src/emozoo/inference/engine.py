"""The front door: :class:`Predictor` (a model and a face detector) and :func:`predict` / :func:`iter_predict`."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from .._detectors import Face, create_detector
from ..calibration import probabilities
from ..errors import ConfigError, DataError, WeightsError
from .crop import crop_face
from .results import UNCERTAIN, FacePrediction, Prediction
from .sources import CAMERA_PREFIX, expand_inputs, iter_frames, progress_bar
from .tracking import DEFAULT_DETECT_EVERY, Follower, Smoother


class Predictor:
    """A model and a face detector, ready to run on images and frames (what :func:`predict` uses).

    ``detect(image)`` finds the faces of one RGB image, ``crops(image, faces)`` prepares them as the
    model's inputs, ``classify(crops)`` returns their label probabilities in batches, and calling it
    on inputs yields :class:`Prediction` objects. Build it once to run it on many inputs.

    A face whose top probability is below ``min_confidence`` (in [0, 1); 0: never) is labelled ``"uncertain"``.
    """

    def __init__(self, model: str | nn.Module = "emoxnetlite", detector: Any = "auto", *, batch_size: int = 32,
                 min_face: float = 0, device: str | torch.device | None = None, min_confidence: float = 0.0):
        from .._builder import create
        from .._config import ModelConfig
        from ..data.transforms import face_transform

        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.min_confidence = check_min_confidence(min_confidence)
        device = resolve_device(device)
        self.detector = create_detector(detector)
        self.detector_name = _detector_name(detector)
        if isinstance(model, str):
            model = create(model, pretrained=True)
        if not isinstance(getattr(model, "config", None), ModelConfig):
            raise ConfigError("predict() needs a model name or a model made by emozoo.create() (with .config)")
        _check_finite(model)
        self.model = model.to(device).eval()
        self.batch_size, self.min_face = batch_size, min_face
        self.labels = self.model.config.label_names
        self.spec = self.model.config.input
        self.to_input = face_transform(self.model)
        self.model_name = _model_name(self.model)
        self.device = next(self.model.parameters()).device
        #: an ensemble's members as ``"i:backbone"`` (its per-face ``members``), None for other models
        self.member_names = None
        names = getattr(self.model, "member_names", None)
        if names and callable(getattr(self.model, "forward_with_members", None)):
            self.member_names = [f"{i}:{n}" for i, n in enumerate(names)]

    def detect(self, image: np.ndarray) -> list[Face]:
        """The detector's faces in an RGB uint8 image, less those smaller than ``min_face``.

        Raises :class:`emozoo.DataError` naming the detector when it fails or returns something that
        is not a list of :class:`emozoo.Face` with finite, non-empty boxes (``predict`` makes that the
        image's error and goes on)."""
        try:
            found = self.detector.detect(image)
        except Exception as exc:  # a plugin's bug must not end the run: it becomes this image's error
            raise DataError(f"face detector {self.detector_name} failed: {type(exc).__name__}: "
                            f"{_one_line(exc)}") from exc
        try:
            faces = [_checked_face(f) for f in found]
        except (TypeError, ValueError) as exc:
            raise DataError(f"face detector {self.detector_name} returned a malformed face ({_one_line(exc)}); "
                            "detect(image) must return a list of emozoo.Face((x0, y0, x1, y1), score)") from None
        H, W = image.shape[:2]
        for f in faces:  # a box far off or many times the image would make crop_face allocate gigabytes
            x0, y0, x1, y1 = f.box
            if x1 <= 0 or y1 <= 0 or x0 >= W or y0 >= H or f.width > 4 * W or f.height > 4 * H:
                raise DataError(f"face detector {self.detector_name} returned a box {f.box} outside this {W}x{H} "
                                "image, or many times its size")
        return [f for f in faces if min(f.width, f.height) >= self.min_face]

    def crops(self, image: np.ndarray, faces: Iterable[Face]) -> list[torch.Tensor]:
        """Each face as the model's input: :func:`crop_face` with the config's margin and aspect ratio,
        then :func:`emozoo.face_transform` (channels, size, mean/std).

        A detector with ``whole_image = True`` (``full``: the inputs are face crops) gives the model the
        image itself, exactly as :func:`emozoo.face_transform` makes it, with no margin or padding. For a
        one-channel model, a crop whose three channels are equal (a grey image) is passed as one channel,
        as in training, rather than through an RGB-to-grey conversion that rounds every pixel down."""
        if getattr(self.detector, "whole_image", False):
            if faces and not image.flags.writeable:
                image = image.copy()  # torch warns on read-only arrays (np.asarray of a PIL image)
            return [self.to_input(_grey_if_equal(image, self.spec.in_chans)) for _ in faces]
        aspect = self.spec.size[1] / self.spec.size[0]
        return [self.to_input(_grey_if_equal(crop_face(image, f.box, self.spec.crop_margin, aspect), self.spec.in_chans))
                for f in faces]

    def classify(self, crops: list[torch.Tensor]) -> np.ndarray:
        """Calibrated label probabilities ``(N, num_classes)`` of N crops, ``batch_size`` crops per forward pass."""
        return self.classify_members(crops)[0]

    @torch.inference_mode()
    def classify_members(self, crops: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`classify` and, for an ensemble, each member's top label index ``(N, M)`` from the same forward
        passes (the members' outputs the fusion combined); None for a model that is not an ensemble."""
        probs, tops = [np.zeros((0, len(self.labels)), np.float32)], []
        for i in range(0, len(crops), self.batch_size):
            x = torch.stack(crops[i:i + self.batch_size]).to(self.device)
            if self.member_names is None:
                logits = self.model(x)
            else:
                logits, members = self.model.forward_with_members(x)
                tops.append(members.argmax(-1).T.cpu().numpy())
            probs.append(probabilities(self.model, logits).cpu().numpy())
        if self.member_names is None:
            return np.concatenate(probs), None
        return np.concatenate(probs), np.concatenate(tops) if tops else np.zeros((0, len(self.member_names)), np.int64)

    def __call__(self, inputs: Any, *, every: int = 1, smooth: float = 0.0, keep_images: bool = False,
                 progress: bool | None = None, detect_every: int = DEFAULT_DETECT_EVERY) -> Iterator[Prediction]:
        """Yield a :class:`Prediction` per image and per ``every``-th video frame, in input order.

        In a video file the detector runs on every ``detect_every``-th of those frames (1: all), counted from the
        first, on the last one and on both sides of a scene cut; the faces are followed between
        (:class:`emozoo.inference.tracking.Follower`)."""
        if every < 1:
            raise ConfigError(f"every must be at least 1, got {every}")
        if detect_every < 1:
            raise ConfigError(f"detect_every must be at least 1 (1: detect on every frame), got {detect_every}")
        if not 0 <= smooth < 1:
            raise ConfigError(f"smooth must be in [0, 1) (0: no smoothing), got {smooth}")
        return self._run(expand_inputs(inputs), every, Follower(self.detect, detect_every), Smoother(smooth),
                         keep_images, progress)

    def _run(self, items, every, follower, smoother, keep_images, progress) -> Iterator[Prediction]:
        bar = progress_bar(progress, total=len(items), desc="predict", unit="input", show=len(items) > 1)
        yield from self.run_followed(follower(iter_frames(items, every, keep_images, progress)), smoother, bar)
        bar.update()
        bar.close()

    def run_followed(self, followed, smoother: Smoother, bar=None) -> Iterator[Prediction]:
        """Classify the faces of ``(prediction, image, faces, tracks)`` items (a :class:`Follower`'s output; ``tracks``
        None: not a followed video frame, no track number and no smoothing) and yield the predictions in order,
        ``smoother`` applied to each track's scores; ``bar`` (a tqdm bar) advances at each new source."""
        pending: list[tuple[Prediction, list[Face], list[int] | None]] = []
        crops: list[torch.Tensor] = []
        last_source = None
        for pred, image, faces, tracks in followed:
            if bar is not None and last_source is not None and pred.source != last_source:
                bar.update()
            last_source = pred.source
            crops += self.crops(image, faces)
            pending.append((pred, faces, tracks))
            # Flush when a batch of crops is ready, and also: at once when nothing waits for the model (faceless
            # frames and errors come out as they come), after batch_size frames (so frames with few faces, kept
            # for drawing, do not pile up in memory), and for every camera frame (a camera waits for no batch).
            if (not crops or len(crops) >= self.batch_size or len(pending) >= self.batch_size
                    or pred.source.startswith(CAMERA_PREFIX)):
                yield from self._finish(pending, crops, smoother)
        yield from self._finish(pending, crops, smoother)

    def _finish(self, pending, crops, smoother) -> Iterator[Prediction]:
        """Classify the crops of the pending predictions, fill in their faces and yield them."""
        probs, member_tops = self.classify_members(crops)
        k = 0
        for pred, faces, tracks in pending:
            found, tops, k = probs[k:k + len(faces)], _rows(member_tops, k, len(faces)), k + len(faces)
            if not np.isfinite(found).all():
                pred.error = (f"{pred.source}: the model {self.model_name} gave non-finite scores (NaN or infinity) "
                              "for this input; check its weights and config.input mean/std")
                faces, found = [], found[:0]
            if tracks is None:
                tracked = [(p, None) for p in found]
            else:
                tracked = list(zip(smoother(pred, tracks, found), tracks))
            pred.faces = [self._face(f, p, track, tops[j] if tops is not None else None)
                          for j, (f, (p, track)) in enumerate(zip(faces, tracked))]
            yield pred
        pending.clear()
        crops.clear()

    def _face(self, face: Face, p: np.ndarray, track: int | None, tops: np.ndarray | None) -> FacePrediction:
        return face_prediction(face, p, track, self.labels, self.min_confidence, self.member_names, tops)


def face_prediction(face: Face, p: np.ndarray, track: int | None, labels: list[str], min_confidence: float,
                    member_names: list[str] | None = None, tops: np.ndarray | None = None) -> FacePrediction:
    """One face's prediction from its (smoothed) probabilities ``p`` (in ``labels`` order) and, for an ensemble, its
    members' top label indices ``tops``: the top label (``"uncertain"`` under ``min_confidence``), margin, agreement."""
    top = int(np.argmax(p))
    second = float(np.delete(p, top).max()) if len(p) > 1 else 0.0
    uncertain = float(p[top]) < min_confidence  # as the reported score (float32 would round P)
    members = agreement = None
    if tops is not None:
        members = [{"name": n, "label": labels[int(t)]} for n, t in zip(member_names, tops)]
        agreement = float(np.mean(tops == top))
    return FacePrediction(face.box, face.score, dict(zip(labels, map(float, p))), UNCERTAIN if uncertain else labels[top],
                          track, margin=float(p[top]) - second, uncertain=uncertain, members=members, agreement=agreement)


def check_min_confidence(value: Any) -> float:
    """``min_confidence`` (CLI ``--min-confidence``) as a float in [0, 1), else a one-line :class:`emozoo.ConfigError`."""
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = float("nan")
    if not 0 <= p < 1:
        raise ConfigError(f"min_confidence (--min-confidence) must be in [0, 1): a face whose top probability is "
                          f"below it is labelled uncertain (0: never); got {value!r}")
    return p


def _rows(array: np.ndarray | None, start: int, n: int) -> np.ndarray | None:
    return None if array is None else array[start:start + n]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a :class:`torch.device` (None: cpu), refused with a :class:`emozoo.ConfigError` that
    says what to use when torch does not know it or this machine lacks it."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {str(device)!r}: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(device)!r}: this machine has no usable CUDA GPU "
                              "(torch.cuda.is_available() is False); use device cpu") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {str(device)!r}: there are only {torch.cuda.device_count()} CUDA GPU(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(device)!r}: MPS (Apple GPU) is not available here; use device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        try:
            torch.empty(0, device=dev)
        except Exception:  # noqa: BLE001 - any backend failure means the device is not usable here
            raise ConfigError(f"device {str(device)!r} is not available on this machine; use device cpu") from None
    return dev


def _model_name(model: nn.Module) -> str:
    config = model.config
    return config.name or config.architecture


def _check_finite(model: nn.Module) -> None:
    """Refuse a model whose weights or input normalisation hold NaN or infinity: every score would be NaN."""
    name = _model_name(model)
    spec = model.config.input
    mean, std = list(spec.mean or []), list(spec.std or [])
    if not all(np.isfinite(v) for v in mean + std) or any(v == 0 for v in std):
        raise ConfigError(f"model {name}: config.input mean {mean} / std {std} must be finite, with std non-zero; "
                          "fix config.json's input")
    for what, tensors in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for key, t in tensors:
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise WeightsError(f"model {name}: {what} {key} holds NaN or infinity, so every score would be NaN; "
                                   "load finite weights (re-download or re-train)")


def _detector_name(detector: Any) -> str:
    if isinstance(detector, str):
        if detector == "auto":
            from .._detectors import default_detector

            return repr(default_detector())
        return repr(detector)
    return type(detector).__name__


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _checked_face(face: Any) -> Face:
    if not isinstance(face, Face):
        raise TypeError(f"got {type(face).__name__}, not emozoo.Face")
    box = tuple(float(v) for v in face.box)
    score = float(face.score)
    if len(box) != 4 or not all(np.isfinite(box)) or not np.isfinite(score):
        raise ValueError(f"box {face.box!r} score {face.score!r}: need 4 finite numbers and a finite score")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"box {face.box!r} is empty: need x0 < x1 and y0 < y1")
    return face if box == face.box and score == face.score else Face(box, score, face.keypoints)


def _grey_if_equal(image: np.ndarray, in_chans: int) -> np.ndarray:
    if in_chans == 1 and image.ndim == 3 and image.shape[2] == 3 and (image[..., 0] == image[..., 1]).all() \
            and (image[..., 0] == image[..., 2]).all():
        return image[..., 0]
    return image


def iter_predict(inputs: Any, model: str | nn.Module = "emoxnetlite", detector: Any = "auto", *,
                 batch_size: int = 32, every: int = 1, smooth: float = 0.0, min_face: float = 0,
                 device: str | torch.device | None = None, keep_images: bool = False,
                 progress: bool | None = None, min_confidence: float = 0.0,
                 detect_every: int = DEFAULT_DETECT_EVERY) -> Iterator[Prediction]:
    """Like :func:`predict`, but yields each :class:`Prediction` as soon as its faces are classified,
    in input order: for long videos and for cameras (``"camera:0"``), which never end."""
    predictor = Predictor(model, detector, batch_size=batch_size, min_face=min_face, device=device,
                          min_confidence=min_confidence)
    return predictor(inputs, every=every, smooth=smooth, keep_images=keep_images, progress=progress,
                     detect_every=detect_every)


def predict(inputs: Any, model: str | nn.Module = "emoxnetlite", detector: Any = "auto", *,
            batch_size: int = 32, every: int = 1, smooth: float = 0.0, min_face: float = 0,
            device: str | torch.device | None = None, keep_images: bool = False,
            progress: bool | None = None, min_confidence: float = 0.0,
            detect_every: int = DEFAULT_DETECT_EVERY) -> list[Prediction]:
    """The expression of every face in ``inputs``: one :class:`Prediction` per image or video frame.

    - ``inputs``: an image or video path, a directory (searched recursively), a glob pattern
      (``"photos/**/*.jpg"``), a PIL image, a uint8 RGB array ``(H, W, 3)`` or tensor ``(C, H, W)``,
      a 4-d array or tensor (a batch: one image per row), the ``bytes`` of an encoded image, or a list
      of these. URLs are not fetched, and FIFOs and devices are refused (each is that input's error).
    - ``model``: a name (``emozoo.create(name, pretrained=True)``) or a model from :func:`emozoo.create`.
    - ``detector``: a registered face detector (``emozoo.list_detectors()``; ``"auto"``: BlazeFace when
      the ``emozoo-blazeface`` plugin is installed, else OpenCV's Haar cascade; ``"full"``: the
      inputs are already face crops, and the model sees exactly ``emozoo.face_transform(model)(image)``)
      or an object with ``detect(image) -> list[emozoo.Face]``. A detector that raises or returns
      something else than faces makes that image's ``error``, naming it, and the run goes on.
    - ``device``: a torch device this machine has (``ConfigError`` otherwise, before any work).
    - ``batch_size``: faces per forward pass; faces of many images and frames share a batch.
    - ``every``: in videos, classify every N-th frame; ``smooth``: in videos, weight in [0, 1) of the
      previous frames in an exponential moving average of each tracked face's scores.
    - ``detect_every``: in video files, run the detector on every N-th classified frame (counted from the first; and
      on the last one, and on both sides of a scene cut) and follow the faces between (1: detect on every frame).
      Faces keep a ``track`` number (ByteTrack) through a video, also after being hidden for up to a second.
    - ``min_face``: ignore faces narrower or shorter than this many pixels.
    - ``min_confidence``: in [0, 1); a face whose top probability is below it gets the label ``"uncertain"``
      (its scores are still all there; ``benchmarks/coverage.py`` shows what each threshold keeps and gains).

    A model whose weights or input mean/std hold NaN or infinity is refused (``WeightsError`` /
    ``ConfigError``); a face whose scores come out non-finite makes its input's ``error``.
    An input that cannot be read (missing, empty, truncated, not an image, too large) gives a
    :class:`Prediction` whose ``error`` says why; the others are unaffected. An image without a
    face has an empty ``faces`` list. Each face has ``box``, ``confidence``, ``scores`` (every
    label's calibrated probability, ``softmax(logits / T)`` with the temperature ``emozoo calibrate`` stored in
    the model's config, the raw softmax when none was fitted), ``label``, ``margin`` (top probability minus the
    second), ``uncertain``, and for an ensemble ``members`` (each member's top label) and ``agreement`` (the
    fraction of members whose top label is the ensemble's); ``as_dict()`` gives plain JSON-ready data.
    """
    return list(iter_predict(inputs, model, detector, batch_size=batch_size, every=every, smooth=smooth,
                             min_face=min_face, device=device, keep_images=keep_images, progress=progress,
                             min_confidence=min_confidence, detect_every=detect_every))
