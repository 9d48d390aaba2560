"""``emozoo serve``: the HTTP API (FastAPI on uvicorn; the ``serve`` extra)."""
from __future__ import annotations

import importlib.util
import os

import click

MISSING_EXTRA = "emozoo serve needs the serve extra: pip install 'emozoo[serve]'"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def host_warning(host: str) -> str | None:
    """The warning to print when ``host`` is reachable from other machines (None for localhost)."""
    if host in LOCAL_HOSTS:
        return None
    return (f"Warning: serving on {host} makes the API reachable from other machines; "
            "use --api-key (or EMOZOO_API_KEY) and a trusted network")


def worker_threads(workers: int, cores: int | None = None) -> int:
    """Torch threads per worker process: the cores shared out (at least 1); ``OMP_NUM_THREADS`` overrides it."""
    return max(1, (cores or os.cpu_count() or 1) // workers)


def has_serve_extra() -> bool:
    """Whether fastapi, uvicorn and python-multipart can be imported."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return False
    # python-multipart is `python_multipart` from 0.0.13 (its old name `multipart` warns), `multipart` before
    return any(importlib.util.find_spec(name) for name in ("python_multipart", "multipart"))


@click.command("serve")
@click.option("--model", default="emoxnetlite", show_default=True,
              help="Model: a name with published weights (arch or arch.tag), local-dir:PATH or hf-hub:ORG/NAME.")
@click.option("--detector", default="auto", show_default=True,
              help="Face detector: auto, haar, full (uploads are face crops), or one a plugin registered.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (anything but localhost warns).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes; each loads the model once and gets cores/N torch threads (OMP_NUM_THREADS overrides).")
@click.option("--api-key", envvar="EMOZOO_API_KEY", default=None,
              help="Require this key in the X-API-Key header on every endpoint but /health and the web page at / "
                   "[env: EMOZOO_API_KEY].")
@click.pass_context
def serve_cmd(ctx, model, detector, host, port, workers, api_key):
    """Serve the model over HTTP: POST /predict, GET /models, GET /health, OpenAPI docs at /docs, and a web
    page at / (a photo or the webcam, its faces boxed and labelled).

    Request limits come from EMOZOO_SERVE_MAX_BYTES (default 20 MB) and EMOZOO_SERVE_MAX_IMAGES (default 64).
    """
    if not has_serve_extra():
        click.echo(MISSING_EXTRA, err=True)
        ctx.exit(1)
    import uvicorn

    from ..serve import app as serve_app

    warning = host_warning(host)
    if warning:
        click.echo(warning, err=True)
    if workers == 1:
        uvicorn.run(serve_app.create_app(model, detector, api_key), host=host, port=port)
        return
    # each worker process builds its own app (and loads the model once) from the environment, and gets
    # its share of the cores: N workers of 2 threads each on 2 cores would fight over them
    os.environ.setdefault("OMP_NUM_THREADS", str(worker_threads(workers)))
    os.environ[serve_app.ENV["model"]] = model
    os.environ[serve_app.ENV["detector"]] = detector
    if api_key:
        os.environ[serve_app.ENV["api_key"]] = api_key
    uvicorn.run("emozoo.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers)


COMMANDS = (serve_cmd,)
