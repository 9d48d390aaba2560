"""Exceptions raised by emozoo.

Every error a user can cause derives from :class:`EmozooError`, so an application can catch
them all in one place; the CLI turns them into a one-line message and a non-zero exit status.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class EmozooError(Exception):
    """Base class of every error emozoo raises on purpose."""


class UnknownNameError(EmozooError, LookupError):
    """A name (model, backbone, fusion, loss, ...) that nothing registered.

    The message lists the closest registered names, so a typo is fixed at a glance.
    """

    kind = "name"

    def __init__(self, name: str, known: Iterable[str], kind: str | None = None, hint: str = ""):
        self.name = name
        self.kind = kind or self.kind
        self.known = sorted(known)
        self.matches = difflib.get_close_matches(name, self.known, n=5, cutoff=0.6)
        msg = f"Unknown {self.kind} {name!r}."
        if self.matches:
            msg += " Did you mean: " + ", ".join(self.matches) + "?"
        elif self.known:
            shown = ", ".join(self.known[:12]) + (", ..." if len(self.known) > 12 else "")
            msg += f" Registered {self.kind}s: {shown}."
        if hint:
            msg += " " + hint
        super().__init__(msg)

    def __str__(self) -> str:  # LookupError would otherwise quote the message like a KeyError
        return self.args[0]


class UnknownModelError(UnknownNameError):
    kind = "model"


class UnknownBackboneError(UnknownNameError):
    kind = "backbone"


class UnknownFusionError(UnknownNameError):
    kind = "fusion"


class UnknownDistillLossError(UnknownNameError):
    kind = "distillation loss"


class UnknownFaceDetectorError(UnknownNameError):
    kind = "face detector"


class DuplicateNameError(EmozooError):
    """Two plugins (or a plugin and a user script) registered the same name."""


class PluginError(EmozooError):
    """A plugin failed to load or registered something invalid."""


class ConfigError(EmozooError, ValueError):
    """A model config (``config.json`` or keyword arguments) is malformed or inconsistent."""


class WeightsError(EmozooError):
    """Weights that cannot be loaded: missing file, wrong format, or tensors that do not match."""


class DataError(EmozooError):
    """A data file or data spec that cannot be read: the message names the file and the problem."""


class ExportError(EmozooError):
    """A model that could not be exported (e.g. to ONNX), or whose export does not reproduce PyTorch."""


class UnknownDatasetError(UnknownNameError, DataError):
    """A data spec ``NAME:PATH`` whose ``NAME`` no dataset reader registered (``register_datasets`` hook)."""

    kind = "dataset"

    def __init__(self, name: str, known: Iterable[str], kind: str | None = None, hint: str = ""):
        super().__init__(name, known, kind, hint)
        close = f"; did you mean {', '.join(self.matches)}?" if self.matches else ""
        self.args = (f"unknown data spec prefix {name!r}{close} Known prefixes: {', '.join(self.known) or '(none)'}"
                     + (f". {hint}" if hint else ""),)
