"""Where ``emozoo predict`` streams its results: ``--json`` as a list written one element per line, ``--jsonl FILE``,
and what ``--resume`` finds already written in an output file."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from ..errors import DataError


def frame_key(source, frame) -> tuple[str, str]:
    """What identifies a written result: its source and frame number (``""`` for an image)."""
    return str(source), "" if frame in (None, "") else str(int(frame))


class JsonList:
    """``--json``: a JSON list on standard output, written as results come, one element per line (a run that is
    killed leaves every finished frame written; only the closing ``]`` is missing)."""

    def __init__(self, file=None):
        self.file, self.count = file or sys.stdout, 0
        self.file.write("[")
        self.file.flush()

    def write(self, record: dict) -> None:
        self.file.write(("," if self.count else "") + "\n" + json.dumps(record, default=str))
        self.file.flush()
        self.count += 1

    def close(self) -> None:
        self.file.write("\n]\n" if self.count else "]\n")
        self.file.flush()


class JsonLines:
    """``--jsonl FILE``: one JSON object per image or video frame and line, flushed as it goes (``-``: standard
    output); with ``done`` (from :func:`resume`), frames already written are skipped."""

    def __init__(self, file, done: set | None = None):
        self.file, self.done = file, done or set()

    def write(self, pred) -> None:
        if frame_key(pred.source, pred.frame) in self.done:
            return
        self.file.write(json.dumps(pred.as_dict(), default=str) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not sys.stdout:
            self.file.close()


def resume(path: str, option: str, header: list[str] | None = None):
    """``(file opened for appending, keys already written)`` of an output file a killed run left (``header``: a CSV's
    columns, which must match). An unfinished last line is dropped, and so are the rows of the last frame written (it
    may lack faces), so that the run writes them again. A missing or empty file is started anew (keys empty)."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return None, set()
    data = p.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # the text after the last newline is unfinished (or empty)
    keys, starts, offset = [], [], 0
    for i, line in enumerate(complete):
        starts.append(offset)
        offset += len(line) + 1
        text = line.decode("utf-8", "replace")
        if header is not None:
            row = next(csv.reader([text]), [])
            if i == 0:
                if row != header:
                    raise DataError(f"{option} {path}: --resume needs a file this command wrote with the same model and "
                                    "options (its columns differ); write to a new file")
                keys.append(None)
                continue
            keys.append(frame_key(row[0], row[1]) if len(row) > 1 else None)
        else:
            try:
                record = json.loads(text)
                keys.append(frame_key(record["source"], record.get("frame")))
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{option} {path}: line {i + 1} is not a JSON object with source and frame; --resume "
                                "needs a file this command wrote") from None
    end = len(complete)
    last = keys[-1] if keys else None
    while end > 0 and last is not None and keys[end - 1] == last:
        end -= 1
    cut = starts[end] if end < len(starts) else offset
    f = open(p, "r+b")  # noqa: SIM115 - the writer closes it
    f.truncate(cut)
    f.close()
    return open(p, "a", newline="" if header else None), {k for k in keys[:end] if k is not None}  # noqa: SIM115
