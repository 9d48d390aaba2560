"""A local Hugging Face Hub for the tests: olah serving git repos, and a proxy in front of it that fails.

`olah <https://pypi.org/project/olah/>`_ serves the git repos under ``mirrors-path`` (laid out as
``models/ORG/NAME``) over the Hub's download API (``/api/models/...``, ``/ORG/NAME/resolve/...``); its
``offline`` setting keeps it from ever contacting huggingface.co. Both servers bind 127.0.0.1 only.
"""
from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GIT = ["git", "-c", "user.name=emozoo tests", "-c", "user.email=tests@emozoo.invalid", "-c", "commit.gpgsign=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OlahHub:
    """olah on 127.0.0.1 serving the git repos under ``root/mirrors/models``; ``publish`` commits to them."""

    def __init__(self, root: Path):
        self.root = root
        self.mirrors = root / "mirrors"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> OlahHub:
        self.mirrors.mkdir(parents=True, exist_ok=True)
        config = self.root / "olah.toml"
        config.write_text("\n".join([
            "[basic]", 'host = "127.0.0.1"', f"port = {self.port}",
            f"repos-path = {json.dumps(str(self.root / 'cache'))}",
            f"mirrors-path = [{json.dumps(str(self.mirrors))}]",
            "metadata-cache-ttl = 0",
            "[accessibility]", "offline = true", "",
        ]))
        log = self.root / "olah.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "olah.server", "--config", str(config)],
                                         cwd=self.root, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"olah exited with {self.proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"olah did not listen on port {self.port} within {timeout} s:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def publish(self, repo_id: str, folder: Path, message: str = "upload") -> str:
        """Commit the files of ``folder`` as the whole content of repo ``repo_id``; return the commit sha."""
        repo = self.mirrors / "models" / repo_id
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True)
            subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=repo, check=True)
        for old in repo.iterdir():
            if old.name != ".git":
                old.unlink()
        for new in Path(folder).iterdir():
            if new.is_file():
                shutil.copyfile(new, repo / new.name)
        subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
        subprocess.run([*GIT, "commit", "-q", "-m", message], cwd=repo, check=True)
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                              text=True).stdout.strip()


class FaultyProxy:
    """An HTTP proxy on 127.0.0.1 in front of olah that fails the way a Hub server can.

    ``mode``: ``"error"`` answers every request with HTTP 500; ``"stall"`` accepts requests and never
    answers (a handler gives up after ``stall_max`` seconds, or when the proxy stops); ``"cut"``
    forwards everything but sends only the first half of ``model.safetensors``, drops the connection
    and dies (stops listening), so the client's own retries find no server; ``"html"`` forwards everything
    but answers ``config.json`` with 200 and an HTML page (a captive portal or a misconfigured proxy);
    ``"html-api"`` does the same to the API calls (``/api/...``).
    """

    HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in to the network</title></head><body>Log in</body></html>\n"

    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}

    def __init__(self, upstream_port: int, mode: str, stall_max: float = 20):
        assert mode in ("error", "stall", "cut", "html", "html-api")
        self.upstream_port, self.mode, self.stall_max = upstream_port, mode, stall_max
        self.cut = False
        self._released = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                proxy._handle(self)

            do_HEAD = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._released.set()
        if not self.cut:
            self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        if self.mode == "error":
            req.send_response(500)
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        if self.mode == "stall":
            self._released.wait(self.stall_max)
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=10)
        try:
            headers = {k: v for k, v in req.headers.items() if k.lower() not in ("host", "connection")}
            upstream.request(req.command, req.path, headers=headers)
            resp = upstream.getresponse()
            body = resp.read()
        finally:
            upstream.close()
        length = resp.getheader("Content-Length") if req.command == "HEAD" else str(len(body))
        if resp.status == 200 and (self.mode == "html" and req.path.split("?")[0].endswith("/config.json")
                                   or self.mode == "html-api" and req.path.startswith("/api/")):
            body, length = self.HTML, str(len(self.HTML))
        req.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in self.HOP_BY_HOP:
                req.send_header(key, value)
        req.send_header("Content-Length", length)
        req.end_headers()
        if self.mode == "cut" and req.command == "GET" and req.path.endswith("/model.safetensors"):
            req.wfile.write(body[:len(body) // 2])
            req.wfile.flush()
            self.cut = True
            req.connection.shutdown(socket.SHUT_RDWR)
            self.server.shutdown()  # the server dies: no more connections are accepted
            self.server.server_close()
        elif req.command == "GET":
            req.wfile.write(body)
