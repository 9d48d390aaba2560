"""Shared by the benchmark scripts: make the BlazeFace plugin available even when it is not pip-installed."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ensure_blazeface() -> None:
    """Register ``plugins/emozoo-blazeface`` from the source tree unless it is installed; say so if it can't load."""
    import emozoo
    from emozoo.plugins import register_plugin

    if "blazeface" in emozoo.list_detectors():
        return
    sys.path.insert(0, str(ROOT / "plugins" / "emozoo-blazeface" / "src"))
    try:
        import emozoo_blazeface

        register_plugin(emozoo_blazeface, "blazeface")
    except ImportError as exc:
        print(f"blazeface left out: {exc}", file=sys.stderr)
