"""The serve load benchmark runs against a real server and writes a well-formed report; workers share the cores.

No timing is asserted: the numbers live in ``benchmarks/results/serve_load.md``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from emozoo.cli.serve import worker_threads  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_workers_share_the_cores():
    assert worker_threads(1, cores=2) == 2
    assert worker_threads(2, cores=2) == 1
    assert worker_threads(4, cores=2) == 1  # never zero
    assert worker_threads(2, cores=16) == 8


def test_the_load_benchmark_measures_a_real_server(tmp_path):
    out = tmp_path / "serve_load.md"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--workers", "1", "--clients", "1",
                          "2", "--seconds", "1", "--memory-requests", "150", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert [(r["workers"], r["clients"]) for r in report["results"]] == [(1, 1), (1, 2)]
    for row in report["results"]:
        assert row["errors"] == 0 and row["requests"] >= 1 and row["p50_ms"] <= row["p99_ms"]
    memory = report["memory"]
    assert memory["errors"] == 0 and memory["rss_mb_after_100"] > 50 and memory["rss_mb_after_150"] > 50
    assert "| 1 | 2 |" in out.read_text()
