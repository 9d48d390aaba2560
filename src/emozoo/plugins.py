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
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import errors, hookspecs
from ._registry import HOOK_REGISTRIES, USER_OWNER

ENTRY_POINT_GROUP = "emozoo"
DEFAULT_PLUGINS = (
    "emozoo.builtins.backbones",
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
            _register(module, modname, PluginInfo(modname, "emozoo", _own_version(), builtin=True))
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


def _own_version() -> str:
    from . import __version__

    return __version__


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
    try:
        for hook_name, registry in HOOK_REGISTRIES.items():
            fn = getattr(obj, hook_name, None)
            if fn is None:
                continue

            def register(item_name, factory, description=None, _reg=registry, **meta):
                _reg.add(item_name, factory, owner=name, description=description, **meta)

            fn(register=register)
            info.registered[registry.kind] = registry.owned_by(name)
    except errors.DuplicateNameError:
        _rollback(obj, name)
        raise
    except Exception as exc:  # noqa: BLE001
        _rollback(obj, name)
        _fail(info, f"{type(exc).__name__}: {exc}")
        return
    _info[name] = info


def _rollback(obj: Any, name: str) -> None:
    for registry in HOOK_REGISTRIES.values():
        registry.remove_owner(name)
    pm.unregister(obj)


def register_plugin(obj: Any, name: str) -> None:
    """Register a plugin object at run time (tests, notebooks) and collect what it registers."""
    load_plugins()
    with _lock:
        _register(obj, name, PluginInfo(name, None, None))
        if _info.get(name) and _info[name].error:
            raise errors.PluginError(f"plugin {name!r}: {_info[name].error}")


def unregister_plugin(name: str) -> None:
    """Undo :func:`register_plugin`: remove the plugin and everything it registered."""
    with _lock:
        obj = pm.get_plugin(name)
        if obj is not None:
            pm.unregister(obj)
        for registry in HOOK_REGISTRIES.values():
            registry.remove_owner(name)
        _info.pop(name, None)


def plugin_info() -> list[PluginInfo]:
    """Every plugin seen: built-ins, installed plugins, and those that failed (with ``error`` set)."""
    load_plugins()
    infos = list(_info.values())
    user = {reg.kind: reg.owned_by(USER_OWNER) for reg in HOOK_REGISTRIES.values()}
    if any(user.values()):
        infos.append(PluginInfo(USER_OWNER, registered={k: v for k, v in user.items() if v}))
    return infos


def call_register_commands(cli) -> None:
    """Let plugins add CLI commands (``register_commands`` hook)."""
    load_plugins()
    pm.hook.register_commands(cli=cli)


def _reset_for_tests() -> None:  # pragma: no cover - used by the test-suite only
    global _loaded
    with _lock:
        for name, _ in list(pm.list_name_plugin()):
            pm.unregister(name=name)
        for registry in HOOK_REGISTRIES.values():
            registry._entries.clear()
        _info.clear()
        _loaded = False


