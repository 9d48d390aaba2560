"""``emozoo serve``: the HTTP API with FastAPI's test client, its answers to bad input, the API key, the
command's checks, and one real uvicorn process."""
from __future__ import annotations

import base64
import builtins
import io
import json
import os
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from serve_process import serving  # noqa: E402

from emozoo.cli import main  # noqa: E402
from emozoo.cli.serve import MISSING_EXTRA, has_serve_extra, host_warning  # noqa: E402
from emozoo.serve import create_app  # noqa: E402

if not has_serve_extra():
    pytest.skip("needs the serve extra: pip install 'emozoo[serve]'", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
FACE = (ROOT / "examples" / "face.png").read_bytes()
PHOTO = (ROOT / "examples" / "astronaut.jpg").read_bytes()
LABELS = {"neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"}


@pytest.fixture(scope="module")
def client():
    """The small model on face crops (detector full), with small limits to test them cheaply."""
    with TestClient(create_app("emoxnetlite", "full", max_bytes=300_000, max_images=4)) as c:
        yield c


def _check_one_face(answer: dict, n: int = 1) -> list[dict]:
    preds = answer["predictions"]
    assert len(preds) == n
    for p in preds:
        assert p["error"] is None and len(p["faces"]) == 1
        face = p["faces"][0]
        assert set(face["scores"]) == LABELS and abs(sum(face["scores"].values()) - 1) < 1e-2
        assert face["label"] == max(face["scores"], key=face["scores"].get)
        assert {"margin", "uncertain", "members", "agreement", "box"} <= set(face)
    return preds


def test_predict_multipart_raw_and_base64_agree(client):
    a = client.post("/predict", files={"file": ("face.png", FACE, "image/png")})
    assert a.status_code == 200, a.text
    [pa] = _check_one_face(a.json())
    assert pa["source"] == "face.png" and pa["size"] == [200, 200]
    b = client.post("/predict", content=FACE, headers={"content-type": "image/png"})
    assert b.status_code == 200, b.text
    c = client.post("/predict", json={"images": [base64.b64encode(FACE).decode(),
                                                 "data:image/png;base64," + base64.b64encode(FACE).decode()]})
    assert c.status_code == 200, c.text
    preds = [pa] + _check_one_face(b.json()) + _check_one_face(c.json(), 2)
    assert len({json.dumps(p["faces"], sort_keys=True) for p in preds}) == 1  # the same image, the same answer
    assert [p["source"] for p in c.json()["predictions"]] == ["images[0]", "images[1]"]


def test_min_confidence_labels_uncertain(client):
    plain = client.post("/predict", content=FACE, headers={"content-type": "image/png"}).json()["predictions"][0]
    top = max(plain["faces"][0]["scores"].values())
    assert not plain["faces"][0]["uncertain"] and top < 0.9999
    above = (top + 1) / 2  # a threshold just above this face's top score
    answer = client.post(f"/predict?min_confidence={above}", content=FACE, headers={"content-type": "image/png"}).json()
    face = answer["predictions"][0]["faces"][0]
    assert face["uncertain"] and face["label"] == "uncertain"
    after = client.post("/predict", content=FACE, headers={"content-type": "image/png"}).json()["predictions"][0]
    assert not after["faces"][0]["uncertain"]  # the threshold was this request's only
    bad = client.post("/predict?min_confidence=1.5", content=FACE, headers={"content-type": "image/png"})
    assert bad.status_code == 400 and "min_confidence" in bad.json()["detail"]


def test_real_photo_with_the_default_detector():
    with TestClient(create_app("emoxnetlite")) as c:
        r = c.post("/predict", files={"file": ("astronaut.jpg", PHOTO, "image/jpeg")})
    assert r.status_code == 200, r.text
    [p] = r.json()["predictions"]
    assert p["size"] == [512, 512] and len(p["faces"]) >= 1 and p["faces"][0]["label"] in LABELS


def test_models_and_health(client):
    m = client.get("/models").json()
    assert "emoxnetlite.ferplus" in m["models"]
    assert m["loaded"]["name"].startswith("emoxnetlite") and set(m["loaded"]["labels"]) == LABELS
    assert m["loaded"]["temperature"] > 0 and m["loaded"]["detector"] == "full"
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size).save(buf, "PNG")
    return buf.getvalue()


