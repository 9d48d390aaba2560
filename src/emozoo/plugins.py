"""The plugin manager: discovers plugins through entry points and fills the registries.

Built-ins are plugins too (:data:`DEFAULT_PLUGINS`) and go through exactly the same hooks.
Loading is lazy and happens once (:func:`load_plugins`); importing emozoo loads nothing.

Environment:

- ``EMOZOO_LOAD_PLUGINS``: comma-separated entry-point names of the installed plugins to load;
  set but empty loads none. Built-ins always load.
"""
from __future__ import annotations

import importlib
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import errors, hookspecs
from ._models import ArchitectureCfg, is_backbone
from ._registry import (
    ARCHITECTURES,
    DATASETS,
    DISTILL_LOSSES,
    FUSIONS,
    HOOK_REGISTRIES,
    USER_OWNER,
    Registry,
    registries,
)
from ._version import __version__

ENTRY_POINT_GROUP = "emozoo"
DEFAULT_PLUGINS = (
    "emozoo.builtins.backbones",
    "emozoo.builtins.emoxnet",
    "emozoo.builtins.emoxnetlite",
    "emozoo.builtins.fusion",
    "emozoo.builtins.distill",
    "emozoo.builtins.detectors",
    "emozoo.builtins.datasets",
)

pm = pluggy.PluginManager("emozoo")
pm.add_hookspecs(hookspecs)


@dataclass
class PluginInfo:
    """What ``emozoo plugins`` reports for one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


_lock = threading.RLock()
_loaded = False
_info: dict[str, PluginInfo] = {}
_errors: dict[str, Exception] = {}  # the exception that made each failed plugin skip (for register_plugin)


def load_plugins() -> None:
    """Load the built-ins and every installed ``emozoo`` plugin, once.

    A plugin that fails to import, or whose hook raises, is reported with a warning naming it and its
    distribution, listed with its error by :func:`plugin_info`, and skipped; the others still load.
    """
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        _loaded = True  # set first: hooks may call back into the registries
        for modname in DEFAULT_PLUGINS:
            module = importlib.import_module(modname)
            _register(module, modname, PluginInfo(modname, "emozoo", __version__, builtin=True))
        for ep in _selected_entry_points():
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, dist.name if dist else None, dist.version if dist else None)
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure of a third-party plugin
                _fail(info, f"failed to import {ep.value!r}: {type(exc).__name__}: {exc}")
                continue
            _register(obj, ep.name, info)


def _selected_entry_points():
    eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    wanted = os.environ.get("EMOZOO_LOAD_PLUGINS")
    if wanted is None:
        return eps
    names = {n.strip() for n in wanted.split(",") if n.strip()}
    return [ep for ep in eps if ep.name in names]


def _fail(info: PluginInfo, message: str) -> None:
    info.error = message
    _info[info.name] = info
    where = f" (distribution {info.distribution} {info.version})" if info.distribution else ""
    warnings.warn(f"emozoo plugin {info.name!r}{where} skipped: {message}", RuntimeWarning, stacklevel=3)


def _register(obj: Any, name: str, info: PluginInfo) -> None:
    """Register one plugin with pluggy and run its ``register_*`` hooks, rolling back on failure."""
    try:
        pm.register(obj, name=name)
        pm.check_pending()
    except Exception as exc:  # noqa: BLE001 - pluggy validation errors, e.g. a misspelled hookimpl
        if pm.is_registered(obj):
            pm.unregister(obj)
        _fail(info, f"invalid plugin: {exc}")
        return
    info.hooks = sorted(h.name for h in (pm.get_hookcallers(obj) or []))
    dist = None if info.builtin else info.distribution
    try:
        for hook_name, registry in HOOK_REGISTRIES.items():
            fn = getattr(obj, hook_name, None)
            if fn is None:
                continue
            added: list[str] = []
            fn(register=_register_callback(hook_name, registry, name, dist, added))
            if added:
                info.registered[_HOOK_KINDS.get(hook_name, registry.kind)] = sorted(added)
    except Exception as exc:  # noqa: BLE001 - a clash or any failure skips this plugin alone
        _rollback(obj, name)
        message = str(exc) if isinstance(exc, errors.DuplicateNameError) else f"{type(exc).__name__}: {exc}"
        _fail(info, message)
        _errors[name] = exc
        return
    _info[name] = info


#: how ``emozoo plugins`` names what each hook registered, where that is not the registry's kind
_HOOK_KINDS = {"register_backbones": "backbone", "register_architectures": "architecture"}


def _register_callback(hook_name: str, registry: Registry, owner: str, dist: str | None, added: list[str]):
    """The ``register`` callback a plugin's ``hook_name`` receives."""

    def register(item_name, factory, description=None, **meta):
        if registry is ARCHITECTURES:
            meta = {"cfg": ArchitectureCfg.from_hook(item_name, owner, hook_name == "register_backbones", **meta)}
        registry.add(item_name, factory, owner=owner, description=description, distribution=dist, **meta)
        added.append(item_name)

    return register


def _rollback(obj: Any, name: str) -> None:
    for registry in registries():
        registry.remove_owner(name)
    pm.unregister(obj)


