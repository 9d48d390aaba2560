"""The HTTP API: ``POST /predict``, ``GET /models``, ``GET /health`` (OpenAPI docs at ``/docs``), and a web
page at ``/`` (``static/index.html``: a photo or the webcam, its faces boxed and labelled through ``/predict``).

Images are decoded in memory (:func:`emozoo.inference.load_image` on the request's bytes) and never
written to disk; bad input is answered with a JSON ``{"detail": "..."}`` 4xx naming the problem.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import threading
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException, MultiPartParser

from ..errors import ConfigError, DataError

#: the largest request body accepted (bytes; env EMOZOO_SERVE_MAX_BYTES)
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
#: the most images one JSON request may carry (env EMOZOO_SERVE_MAX_IMAGES)
DEFAULT_MAX_IMAGES = 64
#: environment variables that carry the settings to each uvicorn worker (:func:`app_from_env`)
#: the paths open without the API key: the health check, and the web page, which holds no data (it sends
#: the key the user types into it as X-API-Key on each /predict)
OPEN_PATHS = frozenset({"/health", "/"})
ENV = {"model": "EMOZOO_SERVE_MODEL", "detector": "EMOZOO_SERVE_DETECTOR", "api_key": "EMOZOO_API_KEY",
       "max_bytes": "EMOZOO_SERVE_MAX_BYTES", "max_images": "EMOZOO_SERVE_MAX_IMAGES"}

_BODY = {"content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}},
                                       "required": ["file"]}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "description": "a base64-encoded image"}}}}},
}, "required": True}


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return n


def create_app(model: Any = "emoxnetlite", detector: Any = "auto", api_key: str | None = None,
               max_bytes: int | None = None, max_images: int | None = None, device: str | None = None) -> FastAPI:
    """A FastAPI app serving ``model`` (a name, or a model from :func:`emozoo.create`) with ``detector``.

    The model loads once, here. With ``api_key``, every endpoint but ``/health`` and the page at ``/``
    (:data:`OPEN_PATHS`) requires the header ``X-API-Key``. ``max_bytes`` (default: env
    ``EMOZOO_SERVE_MAX_BYTES``, else 20 MB) limits a request's body and ``max_images`` (default: env
    ``EMOZOO_SERVE_MAX_IMAGES``, else 64) a JSON request's images (413).
    """
    from .._version import __version__
    from ..calibration import temperature
    from ..inference import Predictor, load_image

    max_bytes = max_bytes or _env_int(ENV["max_bytes"], DEFAULT_MAX_BYTES)
    max_images = max_images or _env_int(ENV["max_images"], DEFAULT_MAX_IMAGES)
    predictor = Predictor(model, detector, device=device)
    lock = threading.Lock()  # one request at a time on the model (min_confidence is set per request)
    app = FastAPI(title="emozoo", version=__version__,
                  description="Facial expression recognition: the faces in an image and their expressions.")
    app.state.predictor = predictor
    page = resources.files(__package__).joinpath("static", "index.html").read_text(encoding="utf-8")

    if api_key:
        @app.middleware("http")
        async def require_key(request: Request, call_next):
            """Refuse a request without the key (401), but for OPEN_PATHS: /health, and / whose static page
            holds no data and asks the user for the key it then sends with each request."""
            if request.url.path not in OPEN_PATHS and not secrets.compare_digest(
                    request.headers.get("x-api-key", "").encode(), api_key.encode()):
                return JSONResponse({"detail": "missing or wrong API key: send it in the X-API-Key header"}, 401)
            return await call_next(request)

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def index() -> HTMLResponse:
        """The web page: pick a photo or start the webcam; it posts each to /predict and draws the faces."""
        return HTMLResponse(page)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Whether the server is up, and the model it serves."""
        return {"status": "ok", "model": predictor.model_name}

    @app.get("/models")
    def models() -> dict[str, Any]:
        """The models with published weights, and the one loaded (its labels and calibration temperature)."""
        from .._builder import list_models

        return {"models": list_models(pretrained=True),
                "loaded": {"name": predictor.model_name, "labels": list(predictor.labels),
                           "temperature": temperature(predictor.model), "detector": predictor.detector_name.strip("'")}}

    @app.post("/predict", openapi_extra={"requestBody": _BODY})
    async def predict(request: Request, min_confidence: float = 0.0) -> dict[str, Any]:
        """The faces of one image (a multipart upload in field ``file``, or a raw ``image/*`` body) or of a
        JSON ``{"images": [base64, ...]}``, as ``emozoo predict --json`` gives them. A face whose top
        calibrated probability is below ``min_confidence`` is labelled ``uncertain``."""
        try:
            min_confidence_ = _check(min_confidence)
            images = [(name, load_image(data, name)) for name, data in await _read_images(request, max_bytes, max_images)]
        except DataError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"predictions": await run_in_threadpool(_predict, predictor, lock, images, min_confidence_)}

    return app


