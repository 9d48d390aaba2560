"""``emozoo serve``: an HTTP API (FastAPI) around :class:`emozoo.Predictor`, and a web page at ``/`` that uses it;
needs the ``serve`` extra."""
from __future__ import annotations

from .app import DEFAULT_MAX_BYTES, DEFAULT_MAX_IMAGES, app_from_env, create_app

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_IMAGES", "app_from_env", "create_app"]
