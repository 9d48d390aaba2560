"""``ModelConfig``: the single description of a model, stored as ``config.json`` beside its weights.

A config holds the architecture and its constructor arguments (for an EmoXNet: the members and the
fusion), the label names in output order, the input spec, and the provenance of trained weights
(dataset, recipe, metrics and the command that produced them). :func:`emozoo.create` builds a model
from it; :func:`emozoo.save_pretrained` writes it.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIG_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

FERPLUS_LABELS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")

#: Mean and std of the FER+ Training images (FER+ protocol rows) in [0, 1], measured with
#: ``python -c "import emozoo.data as d; x = d.FerPlusNpz('ferplus_npz', 'Training').images / 255; print(x.mean(), x.std())"``.
FER_MEAN, FER_STD = 0.5076, 0.2544

#: the largest input side a model may declare (pixels): a bigger one is a typo that would allocate gigabytes
MAX_INPUT_SIZE = 1024


@dataclass
class InputSpec:
    """How a face crop becomes the model's input tensor."""

    in_chans: int = 1
    size: tuple[int, int] = (48, 48)
    mean: tuple[float, ...] = (FER_MEAN,)
    std: tuple[float, ...] = (FER_STD,)
    #: fraction of the detected face box added on each side before resizing
    crop_margin: float = 0.1

    def __post_init__(self):
        if isinstance(self.size, (str, bytes)) or not isinstance(self.size, (list, tuple)):
            raise ConfigError(f"input.size must be [height, width], got {self.size!r}")
        self.size = tuple(int(s) for s in self.size)
        self.mean, self.std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        if self.in_chans not in (1, 3):
            raise ConfigError(f"input.in_chans must be 1 or 3, got {self.in_chans!r}")
        if len(self.size) != 2 or min(self.size) < 8:
            raise ConfigError(f"input.size must be [height, width] of at least 8 pixels, got {list(self.size)}")
        if max(self.size) > MAX_INPUT_SIZE:
            raise ConfigError(f"input.size {list(self.size)} is larger than emozoo's limit of {MAX_INPUT_SIZE} pixels "
                              "a side; face crops are small (FER+ is 48x48): give a smaller size")
        if len(self.mean) == 1 and self.in_chans == 3:
            self.mean, self.std = self.mean * 3, self.std * 3
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ConfigError(f"input.mean and input.std need {self.in_chans} values each "
                              f"(one per channel), got {list(self.mean)} and {list(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"input.std must be positive, got {list(self.std)}")
        if not 0 <= self.crop_margin < 1:
            raise ConfigError(f"input.crop_margin must be in [0, 1), got {self.crop_margin}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.in_chans, *self.size)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model, and what is known about its weights."""

    architecture: str
    model_args: dict[str, Any] = field(default_factory=dict)
    label_names: tuple[str, ...] = FERPLUS_LABELS
    input: InputSpec = field(default_factory=InputSpec)
    #: ``arch.tag`` of published weights, when these are they
    name: str | None = None
    dataset: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    license: str | None = None
    #: sha256 of ``model.safetensors`` (written on push, checked on load)
    weights_sha256: str | None = None
    #: the plugin distribution that provides each non-builtin component, e.g.
    #: ``{"backbone squeezenet": "emozoo-extras"}`` (filled by :meth:`record_plugins`)
    requires: dict[str, str] = field(default_factory=dict)
    #: probability calibration: ``{"temperature": T, ...}`` (with where T was fitted); scores are
    #: ``softmax(logits / T)`` (:mod:`emozoo.calibration`); empty: ``T = 1``
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.architecture, str) or not self.architecture:
            raise ConfigError(f"'architecture' must be a model name such as 'emoxnetlite', got {self.architecture!r}")
        if not isinstance(self.model_args, dict):
            raise ConfigError(f"'model_args' must be an object of keyword arguments, got {self.model_args!r}")
        self.label_names = check_label_names(self.label_names)
        t = self.calibration.get("temperature", 1.0) if isinstance(self.calibration, dict) else None
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ConfigError(f"'calibration' must be an object with a positive 'temperature', e.g. "
                              f"{{\"temperature\": 1.5}}, got {self.calibration!r}")
        if isinstance(self.input, dict):
            self.input = _build(InputSpec, self.input, "input")
        elif not isinstance(self.input, InputSpec):
            raise ConfigError(f"'input' must be an object such as {{\"in_chans\": 1, \"size\": [48, 48]}}, "
                              f"got {self.input!r}")

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input"]["size"] = list(self.input.size)
        d["label_names"] = list(self.label_names)
        return {"format": "emozoo", "config_version": CONFIG_VERSION, "num_classes": self.num_classes, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> ModelConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
        d = copy.deepcopy(d)
        if d.pop("format", "emozoo") != "emozoo":
            raise ConfigError(f"{source}: 'format' is not 'emozoo'; this is not an emozoo config")
        version = d.pop("config_version", CONFIG_VERSION)
        if not isinstance(version, int) or version > CONFIG_VERSION:
            raise ConfigError(f"{source}: config_version {version!r} is newer than this emozoo understands "
                              f"({CONFIG_VERSION}); upgrade emozoo")
        num_classes = d.pop("num_classes", None)
        d.pop("emozoo_version", None)
        if "architecture" not in d:
            raise ConfigError(f"{source}: missing key 'architecture'")
        if not isinstance(d.get("model_args", {}), dict):
            raise ConfigError(f"{source}: 'model_args' must be an object")
        cfg = _build(cls, d, source)
        if num_classes is not None and num_classes != cfg.num_classes:
            raise ConfigError(f"{source}: num_classes is {num_classes} but label_names has {cfg.num_classes} names")
        return cfg

    def components(self) -> list[tuple[str, str]]:
        """``(kind, name)`` of the architecture and each backbone and fusion it is built from, as its
        registered :class:`~emozoo.ArchitectureCfg` declares them (a backbone is its own component)."""
        from ._registry import ARCHITECTURES

        arch = self.architecture
        if arch not in ARCHITECTURES:  # not registered now (a missing plugin): what can be said without it
            return [("backbone", arch)]
        parts = ARCHITECTURES.get(arch).meta["cfg"].components_of(arch, self.model_args)
        return parts if ("backbone", arch) in parts else [("model", arch), *parts]

    def record_plugins(self) -> None:
        """Set ``requires`` to the plugin distribution of every component that a plugin registered.

        Built-ins, ``timm/`` names and names registered by a script need no package; a name that is
        not registered now keeps what the config already recorded for it.
        """
        from ._registry import ARCHITECTURES, FUSIONS

        registries = {"backbone": ARCHITECTURES, "model": ARCHITECTURES, "fusion": FUSIONS}
        requires = {}
        for kind, name in self.components():
            key = f"{kind} {name}"
            if isinstance(name, str) and name in registries[kind]:
                dist = registries[kind].get(name).distribution
                if dist:
                    requires[key] = dist
            elif key in self.requires:
                requires[key] = self.requires[key]
        self.requires = requires

    def to_json(self) -> str:
        """The text of ``config.json``."""
        from ._version import __version__

        return json.dumps({**self.to_dict(), "emozoo_version": __version__}, indent=2) + "\n"

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` into ``directory``, recording the plugins its components come from."""
        self.record_plugins()
        path = Path(directory) / CONFIG_NAME
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ModelConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"{path}: not found; a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        try:
            text = path.read_text()
            data = json.loads(text)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        except json.JSONDecodeError as exc:
            if text.lstrip()[:1] == "<":
                raise ConfigError(f"{path}: got an HTML page instead of JSON (a proxy, captive portal or login "
                                  "page answered instead of the model's server)") from None
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))


def check_label_names(names: Any) -> tuple[str, ...]:
    """``names`` as a tuple of distinct, non-empty strings, or a one-line :class:`ConfigError`."""
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise ConfigError(f"label_names must be a list of class names such as ['neutral', 'happiness'], got {names!r}")
    names = tuple(names)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"label_names must be a non-empty list of distinct names, got {list(names)}")
    return names


def _build(cls, d: dict[str, Any], source: str):
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    try:
        return cls(**d)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