def app_from_env() -> FastAPI:
    """:func:`create_app` with the settings in the environment (``ENV``): the factory each uvicorn worker calls."""
    return create_app(os.environ.get(ENV["model"], "emoxnetlite"), os.environ.get(ENV["detector"], "auto"),
                      os.environ.get(ENV["api_key"]) or None)


def _check(min_confidence: float) -> float:
    from ..inference.engine import check_min_confidence

    try:
        return check_min_confidence(min_confidence)
    except ConfigError as exc:
        raise DataError(str(exc)) from None


def _predict(predictor, lock, images, min_confidence) -> list[dict[str, Any]]:
    with lock:
        predictor.min_confidence = min_confidence
        preds = list(predictor([image for _, image in images], progress=False))
    for (name, _), pred in zip(images, preds):
        pred.source = name
        if pred.error:
            pred.error = f"{name}: {pred.error.partition(': ')[2] or pred.error}"
    return [p.as_dict() for p in preds]


async def _body(request: Request, max_bytes: int) -> bytes:
    """The request's body, refused with 413 as soon as it passes ``max_bytes`` (and 400 when empty)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"request body of {int(declared):,} bytes is over the limit of {max_bytes:,} bytes "
                                 f"({ENV['max_bytes']})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, f"request body is over the limit of {max_bytes:,} bytes ({ENV['max_bytes']})")
        chunks.append(chunk)
    if not size:
        raise HTTPException(400, "empty request body: send an image (multipart field 'file', a raw image/* body, "
                                 "or JSON {\"images\": [base64, ...]})")
    return b"".join(chunks)


async def _read_images(request: Request, max_bytes: int, max_images: int) -> list[tuple[str, bytes]]:
    """``(name, encoded image)`` for each image of the request."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/json") and not kind.startswith("image/"):
        raise HTTPException(415, f"unsupported content type {kind or '(none)'!r}: send multipart/form-data (field "
                                 "'file'), a raw image/* body, or application/json {\"images\": [base64, ...]}")
    body = await _body(request, max_bytes)
    if kind.startswith("image/"):
        return [("<upload>", body)]
    if kind == "multipart/form-data":
        return [await _multipart(request, body, max_bytes)]
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"malformed JSON: {exc}") from None
    images = payload.get("images") if isinstance(payload, dict) else None
    if not isinstance(images, list) or not images or not all(isinstance(s, str) for s in images):
        raise HTTPException(400, "JSON body must be {\"images\": [\"<base64 image>\", ...]} with at least one image")
    if len(images) > max_images:
        raise HTTPException(413, f"{len(images):,} images in one request is over the limit of {max_images} "
                                 f"({ENV['max_images']}): send them in several requests")
    out = []
    for i, text in enumerate(images):
        if text.startswith("data:") and "," in text:
            text = text.partition(",")[2]  # a data URL, as a browser's canvas gives
        try:
            out.append((f"images[{i}]", base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError) as exc:
            raise HTTPException(400, f"images[{i}]: not valid base64 ({exc})") from None
    return out


async def _multipart(request: Request, body: bytes, max_bytes: int) -> tuple[str, bytes]:
    """The field ``file`` of a multipart body, parsed in memory (no spooling to a temporary file)."""
    async def stream():
        yield body

    parser = type("InMemoryParser", (MultiPartParser,), {"spool_max_size": max_bytes + 1})
    try:
        form = await parser(request.headers, stream(), max_files=1, max_fields=16).parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"malformed multipart body: {exc.message}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPException(400, "multipart body has no file in field 'file': upload the image as -F file=@photo.jpg")
    try:
        return upload.filename or "<upload>", await upload.read()
    finally:
        await upload.close()
