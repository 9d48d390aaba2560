"""emozoo: a plugin-based model zoo for facial expression recognition.

Quick start::

    import emozoo
    model = emozoo.create("emoxnetlite", pretrained=True)
    emozoo.list_models("emoxnet*")
"""
from __future__ import annotations

from ._backbone import BackboneBase, TimmBackbone
from ._builder import create, list_models
from ._config import FERPLUS_LABELS, InputSpec, ModelConfig
from ._detectors import Face, create_detector, list_detectors, register_face_detector
from ._models import ArchitectureCfg, PretrainedCfg
from ._profile import count_macs, count_params
from ._publish import pull, push_to_hub
from ._version import __version__
from ._weights import load_weights, save_pretrained
from .builtins.emoxnet import EmoXNet
from .builtins.fusion import Fusion
from .calibration import predict_proba
from .data.transforms import face_transform
from .errors import (
                     ConfigError,
                     DataError,
                     DuplicateNameError,
                     EmozooError,
                     ExportError,
                     PluginError,
                     UnknownBackboneError,
                     UnknownDatasetError,
                     UnknownDistillLossError,
                     UnknownFaceDetectorError,
                     UnknownFusionError,
                     UnknownModelError,
                     UnknownNameError,
                     WeightsError,
)
from .hookspecs import hookimpl
from .inference import Prediction, Predictor, iter_predict, predict
from .plugins import (
                     list_backbones,
                     list_datasets,
                     list_distill_losses,
                     list_fusions,
                     load_plugins,
                     register_backbone,
                     register_distill_loss,
                     register_fusion,
)

__all__ = [
    "__version__",
    # models: create, list, save, publish
    "create", "list_models", "predict_proba", "list_backbones", "list_fusions", "list_distill_losses", "list_datasets",
    "face_transform",
    "save_pretrained", "load_weights", "push_to_hub", "pull", "ModelConfig", "InputSpec", "FERPLUS_LABELS",
    "ArchitectureCfg", "PretrainedCfg", "EmoXNet", "Fusion", "BackboneBase", "TimmBackbone",
    "count_macs", "count_params",
    # plugins
    "register_backbone", "register_fusion", "register_distill_loss", "register_face_detector", "hookimpl",
    "load_plugins",
    # inference
    "predict", "iter_predict", "Predictor", "Prediction", "Face", "create_detector", "list_detectors",
    # errors
    "EmozooError", "UnknownNameError", "UnknownModelError", "UnknownBackboneError", "UnknownFusionError",
    "UnknownDistillLossError", "UnknownFaceDetectorError", "UnknownDatasetError", "DuplicateNameError",
    "PluginError", "ConfigError", "WeightsError", "DataError", "ExportError",
]
