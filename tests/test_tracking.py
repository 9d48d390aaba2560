"""Videos: detection on key frames, faces followed between (ByteTrack track numbers, interpolated boxes), scene cuts,
per-track smoothing, and `emozoo predict`'s streamed outputs, --resume, --summary and --plot."""
import csv
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from conftest import REPO
from PIL import Image

import emozoo
from emozoo.inference.results import Prediction
from emozoo.inference.tracking import DEFAULT_DETECT_EVERY, Follower, Smoother, follow_video, pair_faces, tiny_grey

pytest.importorskip("trackers", reason="video tracking needs the trackers package (pip install -e .)")


# -- the follower, on synthetic frames and a scripted detector -----------------------------------------------------
def frames(n, source="clip.mp4", value=lambda i: 60):
    """``n`` small frames whose pixel (0, 0) holds the frame number (what the scripted detector reads)."""
    for i in range(n):
        image = np.full((48, 64, 3), value(i), np.uint8)
        image[0, 0, 0], image[0, 0, 1] = i % 256, i // 256
        yield Prediction(source, frame=i, time=i / 30), image


class Scripted:
    """Finds the faces ``script(frame)`` says (a list of boxes), and notes which frames it was asked about."""

    def __init__(self, script):
        self.script, self.asked = script, []

    def __call__(self, image):
        i = int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])
        self.asked.append(i)
        return [emozoo.Face(tuple(map(float, b)), 0.9) for b in self.script(i)]


def run(script, n, every, **kw):
    detect = Scripted(script)
    out = list(Follower(detect, every)(frames(n, **kw)))
    return detect.asked, out


def moving(i):
    return [(10 + 2 * i, 10, 30 + 2 * i, 30)]


def test_detect_every_runs_the_detector_on_key_frames_and_the_last_and_interpolates_between():
    asked, out = run(moving, 10, 4)
    assert asked == [0, 4, 8, 9]                                     # every 4th frame, and the last
    assert [p.frame for p, *_ in out] == list(range(10))              # every frame, in order
    assert all(faces[0].box == tuple(map(float, moving(p.frame)[0])) for p, _, faces, _ in out)  # linear motion: exact
    assert {t for *_, tracks in out for t in tracks} == {0}
    asked, out = run(moving, 10, 1)
    assert asked == list(range(10)) and len(out) == 10


def test_a_face_hidden_for_ten_frames_comes_back_with_its_track_number():
    def script(i):  # face A moves right and is hidden in frames 20-29; face B stays
        a = [(5 + i, 5, 25 + i, 25)] if not 20 <= i < 30 else []
        return a + [(40, 30, 60, 46)]
    for every in (1, DEFAULT_DETECT_EVERY):
        _, out = run(script, 45, every)
        by_frame = {p.frame: dict(zip(tracks, faces)) for p, _, faces, tracks in out}
        a, b = [t for t, f in sorted(by_frame[0].items(), key=lambda kv: kv[1].box[0])]
        assert set(by_frame[40]) == {a, b} and by_frame[40][a].box[0] == 45.0, every
        assert a not in by_frame[25] and set(by_frame[44]) == {a, b}


def test_a_scene_cut_is_detected_at_once_and_resets_the_tracker():
    value = lambda i: 40 if i < 10 else 200  # noqa: E731 - frames 10 on are another scene
    asked, out = run(moving, 20, 8, value=value)
    assert asked == [0, 8, 9, 10, 16, 19]                             # both sides of the cut; then every 8th again
    tracks = {p.frame: ts for p, _, _, ts in out}
    assert tracks[9] != tracks[10] and tracks[10] == tracks[19]       # new track numbers after the cut, then kept
    asked, _ = run(moving, 20, 8)
    assert asked == [0, 8, 16, 19]                                    # no cut: key frames only


