"""Name -> factory registries for backbones, fusions, distillation losses and face detectors.

Items arrive through the plugin hooks (see :mod:`emozoo.hookspecs`), or directly from a user's script
through :func:`register_backbone` and friends. Each entry remembers its owner, so a duplicate name is
refused with an error that names both.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import errors

USER_OWNER = "user"


@dataclass(frozen=True)
class Entry:
    """One registered item."""

    kind: str
    name: str
    factory: Callable[..., Any]
    owner: str
    description: str = ""
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
            description: str | None = None, **meta: Any) -> Entry:
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
        entry = Entry(self.kind, name, factory, owner, doc, dict(meta))
        self._entries[name] = entry
        return entry

    def remove_owner(self, owner: str) -> None:
        for name in [n for n, e in self._entries.items() if e.owner == owner]:
            del self._entries[name]

    def unregister(self, name: str) -> None:
        """Remove one name (for tests and interactive sessions)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> Entry:
        from .plugins import load_plugins

        load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise self._unknown_error(name, self._entries) from None

    def names(self, pattern: str = "*") -> list[str]:
        from .plugins import load_plugins

        load_plugins()
        return sorted((n for n in self._entries if fnmatch.fnmatch(n, pattern)), key=natural_key)

    def entries(self) -> Iterator[Entry]:
        for name in self.names():
            yield self._entries[name]

    def owned_by(self, owner: str) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.owner == owner)

    def __contains__(self, name: str) -> bool:
        from .plugins import load_plugins

        load_plugins()
        return name in self._entries


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0].strip()


BACKBONES = Registry("backbone", errors.UnknownBackboneError)
FUSIONS = Registry("fusion", errors.UnknownFusionError)
DISTILL_LOSSES = Registry("distillation loss", errors.UnknownDistillLossError)
FACE_DETECTORS = Registry("face detector", errors.UnknownFaceDetectorError)

#: hook name -> registry it fills
HOOK_REGISTRIES = {
    "register_backbones": BACKBONES,
    "register_fusions": FUSIONS,
    "register_distill_losses": DISTILL_LOSSES,
    "register_face_detectors": FACE_DETECTORS,
}


def _user_register(registry: Registry, name: str, factory: Callable | None, description: str | None):
    from .plugins import load_plugins

    load_plugins()  # built-ins first, so a clash with one is reported now rather than later

    def add(f):
        registry.add(name, f, owner=USER_OWNER, description=description)
        return f

    return add if factory is None else add(factory)


def register_backbone(name: str, factory: Callable | None = None, *, description: str | None = None):
    """Register a backbone from your own code; usable at once as a model or an EmoXNet member.

    Either call it, ``register_backbone("tiny", make_tiny)``, or use it as a decorator::

        @emozoo.register_backbone("tiny")
        def make_tiny(num_classes=8, in_chans=1, **kwargs):
            return TinyNet(num_classes, in_chans)

    The factory receives ``num_classes`` and ``in_chans`` and returns an ``nn.Module`` that follows
    the backbone contract (see :class:`emozoo.BackboneBase`), or any module mapping images to logits.
    """
    return _user_register(BACKBONES, name, factory, description)


def register_fusion(name: str, factory: Callable | None = None, *, description: str | None = None):
    """Register a fusion strategy from your own code (call or decorator, as :func:`register_backbone`)."""
    return _user_register(FUSIONS, name, factory, description)


def register_distill_loss(name: str, factory: Callable | None = None, *, description: str | None = None):
    """Register a distillation loss from your own code (call or decorator, as :func:`register_backbone`)."""
    return _user_register(DISTILL_LOSSES, name, factory, description)


def register_face_detector(name: str, factory: Callable | None = None, *, description: str | None = None):
    """Register a face detector from your own code (call or decorator, as :func:`register_backbone`).

    ``factory(**options)`` returns an object with ``detect(image) -> list[emozoo.Face]`` (see the
    ``register_face_detectors`` hook); ``emozoo.predict(..., detector=name)`` then uses it.
    """
    return _user_register(FACE_DETECTORS, name, factory, description)


DATASETS = Registry("dataset", errors.UnknownDatasetError)
HOOK_REGISTRIES["register_datasets"] = DATASETS
