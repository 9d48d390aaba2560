"""One run per output folder: :func:`lock_output` holds an OS lock on ``OUT/.emozoo.lock`` while a run writes there."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .. import errors

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".emozoo.lock"


@contextlib.contextmanager
def lock_output(out_dir: str | Path) -> Iterator[Path]:
    """Hold ``out_dir`` (created if needed) for this process; a second run on it gets a :class:`ConfigError` naming
    the process that holds it.

    The lock is ``flock`` on a file that records the holder's pid: the OS releases it when the holder dies, so a
    killed run never blocks the next one. On the way out the lock file is removed, and when the run failed, so
    are the folders it created and left empty (``out_dir`` itself, its ``checkpoint/``).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise errors.ConfigError(f"--out {out_dir} is a file; give a folder")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_NAME
    fd = _acquire(path, out_dir) if fcntl is not None else None
    ok = False
    try:
        yield out_dir
        ok = True
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)  # before the lock goes: a run waiting on this file tries again on a new one
            os.close(fd)
        if not ok:
            _remove_if_empty(out_dir / "checkpoint")
            if created:
                _remove_if_empty(out_dir)


def _acquire(path: Path, out_dir: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise errors.ConfigError(f"{out_dir} is in use by another emozoo run (process {holder}); wait for it to "
                                     f"finish or pick another --out") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed this file as we opened it: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