def register_plugin(obj: Any, name: str, distribution: str | None = None) -> None:
    """Register a plugin object at run time (tests, notebooks) and collect what it registers; ``distribution``
    names the pip package it stands for (recorded in the ``requires`` of models built from it)."""
    load_plugins()
    with _lock:
        _errors.pop(name, None)
        _register(obj, name, PluginInfo(name, distribution, None))
        if _info.get(name) and _info[name].error:
            message, exc = _info[name].error, _errors.pop(name, None)
            if isinstance(exc, errors.DuplicateNameError):
                raise errors.DuplicateNameError(message)
            raise errors.PluginError(f"plugin {name!r}: {message}")


def unregister_plugin(name: str) -> None:
    """Undo :func:`register_plugin`: remove the plugin and everything it registered."""
    with _lock:
        obj = pm.get_plugin(name)
        if obj is not None:
            pm.unregister(obj)
        for registry in registries():
            registry.remove_owner(name)
        _info.pop(name, None)


def plugin_info() -> list[PluginInfo]:
    """Every plugin seen: built-ins, installed plugins, and those that failed (with ``error`` set)."""
    load_plugins()
    infos = list(_info.values())
    user = {reg.kind: reg.owned_by(USER_OWNER) for reg in registries()}
    if any(user.values()):
        infos.append(PluginInfo(USER_OWNER, registered={k: v for k, v in user.items() if v}))
    return infos


def call_register_commands(cli) -> None:
    """Let plugins add CLI commands (``register_commands`` hook), one plugin at a time.

    A plugin whose hook raises is named in a warning and its commands are dropped; a command whose name is
    already taken (a built-in such as ``predict``, or an earlier plugin's) is refused with a warning naming
    the plugin, and the existing command stays. The other plugins' commands are added either way.
    """
    load_plugins()
    for impl in reversed(pm.hook.register_commands.get_hookimpls()):  # pluggy's call order
        before = dict(cli.commands)
        try:
            impl.function(cli=cli)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the whole CLI down
            cli.commands.clear()
            cli.commands.update(before)
            warnings.warn(f"emozoo plugin {impl.plugin_name!r}: register_commands failed, its commands are "
                          f"skipped ({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=2)
            continue
        for command_name, command in before.items():
            if cli.commands.get(command_name) is not command:
                cli.commands[command_name] = command
                warnings.warn(f"emozoo plugin {impl.plugin_name!r}: command {command_name!r} is already taken and "
                              "cannot be replaced; the plugin's command was refused (give it another name)",
                              RuntimeWarning, stacklevel=2)


def _reset_for_tests() -> None:  # pragma: no cover - used by the test-suite only
    global _loaded
    with _lock:
        for name, _ in list(pm.list_name_plugin()):
            pm.unregister(name=name)
        for registry in registries():
            registry.clear()
        _info.clear()
        _errors.clear()
        _loaded = False


# --------------------------------------------------------------------- the registries as users see them
def _user_register(registry: Registry, name: str, factory: Callable | None, description: str | None, **meta):
    load_plugins()  # built-ins first, so a clash with one is reported now rather than later

    def add(f):
        registry.add(name, f, owner=USER_OWNER, description=description, **meta)
        return f

    return add if factory is None else add(factory)


def register_backbone(name: str, factory: Callable | None = None, *, description: str | None = None,
                      **cfg: Any):
    """Register a backbone from your own code; usable at once as a model or an EmoXNet member.

    Either call it, ``register_backbone("tiny", make_tiny)``, or use it as a decorator::

        @emozoo.register_backbone("tiny")
        def make_tiny(num_classes=8, in_chans=1, **kwargs):
            return TinyNet(num_classes, in_chans)

    The factory receives ``num_classes`` and ``in_chans`` and returns an ``nn.Module`` that follows
    the backbone contract (see :class:`emozoo.BackboneBase`), or any module mapping images to logits.
    Further keyword arguments are :class:`emozoo.ArchitectureCfg` fields (``input=``, ``pretrained=``, ...).
    """
    return _user_register(ARCHITECTURES, name, factory, description,
                          cfg=ArchitectureCfg.from_hook(name, USER_OWNER, True, **cfg))


def register_fusion(name: str, factory: Callable | None = None, *, description: str | None = None):
    """Register a fusion strategy from your own code (call or decorator, as :func:`register_backbone`)."""
    return _user_register(FUSIONS, name, factory, description)


def register_distill_loss(name: str, factory: Callable | None = None, *, description: str | None = None):
    """Register a distillation loss from your own code (call or decorator, as :func:`register_backbone`)."""
    return _user_register(DISTILL_LOSSES, name, factory, description)


def list_backbones(pattern: str = "*") -> list[str]:
    """Names of the registered backbones (the architectures that can be EmoXNet members), fnmatch-filtered."""
    load_plugins()
    return ARCHITECTURES.names(pattern, where=is_backbone)


def list_fusions(pattern: str = "*") -> list[str]:
    """Names of the registered fusion strategies, fnmatch-filtered."""
    load_plugins()
    return FUSIONS.names(pattern)


def list_distill_losses(pattern: str = "*") -> list[str]:
    """Names of the registered distillation losses, fnmatch-filtered."""
    load_plugins()
    return DISTILL_LOSSES.names(pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the registered dataset readers (the ``NAME`` of ``--data NAME:PATH``), fnmatch-filtered."""
    load_plugins()
    return DATASETS.names(pattern)
