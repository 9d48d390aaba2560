"""emozoo.predict and `emozoo predict`: bad inputs, image modes, EXIF, batching, crops, video, CLI."""
import csv
import io
import json
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

import emozoo
from emozoo.errors import DataError
from emozoo.inference import crop_face, load_image

#: the astronaut photo at 256 x 256 and where OpenCV's Haar cascade finds her face in it
SIZE = 256
FACE_BOX = (85, 29, 139, 83)


@pytest.fixture(scope="module")
def photo():
    return Image.open(REPO / "examples" / "astronaut.jpg").convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return emozoo.create("emoxnetlite")  # random weights: these tests never depend on accuracy


def iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def png_declaring(path, width, height):
    """A tiny PNG whose header declares width x height pixels (a decompression bomb's signature)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, photo):
    """Every bad or unusual input the issue lists, generated here."""
    d = tmp_path_factory.mktemp("inputs")
    out = {name: d / file for name, file in [
        ("empty", "empty.jpg"), ("text", "notes.jpg"), ("truncated", "truncated.jpg"), ("bomb", "bomb.png"),
        ("big", "big.png"), ("png16", "gray16.png"), ("cmyk", "cmyk.jpg"), ("palette", "palette.png"),
        ("rgba", "rgba.png"), ("exif", "rotated.jpg"), ("noface", "noface.png"), ("fakevideo", "clip.mp4")]}
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG", quality=90)
    out["empty"].write_bytes(b"")
    out["text"].write_text("this is not a picture\n")
    out["truncated"].write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    png_declaring(out["bomb"], 20000, 20000)       # over 2x MAX_IMAGE_PIXELS: Pillow raises
    png_declaring(out["big"], 10000, 10000)        # over MAX_IMAGE_PIXELS: Pillow warns
    gray = np.asarray(photo.convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(out["png16"])
    photo.convert("CMYK").save(out["cmyk"], quality=95)
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(out["palette"])
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.pad(np.full((SIZE - 8, SIZE - 8), 255, np.uint8), 4)))
    rgba.save(out["rgba"])
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored pixels must turn 90 degrees clockwise to stand upright
    photo.transpose(Image.Transpose.ROTATE_90).save(out["exif"], exif=exif, quality=90)
    ramp = np.tile(np.linspace(0, 255, SIZE, dtype=np.uint8), (SIZE, 1))
    Image.fromarray(ramp).save(out["noface"])
    out["fakevideo"].write_text("not a video")
    return out


@pytest.fixture(scope="module")
def results(files, model):
    """All of them in one predict() call with the built-in Haar detector."""
    preds = emozoo.predict([str(p) for p in files.values()], model, detector="haar")
    return {name: pred for name, pred in zip(files, preds)}


@pytest.mark.parametrize("name,reason", [
    ("empty", "empty file"),
    ("text", "not an image"),
    ("truncated", "truncated or corrupt image"),
    ("bomb", "decompression bomb"),
    ("big", "decompression bomb"),
    ("fakevideo", "cannot open this video"),
])
def test_bad_inputs_are_per_item_errors_naming_the_file(results, files, name, reason):
    pred = results[name]
    assert pred.error.startswith(f"{files[name]}: ") and reason in pred.error and "\n" not in pred.error
    assert pred.faces == [] and not pred.ok


@pytest.mark.parametrize("name", ["png16", "cmyk", "palette", "rgba"])
def test_unusual_image_modes_are_read_and_their_face_found(results, name):
    pred = results[name]
    assert pred.ok and pred.size == (SIZE, SIZE)
    assert len(pred.faces) == 1 and iou(pred.faces[0].box, FACE_BOX) > 0.5


def test_modes_are_converted_to_the_right_rgb(files, photo):
    gray = np.asarray(photo.convert("L")).astype(int)
    assert np.abs(load_image(files["png16"])[..., 0].astype(int) - gray).max() <= 1      # 16 bit scaled, not clipped
    assert np.abs(load_image(files["cmyk"]).astype(int) - np.asarray(photo).astype(int)).mean() < 8
    rgba = load_image(files["rgba"])
    assert (rgba[0, 0] == 255).all() and rgba.shape == (SIZE, SIZE, 3)                  # transparency on white


def test_exif_rotated_photo_is_turned_upright_with_the_box_on_the_face(results):
    pred = results["exif"]
    assert pred.ok and pred.size == (SIZE, SIZE)
    assert len(pred.faces) == 1 and iou(pred.faces[0].box, FACE_BOX) > 0.5


def test_image_without_a_face_has_an_empty_face_list(results):
    assert results["noface"].ok and results["noface"].faces == []


def test_each_face_has_box_confidence_all_scores_and_top_label(results, model):
    face = results["cmyk"].faces[0]
    assert list(face.scores) == list(model.config.label_names)
    assert abs(sum(face.scores.values()) - 1) < 1e-4 and face.label == max(face.scores, key=face.scores.get)
    assert 0 < face.confidence <= 1
    d = results["cmyk"].as_dict()
    assert json.loads(json.dumps(d)) == d and set(d) == {"source", "frame", "time", "size", "faces", "error"}


def test_load_image_raises_a_data_error(files):
    with pytest.raises(DataError, match="truncated.jpg: truncated or corrupt image"):
        load_image(files["truncated"])


def test_faces_of_many_images_are_classified_in_batches(model, photo):
    calls = []
    hook = model.register_forward_hook(lambda m, inputs, out: calls.append(inputs[0].shape[0]))
    try:
        images = [np.asarray(photo)] * 5
        preds = emozoo.predict(images, model, detector="full", batch_size=4)
        assert calls == [4, 1]                  # 5 faces, 2 forward passes
        calls.clear()
        emozoo.predict(images + [photo], model, detector="full")
        assert calls == [6]
    finally:
        hook.remove()
    assert [p.source for p in preds] == [f"<array {i}>" for i in range(5)]
    scores = np.array([list(p.faces[0].scores.values()) for p in preds])
    assert np.allclose(scores, scores[0], atol=1e-5)                   # batching does not change the result


def test_crops_follow_the_model_config_with_no_code_change(photo):
    """A colour 64x64 model with a 0.25 margin gets colour 64x64 crops of box +25% on each side."""
    model = emozoo.create("resnet10", in_chans=3, input_size=(64, 64))
    model.config.input.crop_margin = 0.25
    seen = []
    model.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    pred = emozoo.predict(photo, model, detector="haar")[0]
    assert seen[0].shape == (1, 3, 64, 64)
    box = pred.faces[0].box
    expected = emozoo.face_transform(model)(crop_face(np.asarray(photo), box, 0.25))
    assert torch.allclose(seen[0][0], expected)


def test_crop_face_margin_aspect_and_padding():
    image = np.arange(100 * 100 * 3, dtype=np.uint8).reshape(100, 100, 3)
    assert crop_face(image, (40, 40, 60, 60), margin=0.5).shape == (40, 40, 3)           # 20 + 2 x 10
    assert crop_face(image, (40, 40, 60, 60), margin=0.0, aspect=2.0).shape == (20, 40, 3)
    corner = crop_face(image, (0, 0, 20, 20), margin=0.5)                                 # half outside: black
    assert corner.shape == (40, 40, 3) and (corner[:10, :10] == 0).all()
    assert (corner[10:, 10:] == image[:30, :30]).all()


def test_inputs_directories_globs_and_missing_paths(files, model):
    folder = files["png16"].parent
    names = {p.source.rsplit("/", 1)[-1] for p in emozoo.predict(str(folder), model, detector="full")}
    assert {"gray16.png", "rotated.jpg", "clip.mp4"} <= names          # recursive, images and videos
    preds = emozoo.predict([str(folder / "*.png"), str(folder / "*.nothing"), str(folder / "missing.jpg")], model,
                           detector="full")
    assert len(preds) == 8 and sum(p.ok for p in preds) == 4           # 6 PNGs, 2 of them bombs
    assert preds[-2].error.endswith("no file matches this pattern") and preds[-1].error.endswith("no such file")


def test_arrays_with_bad_dtypes_are_per_item_errors(model):
    preds = emozoo.predict([np.zeros((8, 8), np.float32), np.zeros((32, 32, 3), np.uint8)], model, detector="full")
    assert preds[0].error == "<array 0>: arrays must be uint8 (0-255), got float32" and preds[1].ok


def test_unknown_detector_lists_close_matches(model):
    with pytest.raises(emozoo.UnknownFaceDetectorError, match="Did you mean: haar"):
        emozoo.predict([], model, detector="haarr")


# -- video ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def video(tmp_path_factory, photo):
    """12 frames of 320x240 with the face moving right by 6 pixels a frame (MJPG, 10 fps)."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    face = cv2.cvtColor(np.asarray(photo.crop((60, 5, 164, 109)).resize((140, 140))), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(12):
        frame = np.full((240, 320, 3), 90, np.uint8)
        frame[50:190, 20 + 6 * i:160 + 6 * i] = face
        writer.write(frame)
    writer.release()
    return path


