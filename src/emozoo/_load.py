"""A stand-in for :func:`emozoo.create` taking folder paths, until ``create()`` itself does.

TODO: create() takes paths. ``_builder.create`` is being changed to accept a folder path directly (a
``str`` naming an existing folder or holding a path separator, or a :class:`pathlib.Path`); once it
does, every ``from .._load import create`` becomes ``from .._builder import create`` and this module goes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ._builder import create as _create, model_spec


def create(spec: str | Path, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """:func:`emozoo.create` with a bare folder path read as ``local-dir:PATH``."""  # TODO: create() takes paths
    return _create(model_spec(str(spec)), pretrained=pretrained, **kwargs)