def test_a_face_seen_in_one_key_frame_only_shows_in_the_half_next_to_it():
    asked, out = run(lambda i: moving(i) if i < 4 else [], 9, 8)
    assert asked == [0, 8]
    assert [len(faces) for _, _, faces, _ in out] == [1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_a_stretch_followed_alone_gives_the_frames_of_the_whole_video():
    def script(i):  # two faces crossing, one hidden in frames 9-13; cuts at 17 and 24 (a stretch's first frame)
        return [(3 * i, 10, 3 * i + 16, 26)] * (not 9 <= i < 14) + [(60 - 2 * i, 12, 76 - 2 * i, 28)]
    value = lambda i: 40 if i < 17 else 200 if i < 24 else 120  # noqa: E731
    n, every = 38, 4
    detect = Scripted(script)
    with_frames = lambda detect: lambda pred, image: detect(image)  # noqa: E731
    whole = [(p.frame, f, link) for p, _, f, link in follow_video(frames(n, value=value), with_frames(detect), every)]
    assert [p for p, _, _ in whole] == list(range(n))
    assert detect.asked == [0, 4, 8, 12, 16, 17, 20, 23, 24, 28, 32, 36, 37]  # key frames: every 4th, cuts, last
    assert any(not link.key and link.origins for _, _, link in whole)
    all_frames = list(frames(n, value=value))
    for a in range(0, n, every):
        for b in (a + every, a + 3 * every):  # [a, b): read from a - 1 (its cut test) to b (the next key frame)
            before = tiny_grey(all_frames[a - 1][1]) if a else None
            alone = [(p.frame, f, link) for p, _, f, link in
                     follow_video(all_frames[a:b + 1], with_frames(Scripted(script)), every, a, before)]
            assert [x for x in alone if x[0] < b] == whole[a:b], (a, b)


def test_faces_of_two_key_frames_are_paired_by_iou_whatever_their_order():
    a = [emozoo.Face((0, 0, 10, 10)), emozoo.Face((50, 0, 60, 10)), emozoo.Face((100, 0, 110, 10))]
    b = [emozoo.Face((52, 0, 62, 10)), emozoo.Face((300, 0, 310, 10)), emozoo.Face((2, 0, 12, 10))]
    assert pair_faces(a, b) == {0: 2, 1: 0}                            # the third face of a has no partner in b
    _, out = run(lambda i: [(40 - 2 * i, 0, 50 - 2 * i, 10), (2 * i, 20, 10 + 2 * i, 30)][::1 - 2 * (i == 4)], 5, 4)
    assert sorted(out[2][2], key=lambda f: f.box[1]) == [emozoo.Face((36.0, 0, 46.0, 10), 0.9),  # detector order
                                                         emozoo.Face((4.0, 20, 14.0, 30), 0.9)]    # swapped: still paired


def test_smoothing_is_per_track():
    smoother, pred = Smoother(0.5), Prediction("v.mp4", frame=0)
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert np.allclose(smoother(pred, [3, 7], p), p)
    got = smoother(pred, [7, 3], np.array([[1.0, 0.0], [1.0, 0.0]]))  # swapped order: each track keeps its own past
    assert np.allclose(got, [[0.5, 0.5], [1.0, 0.0]])
    assert np.allclose(Smoother(0.5)(Prediction("other.mp4", frame=1), [7], np.array([[1.0, 0.0]])), [[1.0, 0.0]])


def test_the_command_line_default_is_the_library_default():
    from emozoo.cli.predict import DETECT_EVERY

    assert DETECT_EVERY == DEFAULT_DETECT_EVERY


# -- the command line on a generated video ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """150 frames of 320x240 with the astronaut's face moving right and back (MJPG, 30 fps)."""
    path = tmp_path_factory.mktemp("track") / "moving.avi"
    face = cv2.cvtColor(np.asarray(Image.open(REPO / "examples" / "face.png").convert("RGB").resize((110, 110))),
                        cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 240))
    for i in range(150):
        frame = np.full((240, 320, 3), 90, np.uint8)
        x = int(100 + 80 * np.sin(2 * np.pi * i / 75))
        frame[60:170, x:x + 110] = face
        writer.write(frame)
    writer.release()
    return path


class Blob:
    """The box around the pixels that differ from the grey background (the face of the generated video)."""

    def detect(self, image):
        ys, xs = np.nonzero(np.abs(image.astype(int) - 90).max(axis=2) > 12)
        return [emozoo.Face((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))] if len(xs) else []


@pytest.fixture
def blob(user_registrations):
    emozoo.register_face_detector("blob-t", Blob)
    return "blob-t"


def test_json_is_streamed_one_frame_per_line_with_track_and_time(cli, video, blob):
    result = cli("predict", video, "--detector", blob, "--json", "--every", 2, "--detect-every", 2)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 2 + 75
    records = json.loads(result.stdout)
    assert [r["frame"] for r in records] == list(range(0, 150, 2)) and records[15]["time"] == 1.0
    assert {f["track"] for r in records for f in r["faces"]} == {0}