def test_video_every_nth_frame_tracked_and_smoothed(video, model):
    raw = emozoo.predict(video, model, detector="haar", every=4)
    assert [(p.frame, p.time) for p in raw] == [(0, 0.0), (4, 0.4), (8, 0.8)]
    assert all(len(p.faces) == 1 and p.faces[0].track == 0 for p in raw)
    assert raw[1].faces[0].box[0] > raw[0].faces[0].box[0]             # the face moves right
    smooth = emozoo.predict(video, model, detector="haar", every=4, smooth=0.5)
    assert smooth[0].faces[0].scores == raw[0].faces[0].scores           # the first frame has no past
    prev, now = (np.array(list(p.faces[0].scores.values())) for p in (smooth[0], raw[1]))
    assert np.allclose(list(smooth[1].faces[0].scores.values()), 0.5 * prev + 0.5 * now, atol=1e-4)


def test_cli_video_csv_per_frame(cli, video, tmp_path):
    out = tmp_path / "frames.csv"
    result = cli("predict", video, "--every", 3, "--csv", out, "--detector", "haar", "--smooth", 0.5)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["frame"] for r in rows] == ["0", "3", "6", "9"] and {r["track"] for r in rows} == {"0"}
    assert rows[0]["label"] and float(rows[0]["happiness"]) >= 0


