"""The front door: :class:`Predictor` (a model and a face detector) and :func:`predict` / :func:`iter_predict`."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from .._detectors import Face, create_detector
from ..errors import ConfigError
from .crop import crop_face
from .results import FacePrediction, Prediction
from .sources import CAMERA_PREFIX, expand_inputs, iter_frames, progress_bar
from .tracking import Tracker


class Predictor:
    """A model and a face detector, ready to run on images and frames (what :func:`predict` uses).

    ``detect(image)`` finds the faces of one RGB image, ``crops(image, faces)`` prepares them as the
    model's inputs, ``classify(crops)`` returns their label probabilities in batches, and calling it
    on inputs yields :class:`Prediction` objects. Build it once to run it on many inputs.
    """

    def __init__(self, model: str | nn.Module = "emoxnetlite", detector: Any = "auto", *, batch_size: int = 32,
                 min_face: float = 0, device: str | torch.device | None = None):
        from .._builder import create
        from .._config import ModelConfig
        from ..data.transforms import face_transform

        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(model, str):
            model = create(model, pretrained=True)
        if not isinstance(getattr(model, "config", None), ModelConfig):
            raise ConfigError("predict() needs a model name or a model made by emozoo.create() (with .config)")
        self.model = model.to(device or "cpu").eval()
        self.detector = create_detector(detector)
        self.batch_size, self.min_face = batch_size, min_face
        self.labels = self.model.config.label_names
        self.spec = self.model.config.input
        self.to_input = face_transform(self.model)
        self.device = next(self.model.parameters()).device

    def detect(self, image: np.ndarray) -> list[Face]:
        """The detector's faces in an RGB uint8 image, less those smaller than ``min_face``."""
        return [f for f in self.detector.detect(image) if min(f.width, f.height) >= self.min_face]

    def crops(self, image: np.ndarray, faces: Iterable[Face]) -> list[torch.Tensor]:
        """Each face as the model's input: :func:`crop_face` with the config's margin and aspect ratio,
        then :func:`emozoo.face_transform` (channels, size, mean/std)."""
        aspect = self.spec.size[1] / self.spec.size[0]
        return [self.to_input(crop_face(image, f.box, self.spec.crop_margin, aspect)) for f in faces]

    @torch.inference_mode()
    def classify(self, crops: list[torch.Tensor]) -> np.ndarray:
        """Label probabilities ``(N, num_classes)`` of N crops, ``batch_size`` crops per forward pass."""
        if not crops:
            return np.zeros((0, len(self.labels)), np.float32)
        out = [self.model(torch.stack(crops[i:i + self.batch_size]).to(self.device)).float().softmax(-1).cpu()
               for i in range(0, len(crops), self.batch_size)]
        return torch.cat(out).numpy()

    def __call__(self, inputs: Any, *, every: int = 1, smooth: float = 0.0, keep_images: bool = False,
                 progress: bool | None = None) -> Iterator[Prediction]:
        """Yield a :class:`Prediction` per image and per ``every``-th video frame, in input order."""
        if every < 1:
            raise ConfigError(f"every must be at least 1, got {every}")
        if not 0 <= smooth < 1:
            raise ConfigError(f"smooth must be in [0, 1) (0: no smoothing), got {smooth}")
        return self._run(expand_inputs(inputs), every, Tracker(smooth), keep_images, progress)

    def _run(self, items, every, tracker, keep_images, progress) -> Iterator[Prediction]:
        pending: list[tuple[Prediction, list[Face]]] = []
        crops: list[torch.Tensor] = []
        bar = progress_bar(progress, total=len(items), desc="predict", unit="input", show=len(items) > 1)
        last_source = None
        for pred, image in iter_frames(items, every, keep_images, progress):
            if last_source is not None and pred.source != last_source:
                bar.update()
            last_source = pred.source
            faces = self.detect(image) if image is not None else []
            crops += self.crops(image, faces)
            pending.append((pred, faces))
            if len(crops) >= self.batch_size or pred.source.startswith(CAMERA_PREFIX):  # a camera waits for no batch
                yield from self._finish(pending, crops, tracker)
        yield from self._finish(pending, crops, tracker)
        bar.update()
        bar.close()

    def _finish(self, pending, crops, tracker) -> Iterator[Prediction]:
        """Classify the crops of the pending predictions, fill in their faces and yield them."""
        probs = self.classify(crops)
        k = 0
        for pred, faces in pending:
            found, k = probs[k:k + len(faces)], k + len(faces)
            tracked = tracker.update(pred, faces, found) if pred.frame is not None else [(p, None) for p in found]
            pred.faces = [FacePrediction(f.box, f.score, dict(zip(self.labels, map(float, p))),
                                         self.labels[int(np.argmax(p))], track) for f, (p, track) in zip(faces, tracked)]
            yield pred
        pending.clear()
        crops.clear()


def iter_predict(inputs: Any, model: str | nn.Module = "emoxnetlite", detector: Any = "auto", *,
                 batch_size: int = 32, every: int = 1, smooth: float = 0.0, min_face: float = 0,
                 device: str | torch.device | None = None, keep_images: bool = False,
                 progress: bool | None = None) -> Iterator[Prediction]:
    """Like :func:`predict`, but yields each :class:`Prediction` as soon as its faces are classified,
    in input order: for long videos and for cameras (``"camera:0"``), which never end."""
    predictor = Predictor(model, detector, batch_size=batch_size, min_face=min_face, device=device)
    return predictor(inputs, every=every, smooth=smooth, keep_images=keep_images, progress=progress)


def predict(inputs: Any, model: str | nn.Module = "emoxnetlite", detector: Any = "auto", *,
            batch_size: int = 32, every: int = 1, smooth: float = 0.0, min_face: float = 0,
            device: str | torch.device | None = None, keep_images: bool = False,
            progress: bool | None = None) -> list[Prediction]:
    """The expression of every face in ``inputs``: one :class:`Prediction` per image or video frame.

    - ``inputs``: an image or video path, a directory (searched recursively), a glob pattern
      (``"photos/**/*.jpg"``), a PIL image, a uint8 RGB array ``(H, W, 3)``, or a list of these.
    - ``model``: a name (``emozoo.create(name, pretrained=True)``) or a model from :func:`emozoo.create`.
    - ``detector``: a registered face detector (``emozoo.list_detectors()``; ``"auto"``: BlazeFace when
      the ``emozoo-blazeface`` plugin is installed, else OpenCV's Haar cascade; ``"full"``: the
      inputs are already face crops) or an object with ``detect(image) -> list[emozoo.Face]``.
    - ``batch_size``: faces per forward pass; faces of many images and frames share a batch.
    - ``every``: in videos, classify every N-th frame; ``smooth``: in videos, weight in [0, 1) of the
      previous frames in an exponential moving average of each tracked face's scores.
    - ``min_face``: ignore faces narrower or shorter than this many pixels.

    An input that cannot be read (missing, empty, truncated, not an image, too large) gives a
    :class:`Prediction` whose ``error`` says why; the others are unaffected. An image without a
    face has an empty ``faces`` list. Each face has ``box``, ``confidence``, ``scores`` (every
    label's probability) and ``label``; ``as_dict()`` gives plain JSON-ready data.
    """
    return list(iter_predict(inputs, model, detector, batch_size=batch_size, every=every, smooth=smooth,
                             min_face=min_face, device=device, keep_images=keep_images, progress=progress))