def _bomb() -> bytes:
    """A tiny PNG whose header declares 30,000 x 30,000 pixels (CRC fixed), far over Pillow's bomb limit."""
    import struct
    import zlib

    png = bytearray(_png((8, 8)))
    png[16:24] = struct.pack(">II", 30_000, 30_000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


B64 = base64.b64encode(FACE).decode()
BAD = [  # (what, request kwargs, status, words in the error)
    ("not an image", {"content": b"hello, not an image", "headers": {"content-type": "image/png"}}, 400, "not an image"),
    ("truncated JPEG", {"content": PHOTO[:3000], "headers": {"content-type": "image/jpeg"}}, 400, "truncated"),
    ("decompression bomb", {"content": _bomb(), "headers": {"content-type": "image/png"}}, 400, "decompression bomb"),
    ("too large", {"content": b"\xff" * 400_000, "headers": {"content-type": "image/jpeg"}}, 413, "over the limit"),
    ("too large multipart", {"files": {"file": ("big.jpg", b"\xff" * 400_000, "image/jpeg")}}, 413, "over the limit"),
    ("too large, chunked", {"content": iter([b"\xff" * 200_000] * 2), "headers": {"content-type": "image/jpeg"}}, 413,
     "over the limit"),
    ("empty body", {"content": b"", "headers": {"content-type": "image/jpeg"}}, 400, "empty"),
    ("empty upload", {"files": {"file": ("e.jpg", b"", "image/jpeg")}}, 400, "empty"),
    ("wrong content type", {"content": FACE, "headers": {"content-type": "text/plain"}}, 415, "content type"),
    ("no content type", {"content": FACE}, 415, "content type"),
    ("too many images", {"json": {"images": [base64.b64encode(_png((8, 8))).decode()] * 5}}, 413, "over the limit of 4"),
    ("malformed JSON", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
     "malformed JSON"),
    ("JSON without images", {"json": {"pictures": [B64]}}, 400, "images"),
    ("bad base64", {"json": {"images": [B64, "@@not base64@@"]}}, 400, "images[1]: not valid base64"),
    ("base64 of a non-image", {"json": {"images": [base64.b64encode(b"plain text").decode()]}}, 400, "not an image"),
    ("multipart without file", {"data": {"other": "x"}, "files": {"x": ("a.png", FACE, "image/png")}}, 400, "'file'"),
]


@pytest.mark.parametrize("what,kwargs,status,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_json_4xx_and_the_server_lives_on(client, what, kwargs, status, words):
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert words in r.json()["detail"]
    good = client.post("/predict", content=FACE, headers={"content-type": "image/png"})
    assert good.status_code == 200
    _check_one_face(good.json())


def test_uploads_stay_in_memory(monkeypatch):
    """A multipart upload over Starlette's 1 MB spooling threshold is not rolled over to a temporary file."""
    import tempfile

    def no_disk(self):
        raise AssertionError("the upload was spooled to disk")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", no_disk)
    with TestClient(create_app("emoxnetlite", "full", max_bytes=4_000_000)) as c:
        r = c.post("/predict", files={"file": ("big.bin", os.urandom(2_000_000), "image/jpeg")})
    assert r.status_code == 400 and "not an image" in r.json()["detail"]


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("EMOZOO_SERVE_MAX_BYTES", "1000")
    with TestClient(create_app("emoxnetlite", "full")) as c:
        r = c.post("/predict", content=FACE, headers={"content-type": "image/png"})
    assert r.status_code == 413 and "1,000 bytes" in r.json()["detail"]


def test_the_web_page(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for words in ('id="photo"', 'id="camera"', 'id="key"', "X-API-Key", "toBlob", "image/jpeg"):
        assert words in r.text
    assert "/" not in client.get("/openapi.json").json()["paths"]  # a page, not an API endpoint


def test_api_key():
    with TestClient(create_app("emoxnetlite", "full", api_key="s3cret")) as c:
        assert c.get("/health").status_code == 200  # always open
        page = c.get("/")  # open too: the page holds no data and asks for the key
        assert page.status_code == 200 and 'id="key"' in page.text
        for path in ("/models", "/docs", "/openapi.json"):
            r = c.get(path)
            assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
        assert c.get("/models", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/predict", content=FACE, headers={"content-type": "image/png"}).status_code == 401
        r = c.post("/predict", content=FACE, headers={"content-type": "image/png", "X-API-Key": "s3cret"})
        assert r.status_code == 200
        _check_one_face(r.json())
        assert c.get("/models", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_serve_without_the_extra_says_how_to_install_it(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_uvicorn(name, *args, **kwargs):
        if name.split(".")[0] in ("uvicorn", "fastapi"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    with pytest.raises(SystemExit) as exc:
        main(["serve"])
    assert exc.value.code == 1
    assert capsys.readouterr().err.strip() == MISSING_EXTRA


def test_serve_is_a_registered_command():
    from emozoo.cli import build_cli
    from emozoo.cli.serve import serve_cmd

    assert build_cli().commands["serve"] is serve_cmd


def test_binding_beyond_localhost_warns():
    for host in ("127.0.0.1", "localhost", "::1"):
        assert host_warning(host) is None
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        assert "reachable from other machines" in host_warning(host) and "--api-key" in host_warning(host)


def test_a_real_uvicorn_process():
    with serving() as base:
        req = urllib.request.Request(f"{base}/predict", data=PHOTO, headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(req, timeout=60) as r:
            [p] = json.load(r)["predictions"]
    assert p["error"] is None and len(p["faces"]) >= 1 and p["faces"][0]["label"] in LABELS
