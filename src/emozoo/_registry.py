"""Name -> factory registries: architectures (backbones and ensembles), fusions, distillation losses,
face detectors.

The registries are plain data: reading one never loads plugins. Items arrive through the plugin hooks
(:mod:`emozoo.plugins` runs them, see :mod:`emozoo.hookspecs`) or from a user's script through
:func:`emozoo.register_backbone` and friends; the public accessors (:func:`emozoo.create`,
:func:`emozoo.list_models`, ``emozoo.list_*``) load the plugins first. Each entry remembers its owner
(the plugin) and that plugin's distribution, so a duplicate name is refused with an error that names
both owners, and a saved model can name the package it needs.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import errors

USER_OWNER = "user"


@dataclass(frozen=True)
class Entry:
    """One registered item: its factory, the plugin that registered it and what that plugin said of it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    owner: str
    description: str = ""
    #: the distribution (pip package) of the owning plugin; None for built-ins and scripts
    distribution: str | None = None
    #: per-kind metadata, e.g. an architecture's :class:`emozoo.ArchitectureCfg` under ``"cfg"``
    meta: dict = field(default_factory=dict, compare=False)


_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


def natural_key(name: str):
    """Sort key that puts ``resnet10`` before ``resnet18`` before ``resnet101``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class Registry:
    """A mapping of names to :class:`Entry` for one kind of item."""

    def __init__(self, kind: str, unknown_error: type[errors.UnknownNameError]):
        self.kind = kind
        self._unknown_error = unknown_error
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, factory: Callable[..., Any], owner: str = USER_OWNER,
            description: str | None = None, distribution: str | None = None, **meta: Any) -> Entry:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise errors.PluginError(
                f"{owner}: invalid {self.kind} name {name!r}; use letters, digits, '_' or '-', "
                "starting with a letter ('.' separates a model's tag and '/' a source prefix)."
            )
        if not callable(factory):
            raise errors.PluginError(f"{owner}: the factory registered for {self.kind} {name!r} is not callable.")
        if name in self._entries:
            other = self._entries[name].owner
            raise errors.DuplicateNameError(
                f"{self.kind} {name!r} is registered twice: by {other!r} and by {owner!r}. "
                f"Rename one of them, or uninstall one of the plugins."
            )
        doc = description if description is not None else _first_line(factory.__doc__)
        entry = Entry(self.kind, name, factory, owner, doc, distribution, dict(meta))
        self._entries[name] = entry
        return entry

    def remove_owner(self, owner: str) -> None:
        for name in [n for n, e in self._entries.items() if e.owner == owner]:
            del self._entries[name]

    def unregister(self, name: str) -> None:
        """Remove one name (for tests and interactive sessions)."""
        self._entries.pop(name, None)

    def clear(self) -> None:
        self._entries.clear()

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise self._unknown_error(name, self._entries) from None

    def names(self, pattern: str = "*", where: Callable[[Entry], bool] | None = None) -> list[str]:
        """Registered names matching ``pattern`` (fnmatch) and ``where``, naturally sorted."""
        return sorted((n for n, e in self._entries.items() if fnmatch.fnmatch(n, pattern)
                       and (where is None or where(e))), key=natural_key)

    def entries(self) -> Iterator[Entry]:
        for name in self.names():
            yield self._entries[name]

    def owned_by(self, owner: str) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.owner == owner)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0].strip()


#: every model architecture: backbones (which can also be ensemble members) and composites such as
#: ``emoxnet``; each entry's ``meta["cfg"]`` is its :class:`emozoo.ArchitectureCfg`
ARCHITECTURES = Registry("model", errors.UnknownModelError)
FUSIONS = Registry("fusion", errors.UnknownFusionError)
DISTILL_LOSSES = Registry("distillation loss", errors.UnknownDistillLossError)
FACE_DETECTORS = Registry("face detector", errors.UnknownFaceDetectorError)
DATASETS = Registry("dataset", errors.UnknownDatasetError)

#: hook name -> the registry it fills (``register_backbones`` and ``register_architectures`` both fill
#: :data:`ARCHITECTURES`: a backbone is an architecture that can also be an ensemble member)
HOOK_REGISTRIES = {
    "register_backbones": ARCHITECTURES,
    "register_architectures": ARCHITECTURES,
    "register_fusions": FUSIONS,
    "register_distill_losses": DISTILL_LOSSES,
    "register_face_detectors": FACE_DETECTORS,
    "register_datasets": DATASETS,
}


def registries() -> list[Registry]:
    """Each registry once (two hooks fill :data:`ARCHITECTURES`)."""
    return list({id(r): r for r in HOOK_REGISTRIES.values()}.values())
