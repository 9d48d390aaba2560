"""Predicting expressions: the faces in photos, arrays, videos and cameras, classified (``emozoo.predict``).

Each input (an image file, a directory searched recursively, a glob pattern, a PIL image, a uint8 RGB
array, a video file, or ``"camera:N"`` for a webcam) becomes one :class:`Prediction` per image or
video frame. Faces are found by a face detector (see :mod:`emozoo._detectors`), cropped exactly as
the model's ``config.input`` says (margin, aspect ratio, then :func:`emozoo.face_transform`:
channels, size, mean/std) and classified in batches across images and frames. In a video file the detector runs
on key frames and the faces are followed between them, numbered by ByteTrack (:mod:`.tracking`). A file that cannot
be read gives a :class:`Prediction` with ``error`` set, and the rest carry on.

The package is named ``inference`` because ``emozoo.predict`` is the function that runs it.
"""
from __future__ import annotations

from .crop import crop_face
from .draw import draw_faces
from .engine import Predictor, iter_predict, predict, resolve_device
from .results import FacePrediction, Prediction
from .sources import (
                      CAMERA_PREFIX,
                      IMAGE_EXTS,
                      VIDEO_EXTS,
                      array_to_rgb,
                      expand_inputs,
                      iter_frames,
                      load_image,
                      open_capture,
                      progress_bar,
                      to_rgb,
)
from .tracking import DEFAULT_DETECT_EVERY, FaceTracker, Follower

__all__ = ["CAMERA_PREFIX", "IMAGE_EXTS", "VIDEO_EXTS", "DEFAULT_DETECT_EVERY", "FacePrediction", "Prediction", "Predictor",
           "FaceTracker", "Follower", "array_to_rgb", "crop_face", "draw_faces", "expand_inputs", "iter_frames", "iter_predict",
           "load_image", "open_capture", "predict", "progress_bar", "resolve_device", "to_rgb"]
