"""Matplotlib for the ``--plot`` options, drawn off-screen (Agg), or a clear error naming the extra to install."""
from __future__ import annotations

from typing import Any

from .errors import EmozooError


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EmozooError("plots need matplotlib: pip install 'emozoo[plot]'") from None
    return plt
