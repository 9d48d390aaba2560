"""emozoo: a plugin-based model zoo for facial expression recognition.

Quick start::

    import emozoo
    model = emozoo.create("emoxnetlite", pretrained=True)
    emozoo.list_models("emoxnet*")
"""
from __future__ import annotations

__version__ = "0.1.0"

from ._backbone import BackboneBase, TimmBackbone
from ._builder import create, face_transform, list_models
from ._config import FERPLUS_LABELS, InputSpec, ModelConfig
from ._hub import push_to_hub
from ._models import EmoXNet
from ._profile import count_macs, count_params
from ._weights import load_weights, save_pretrained
from ._detectors import Face, create_detector, list_detectors
from .inference import Prediction, Predictor, iter_predict, predict
from ._registry import register_backbone, register_distill_loss, register_face_detector, register_fusion
from .errors import (ConfigError, DataError, DuplicateNameError, EmozooError, ExportError, PluginError,
                     UnknownBackboneError, UnknownDistillLossError, UnknownFaceDetectorError, UnknownFusionError,
                     UnknownModelError, UnknownNameError, WeightsError)
from .hookspecs import hookimpl
from .plugins import load_plugins

__all__ = [
    "create", "list_models", "face_transform", "push_to_hub", "save_pretrained", "load_weights", "ModelConfig", "InputSpec", "FERPLUS_LABELS",
    "EmoXNet", "count_macs", "count_params",
    "BackboneBase", "TimmBackbone", "register_backbone", "register_fusion", "register_distill_loss",
    "hookimpl", "load_plugins",
    "predict", "iter_predict", "Predictor", "Prediction", "Face", "create_detector", "list_detectors",
    "register_face_detector", "UnknownFaceDetectorError",
    "EmozooError", "UnknownNameError", "UnknownModelError", "UnknownBackboneError", "UnknownFusionError",
    "UnknownDistillLossError", "DuplicateNameError", "PluginError", "ConfigError", "WeightsError",
    "DataError", "ExportError",
]
