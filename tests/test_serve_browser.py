"""The web page at ``/`` driven in a real Chromium (Playwright) against a real ``emozoo serve``: a photo through
the file input, a fake webcam playing a video made from the example photo, and the API key field.

Chromium is the one in env ``EMOZOO_CHROMIUM``, else ``chromium`` or ``chromium-browser`` on the PATH, else
Playwright's own when ``playwright install chromium`` fetched it. ``EMOZOO_SCREENSHOT=docs/serve-page.png``
also saves the photo test's screenshot there.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright: pip install playwright")
from PIL import Image  # noqa: E402
from serve_process import ROOT, serving  # noqa: E402

from emozoo.cli.serve import has_serve_extra  # noqa: E402

if not has_serve_extra():
    pytest.skip("needs the serve extra: pip install 'emozoo[serve]'", allow_module_level=True)

PHOTO = ROOT / "examples" / "astronaut.jpg"
LABELS = {"neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"}
KEY = "s3cret-key"
WAIT_MS = 30_000
#: as root in a sandbox with no network: no sandboxing, no GPU, and none of Chromium's own connections
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """The system's Chromium: env EMOZOO_CHROMIUM, else chromium or chromium-browser on the PATH."""
    for path in (os.environ.get("EMOZOO_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if path and Path(path).is_file():
            return path
    return None


def write_y4m(path: Path, size: tuple[int, int] = (640, 480), frames: int = 30) -> Path:
    """A YUV4MPEG2 (4:2:0) video of the example photo drifting sideways: a fake webcam for Chromium."""
    w, h = size
    photo = Image.open(PHOTO).convert("RGB").resize((h, h))
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420\n".encode())
        for i in range(frames):
            frame = Image.new("RGB", size, (60, 60, 60))
            frame.paste(photo, ((w - h) // 2 + 2 * (i % 10) - 10, 0))
            y, cb, cr = frame.convert("YCbCr").split()
            f.write(b"FRAME\n" + y.tobytes() + cb.resize((w // 2, h // 2), Image.BOX).tobytes()
                    + cr.resize((w // 2, h // 2), Image.BOX).tobytes())
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Chromium with a fake webcam (the y4m video) that needs no permission prompt."""
    video = write_y4m(tmp_path_factory.mktemp("webcam") / "astronaut.y4m")
    with sync_api.sync_playwright() as p:
        path = chromium_path()
        if path is None and not Path(p.chromium.executable_path).is_file():
            pytest.skip("no Chromium found: apt-get install chromium, or set EMOZOO_CHROMIUM to its path")
        b = p.chromium.launch(executable_path=path, args=ARGS + [
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def server():
    with serving() as base:
        yield base


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


def _api_faces(base: str) -> tuple[list[dict], list[int]]:
    req = urllib.request.Request(f"{base}/predict", data=PHOTO.read_bytes(), headers={"Content-Type": "image/jpeg"})
    with urllib.request.urlopen(req, timeout=60) as r:
        [p] = json.load(r)["predictions"]
    return p["faces"], p["size"]


#: the faces listed and the boxes drawn, read in one go (the webcam loop redraws them between frames)
SNAPSHOT = """() => ({boxes: document.querySelectorAll("#boxes .box").length,
  faces: [...document.querySelectorAll("#faces li.face")].map((li) => ({
    label: li.dataset.label, rows: [...li.querySelectorAll("li")].map((row) => row.textContent)}))})"""


def _check_faces(page) -> list[str]:
    """The faces listed on the page, each with a label and its top 3 expressions with scores, and a box drawn for each."""
    snap = page.evaluate(SNAPSHOT)
    assert snap["faces"] and snap["boxes"] == len(snap["faces"]), snap
    for face in snap["faces"]:
        assert face["label"] in LABELS | {"uncertain"} and len(face["rows"]) == 3, face
        for row in face["rows"]:
            m = re.fullmatch(r"\s*(\w+) (\d+)%", row)
            assert m and m.group(1) in LABELS and 0 <= int(m.group(2)) <= 100, row
    return [face["label"] for face in snap["faces"]]


def test_a_photo_is_boxed_and_labelled(page, server, tmp_path):
    page.goto(server + "/")
    page.set_input_files("#photo", str(PHOTO))
    page.wait_for_selector("#faces li.face")
    labels = _check_faces(page)
    faces, (w, h) = _api_faces(server)
    assert labels[0] == faces[0]["label"]  # the page shows what the API says for the photo
    # the box sits where the API's box is, scaled from the photo's pixels to the displayed image
    img, box = page.locator("#image").bounding_box(), page.locator("#boxes .box").first.bounding_box()
    assert img["width"] > 100 and box["width"] > 10
    x0, y0, x1, y1 = faces[0]["box"]
    expected = (x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h)
    shown = ((box["x"] - img["x"]) / img["width"], (box["y"] - img["y"]) / img["height"], box["width"] / img["width"],
             box["height"] / img["height"])
    assert np.allclose(shown, expected, atol=0.03), (shown, expected)
    assert re.search(r"1 face\(s\) · latency \d+ ms", page.inner_text("#stats"))
    assert page.locator("#error").is_hidden()
    page.screenshot(path=tmp_path / "serve-page.png")
    if os.environ.get("EMOZOO_SCREENSHOT"):
        page.screenshot(path=os.environ["EMOZOO_SCREENSHOT"])


def test_the_webcam_is_labelled_live(page, server):
    page.goto(server + "/")
    page.click("#camera")
    page.wait_for_function("Number(document.getElementById('stats').dataset.frames) >= 3")
    assert page.get_attribute("#camera", "aria-pressed") == "true" and page.locator("#video").is_visible()
    page.wait_for_selector("#boxes .box")
    _check_faces(page)
    assert re.search(r"latency \d+ ms · [\d.]+ fps", page.inner_text("#stats"))
    page.click("#camera")
    assert page.get_attribute("#camera", "aria-pressed") == "false" and page.locator("#video").is_hidden()
    assert re.fullmatch(r"Webcam stopped after \d+ frame\(s\)\.", page.inner_text("#stats"))
    assert int(page.get_attribute("#stats", "data-frames")) >= 3
    assert page.locator("#error").is_hidden()


def test_the_api_key_field(page):
    with serving("--api-key", KEY) as base:
        assert page.goto(base + "/").status == 200  # the page loads without the key
        page.set_input_files("#photo", str(PHOTO))
        error = page.locator("#error")
        error.wait_for()
        assert "API key required" in error.inner_text() and page.locator("#faces li.face").count() == 0
        page.fill("#key", "wrong")
        page.press("#key", "Tab")
        sync_api.expect(error).to_contain_text("API key required: the server refused this key")
        page.fill("#key", KEY)
        page.press("#key", "Tab")  # the change event: the photo on show is sent again, with the key
        page.wait_for_selector("#faces li.face")
        _check_faces(page)
        assert error.is_hidden()


def test_the_minimum_confidence_is_sent_with_each_image_and_a_bad_one_is_named(page, server):
    page.goto(server + "/")
    page.fill("#min", "0.5")
    with page.expect_request(lambda request: "/predict" in request.url) as sent:
        page.set_input_files("#photo", str(PHOTO))
    assert sent.value.url.endswith("/predict?min_confidence=0.5")
    page.wait_for_selector("#faces li.face")
    assert _check_faces(page) == ["happiness"]  # the example photo's face scores far above 0.5
    page.fill("#min", "0.99999")  # above its score (0.9999): the face on show is sent again and comes back uncertain
    page.press("#min", "Tab")
    page.wait_for_selector("#faces li.face[data-label='uncertain']")
    assert page.locator("#boxes .box.uncertain").count() == 1
    assert page.locator("#faces li.face").first.inner_text().startswith("uncertain (margin ")
    error = page.locator("#error")
    for bad in ("1", "-0.1"):  # the API takes [0, 1)
        page.fill("#min", bad)
        page.press("#min", "Tab")
        sync_api.expect(error).to_contain_text(f'minimum confidence: type a number from 0 to under 1, not "{bad}"')


#: each box's place on the page against its face in the sent frame, read in one go
BOXES = """() => [...document.querySelectorAll("#boxes .box")].map((b) => ({
  left: parseFloat(b.style.left), box: b.dataset.box.split(",").map(Number), size: b.dataset.size.split(",").map(Number)}))"""


def test_the_webcam_is_mirrored_and_its_boxes_follow_the_mirror(page, server):
    page.goto(server + "/")
    assert page.is_checked("#mirror")  # a selfie view by default
    page.click("#camera")
    page.wait_for_selector("#boxes .box")
    transform = page.evaluate("getComputedStyle(document.getElementById('video')).transform")
    assert transform == "matrix(-1, 0, 0, 1, 0, 0)"
    for box in page.evaluate(BOXES):  # a face at the frame's right edge is drawn at the left one
        (x0, _, x1, _), (w, _) = box["box"], box["size"]
        assert abs(box["left"] - 100 * (w - x1) / w) < 0.01, box
    page.uncheck("#mirror")
    assert page.evaluate("getComputedStyle(document.getElementById('video')).transform") == "none"
    page.wait_for_function(f"""() => ({BOXES})().some((b) => Math.abs(b.left - 100 * b.box[0] / b.size[0]) < 0.01)""")
    for box in page.evaluate(BOXES):
        (x0, _, _, _), (w, _) = box["box"], box["size"]
        assert abs(box["left"] - 100 * x0 / w) < 0.01, box
    page.click("#camera")
    assert page.locator("#error").is_hidden()