def test_summary_text_json_and_plot(cli, video, tmp_path, blob):
    result = cli("predict", video, "--detector", blob, "--summary", "--every", 2, "--detect-every", 2)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{video} track 0: 4.9 s (75 frames from 0.0 s), mostly ")
    result = cli("predict", video, "--detector", blob, "--summary", "--json", "--every", 2, "--detect-every", 2,
                 "--plot", tmp_path / "tracks.png")
    tracks = json.loads(result.stdout)["tracks"]
    assert len(tracks) == 1 and tracks[0]["frames"] == 75 and tracks[0]["duration"] == 4.933
    assert abs(sum(tracks[0]["shares"].values()) - 1) < 1e-3 and tracks[0]["dominant"] == next(iter(tracks[0]["shares"]))
    assert Image.open(tmp_path / "tracks.png").size[0] == 1000


def test_plot_without_matplotlib_names_the_extra(cli, video, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = cli("predict", video, "--plot", tmp_path / "p.png")
    assert result.exit_code == 1 and "pip install 'emozoo[plot]'" in result.output and "Traceback" not in result.output


def test_resume_after_a_killed_run_gives_the_rows_of_an_uninterrupted_run(cli, video, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = ["--detector", "haar", "--smooth", "0.5", "--batch-size", "4"]
    assert cli("predict", video, *args, "--csv", f"{whole}.csv", "--jsonl", f"{whole}.jsonl").exit_code == 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "emozoo.cli", "predict", str(video), *args, "--csv", f"{cut}.csv",
                             "--jsonl", f"{cut}.jsonl"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(f"{cut}.jsonl") and len(open(f"{cut}.jsonl").read().splitlines()) >= 5:
            proc.kill()
            break
        time.sleep(0.005)
    proc.wait()
    written = len(open(f"{cut}.jsonl").read().splitlines())
    assert proc.returncode != 0 and 5 <= written < 150, "the run was not killed mid-video"
    with open(f"{cut}.csv", "a") as f:
        f.write("clip,12,0.4")  # an unfinished row, as a kill can leave
    result = cli("predict", video, *args, "--csv", f"{cut}.csv", "--jsonl", f"{cut}.jsonl", "--resume")
    assert result.exit_code == 0, result.output
    assert list(csv.reader(open(f"{cut}.csv"))) == list(csv.reader(open(f"{whole}.csv")))
    assert open(f"{cut}.jsonl").read() == open(f"{whole}.jsonl").read()


def test_resume_needs_a_file_and_matching_columns(cli, video, tmp_path):
    assert cli("predict", video, "--resume").exit_code == 2
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    result = cli("predict", video, "--csv", bad, "--resume")
    assert result.exit_code == 1 and "columns differ" in result.output


def test_predict_keeps_the_track_of_a_face_hidden_for_ten_frames(tmp_path, blob):
    path = tmp_path / "hidden.avi"
    face = cv2.cvtColor(np.asarray(Image.open(REPO / "examples" / "face.png").convert("RGB").resize((100, 100))),
                        cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 240))
    for i in range(40):
        frame = np.full((240, 320, 3), 90, np.uint8)
        if not 15 <= i < 25:  # hidden (gone from the frame) for 10 frames
            frame[60:160, 40 + 3 * i:140 + 3 * i] = face
        writer.write(frame)
    writer.release()
    preds = emozoo.predict(path, detector=blob, detect_every=5)  # key frames every 5: 15 and 20 find no face, 25 does
    tracks = [[f.track for f in p.faces] for p in preds]
    assert tracks[:13] == [[0]] * 13 and tracks[25:] == [[0]] * 15     # the same track after it
    assert tracks[15:23] == [[]] * 8  # key frames 15 and 20 find no face; frames between key frames 10 and 15 (20 and
    # 25) show the face in the half next to the key frame that has it


def test_resume_does_not_read_images_already_written(cli, tmp_path):
    out, third = tmp_path / "faces.csv", tmp_path / "third.png"
    face, photo = REPO / "examples" / "face.png", REPO / "examples" / "astronaut.jpg"
    third.write_bytes(face.read_bytes())
    assert cli("predict", face, photo, "--detector", "full", "--csv", out).exit_code == 0
    result = cli("predict", face, photo, third, "--detector", "full", "--csv", out, "--resume")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["source"] for r in rows] == [str(face), str(photo), str(third)]
    assert f"{face}:" not in result.stdout and f"{photo}:" in result.stdout  # the last one written is done again


def test_stopping_early_stops_the_decoding_thread(video, blob):
    import threading

    preds = emozoo.iter_predict(video, detector=blob, batch_size=1)
    assert next(preds).frame == 0
    assert any(t.name == "emozoo-decode" for t in threading.enumerate())
    preds.close()
    assert not any(t.name == "emozoo-decode" for t in threading.enumerate())
