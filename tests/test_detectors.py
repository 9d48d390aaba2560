"""plugins/emozoo-blazeface installed for real (pip, into a temporary target): BlazeFace becomes the default
detector and finds faces the built-in Haar cascade misses. Skipped where ai-edge-litert is not installed."""
import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO, install_plugin_package

import emozoo

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None,
                                reason="the BlazeFace plugin runs on ai-edge-litert: pip install ai-edge-litert")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return install_plugin_package(tmp_path_factory, "emozoo-blazeface")


def run_python(env, code):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_blazeface_is_the_default_and_finds_faces_haar_misses(installed):
    data = run_python(installed, """
        import json, numpy as np, emozoo
        from PIL import Image
        from emozoo_blazeface import ssd_anchors
        photo = Image.open("examples/astronaut.jpg").convert("RGB")
        turned = np.asarray(photo.rotate(30, center=(224, 117), resample=Image.BILINEAR))
        auto = emozoo.create_detector()
        found = {name: [f.box for f in emozoo.create_detector(name).detect(turned)] for name in
                 ("haar", "blazeface", "blazeface_short")}
        face = auto.detect(np.asarray(photo))
        print(json.dumps({"auto": type(auto).__name__, "turned": found, "box": face[0].box if face else None,
                          "n": len(face), "keypoints": face[0].keypoints, "score": face[0].score,
                          "none": auto.detect(np.full((300, 400, 3), 128, np.uint8)),
                          "anchors": [len(ssd_anchors(192, (4,), False)),
                                      len(ssd_anchors(128, (8, 16, 16, 16), True))]}))
    """)
    assert data["auto"] == "BlazeFace" and data["anchors"] == [2304, 896]
    x0, y0, x1, y1 = data["box"]
    assert data["n"] == 1 and abs(x0 - 176) < 20 and abs(y0 - 65) < 20 and abs(x1 - 272) < 20 and abs(y1 - 161) < 20
    assert len(data["keypoints"]) == 6 and all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in data["keypoints"][:4])
    assert 0.5 <= data["score"] <= 1 and data["none"] == []
    assert data["turned"]["haar"] == []                       # a face turned 30 degrees: Haar misses it
    assert len(data["turned"]["blazeface"]) == 1 and len(data["turned"]["blazeface_short"]) == 1


def test_cli_lists_the_plugin_and_predicts_with_it(installed):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "emozoo.cli", *args], env=installed, cwd=REPO,
                              capture_output=True, text=True)

    plugins = {p["name"]: p for p in json.loads(run("plugins", "--json").stdout)}
    assert plugins["blazeface"]["distribution"] == "emozoo-blazeface"
    assert plugins["blazeface"]["registered"] == {"face detector": ["blazeface", "blazeface_short"]}
    result = run("predict", "examples/face.png", "--json")
    assert result.returncode == 0 and "XNNPACK" not in result.stderr, result.stderr
    faces = json.loads(result.stdout)[0]["faces"]
    assert len(faces) == 1 and faces[0]["box"][0] > 20 and faces[0]["box"][2] < 180


def test_weighted_nms_blends_overlapping_boxes():
    sys.path.insert(0, str(REPO / "plugins" / "emozoo-blazeface" / "src"))
    try:
        from emozoo_blazeface import weighted_nms
    finally:
        sys.path.pop(0)
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.3, 0.6], np.float32)
    points = np.zeros((3, 6, 2), np.float32)
    out, kept, _ = weighted_nms(boxes, scores, points, iou=0.3)
    assert kept.tolist() == pytest.approx([0.9, 0.6])
    assert out[0].tolist() == pytest.approx([0.5, 0, 10.5, 10])   # (0.9 * 0 + 0.3 * 2) / 1.2
    assert isinstance(emozoo.Face((0, 0, 1, 1)).score, float)