# -- command line -----------------------------------------------------------------------------------------
def test_cli_reports_each_bad_input_on_one_line_and_exits_1(cli, files):
    result = cli("predict", *files.values(), "--detector", "haar")
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 6 and any(str(files["truncated"]) in e for e in errors)
    assert f"{files['noface']}: no face" in result.stdout
    assert f"{files['exif']}: face 1 at" in result.stdout


def test_cli_json_csv_and_annotate(cli, files, tmp_path):
    good = [files["cmyk"], files["noface"]]
    result = cli("predict", *good, "--json", "--detector", "haar", "--annotate", tmp_path / "drawn",
                 "--csv", tmp_path / "faces.csv")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [len(r["faces"]) for r in records] == [1, 0]
    assert set(records[0]["faces"][0]) == {"box", "confidence", "label", "scores", "track", "margin", "uncertain",
                                           "members", "agreement"}
    rows = list(csv.DictReader((tmp_path / "faces.csv").open()))
    assert len(rows) == 2 and rows[0]["label"] == records[0]["faces"][0]["label"] and rows[1]["face"] == ""
    drawn = cv2.imread(str(tmp_path / "drawn" / "cmyk.jpg"))
    assert drawn.shape == (SIZE, SIZE, 3) and (tmp_path / "drawn" / "noface.png").is_file()
    assert cli("predict", files["cmyk"], "--json", "--csv", "-").exit_code == 2


def test_cli_exit_status_0_when_all_succeed_and_1_on_one_failure(cli, files):
    assert cli("predict", files["noface"], "--detector", "full").exit_code == 0
    result = cli("predict", files["noface"], files["empty"], "--detector", "full")
    assert result.exit_code == 1 and result.stderr.splitlines()[0] == f"Error: {files['empty']}: empty file"


def test_cli_camera_without_display(cli, video, monkeypatch, tmp_path):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = cli("predict", "--camera", 0)
    assert result.exit_code == 1 and "there is none (DISPLAY is not set)" in result.output
    # with somewhere to write, it runs headless: here "camera 0" is the test video
    monkeypatch.setattr("emozoo.inference.sources.open_capture", lambda source: cv2.VideoCapture(str(video)))
    result = cli("predict", "--camera", 0, "--csv", tmp_path / "cam.csv", "--detector", "full")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "cam.csv").open()))
    assert len(rows) == 12 and rows[0]["source"] == "camera:0"


def test_a_saved_folder_is_a_model_name_as_in_eval(model, photo, tmp_path):
    folder = emozoo.save_pretrained(model, tmp_path / "saved")
    x = np.asarray(photo)
    by_folder = emozoo.predict([x], str(folder), detector="full")[0].faces[0].scores
    by_module = emozoo.predict([x], model, detector="full")[0].faces[0].scores
    assert by_folder == pytest.approx(by_module, abs=1e-6)


