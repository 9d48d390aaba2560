"""Matplotlib for the ``--plot`` options, drawn off-screen (Agg), or a clear error naming the extra to install."""
from __future__ import annotations

from pathlib import Path
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


def check_plot(path: str | Path) -> None:
    """Before any work: a one-line :class:`emozoo.EmozooError` when ``--plot`` cannot be drawn (no matplotlib, or no
    folder for the file), so that a long run does not end in a traceback."""
    pyplot()
    if not Path(path).parent.is_dir():
        raise EmozooError(f"--plot {path}: the folder {Path(path).parent} does not exist; create it or write elsewhere")


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Lay ``fig`` out, write it to ``path`` (its folder created if needed) and close it; returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