def test_cli_flip_switch_overrides_the_published_test_time_flip(cli, tmp_path):
    face = REPO / "examples" / "face.png"
    scores = {}
    for flag in ("--flip", "--no-flip"):
        result = cli("predict", face, "--detector", "full", "--json", flag)
        assert result.exit_code == 0, result.output
        scores[flag] = json.loads(result.stdout)[0]["faces"][0]["scores"]
    assert scores["--flip"] != scores["--no-flip"]
    for flip, flag in ((True, "--flip"), (False, "--no-flip")):
        model = emozoo.create("emoxnetlite", pretrained=True, flip=flip)
        want = emozoo.predict(face, model, detector="full")[0].faces[0].scores
        assert want == pytest.approx(scores[flag], abs=6e-5)  # JSON rounds to 4 digits
    single = emozoo.save_pretrained(emozoo.create("resnet10", width=0.25), tmp_path / "r10")
    result = cli("predict", face, "--detector", "full", "--model", f"local-dir:{single}", "--flip")
    assert result.exit_code == 1 and "flip= is an option of emoxnet and emoxnetlite" in result.output


FERPLUS_NPZ = "/work/shared/data/fer2013/fer2013_ferplus_train_publictest.npz"


def test_full_detector_gives_the_model_exactly_what_face_transform_gives(model, photo):
    """`detector="full"`: the inputs are face crops, so no margin and no black border (issue item 5)."""
    from pathlib import Path

    if Path(FERPLUS_NPZ).is_file():
        with np.load(FERPLUS_NPZ, allow_pickle=False) as data:
            faces = list(data["images"][np.flatnonzero(data["usage"] == "PublicTest")[:40]])
    else:  # the FER+ file is not on every machine: grey crops of the test photo stand in
        faces = [np.asarray(photo.convert("L").crop((60 + i, 5, 164 + i, 109)).resize((48, 48))) for i in range(40)]
    faces += [np.array(photo.crop((60, 5, 164, 109)))]                         # a colour crop, not square
    to_input = emozoo.face_transform(model)
    with torch.inference_mode():
        want = torch.cat([model.eval()(to_input(f)[None]).softmax(-1) for f in faces]).numpy()
    preds = emozoo.predict(faces, model, detector="full", batch_size=16)
    got = np.array([list(p.faces[0].scores.values()) for p in preds])
    assert [p.faces[0].box for p in preds[:1]] == [(0.0, 0.0, 48.0, 48.0)]
    np.testing.assert_allclose(got, want, atol=1e-5)


class EveryNth:
    """A face on every n-th image only (n=0: never)."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def detect(self, image):
        self.calls += 1
        return [emozoo.Face((10.0, 10.0, 60.0, 60.0))] if self.n and self.calls % self.n == 0 else []


@pytest.mark.parametrize("n,most_held", [(0, 1), (10, 8), (1, 8)])
def test_frames_held_per_batch_are_bounded_and_faceless_frames_come_out_at_once(model, tmp_path, monkeypatch, n,
                                                                                  most_held):
    """Issue item 4: with --annotate (keep_images), a faceless video kept every frame until 32 crops gathered."""
    path = tmp_path / "faceless.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 120))
    for i in range(60):
        writer.write(np.full((120, 160, 3), 40 + i, np.uint8))
    writer.release()
    from emozoo.inference import engine

    read = []

    def counting(*args, **kwargs):
        for pred, image in engine_iter_frames(*args, **kwargs):
            read.append(pred.frame)
            yield pred, image
    engine_iter_frames = engine.iter_frames
    monkeypatch.setattr(engine, "iter_frames", counting)
    for detect_every in (1, 4):  # with key frames every 4th frame, at most 3 more frames wait for theirs
        held, read[:] = [], []
        for pred in emozoo.iter_predict(path, model, detector=EveryNth(n), batch_size=8, keep_images=True,
                                        detect_every=detect_every):
            held.append(len(read) - len(held))  # frames read but not yet given out, this one included
            assert pred.image is not None
        assert len(held) == 60 and (max(held) == most_held if detect_every == 1 else max(held) <= most_held + 3)


def test_cli_writes_faceless_frames_to_the_csv_as_they_come(cli, video, tmp_path, user_registrations):
    out = tmp_path / "rows.csv"
    seen = []

    class Watcher:
        def detect(self, image):  # by the time frame k is read, frames 0..k-1 must be in the file
            seen.append(len(out.read_text().splitlines()) - 1 if out.exists() else -1)
            return []
    emozoo.register_face_detector("watcher-b", Watcher)
    result = cli("predict", video, "--detector", "watcher-b", "--csv", out, "--annotate", tmp_path / "drawn",
                 "--detect-every", 1)
    assert result.exit_code == 0, result.output
    assert seen == list(range(12)) and len(out.read_text().splitlines()) == 13
    seen.clear()  # with --detect-every 4 the detector sees frames 0, 4, 8 and the last, 11; the frames before are written
    assert cli("predict", video, "--detector", "watcher-b", "--csv", out, "--detect-every", 4).exit_code == 0
    assert seen == [0, 1, 5, 9] and len(out.read_text().splitlines()) == 13
