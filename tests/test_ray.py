"""emozoo.inference.ray.predict_ray and `emozoo predict --ray`: the same records as one process, on a local
Ray cluster of 2 CPUs started once for the module; videos split into segments with the default key-frame detection
and with smoothing (scene cuts inside and at segment boundaries, a hidden face); segments read by seeking; a killed
worker; bad inputs."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

import emozoo
from emozoo.inference import expand_inputs
from emozoo.inference.ray import Segment, decode, encode, plan_tasks
from emozoo.inference.tracking import DEFAULT_DETECT_EVERY

MODEL = "emoxnetlite"  # the shipped weights: every worker loads them by name, as on a real cluster


def records(preds):
    return [p.as_dict() for p in preds]


def by_source_frame(rows):
    return sorted(rows, key=lambda r: (r["source"], -1 if r["frame"] is None else r["frame"]))


def write_video(path, frames, fourcc="MJPG", face=None, cuts=(), hidden=range(0)):
    """``frames`` frames of 320x240 at 10 fps, the face moving right 4 pixels a frame (gone in the ``hidden`` frames)
    over a grey that changes with the frame number (so every frame differs), and another scene from each frame of
    ``cuts`` on (white, then dark, then white...)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (320, 240))
    for i in range(frames):
        scene = sum(i >= c for c in cuts)
        frame = np.full((240, 320, 3), (40 + 3 * i) % 256 if scene == 0 else 250 if scene % 2 else 110, np.uint8)
        if face is not None and i not in hidden:
            frame[50:190, 10 + 4 * i:150 + 4 * i] = face
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """8 variants of the astronaut photo, a corrupt JPEG, a text file named .jpg, and a 40-frame video whose face is
    hidden in frames 6-10, with scene cuts at 17 (inside a segment of 12 frames) and 24 (where one starts)."""
    d = tmp_path_factory.mktemp("ray-inputs")
    photo = Image.open(REPO / "examples" / "astronaut.jpg").convert("RGB").resize((256, 256), Image.BILINEAR)
    for i in range(8):
        variant = photo.rotate(4 * i)
        (variant.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else variant).save(d / f"photo{i}.jpg", quality=90)
    (d / "corrupt.jpg").write_bytes((d / "photo0.jpg").read_bytes()[:500])
    (d / "notes.jpg").write_text("not a picture")
    face = cv2.cvtColor(np.asarray(photo.crop((60, 5, 164, 109)).resize((140, 140))), cv2.COLOR_RGB2BGR)
    write_video(d / "clip.avi", 40, face=face, cuts=(17, 24), hidden=range(6, 11))
    return d


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'emozoo[ray]'")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")  # never a running cluster
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def single(folder):
    """One process, with the default settings: detection on key frames, every frame classified, no smoothing."""
    return records(emozoo.predict(folder, MODEL, detector="haar"))


def run(folder, **kwargs):
    from emozoo.inference.ray import predict_ray

    kwargs = {"model": MODEL, "detector": "haar", "num_workers": 2, "segment_frames": 8, "images_per_task": 3, **kwargs}
    return records(predict_ray(folder, **kwargs))


def test_two_workers_give_the_single_process_records_row_by_row(cluster, folder, single):
    tasks = plan_tasks(expand_inputs(folder), 1, 8, 3, DEFAULT_DETECT_EVERY)  # 8 frames: 12, two key-frame periods
    assert [(t["start"], t["stop"]) for t in tasks if t["source"].endswith(".avi")] == [(0, 12), (12, 24), (24, 36),
                                                                                        (36, -1)]
    got = run(folder)
    assert by_source_frame(got) == by_source_frame(single)
    assert got == single  # and in the same order: input order, frames ascending
    video = [r for r in got if r["frame"] is not None]
    tracks = [[f["track"] for f in r["faces"]] for r in video]
    assert [r["frame"] for r in video] == list(range(40))
    # key frames 0, 6 (no face), 12: the face of 0 shows in frames 1-2, that of 12 in 9-11; the same track after it,
    # new numbers after each cut (key frames 16 and 17, 23 and 24)
    assert tracks == [[0]] * 3 + [[]] * 6 + [[0]] * 8 + [[1]] * 7 + [[2]] * 16
    errors = {os.path.basename(r["source"]): r["error"] for r in got if r["error"]}
    assert set(errors) == {"corrupt.jpg", "notes.jpg"}                         # per-row errors, not a dead job
    assert "truncated or corrupt image" in errors["corrupt.jpg"] and "not an image" in errors["notes.jpg"]


def test_smoothing_and_every_other_frame_over_segments_and_a_model_object_travels(cluster, folder):
    torch.manual_seed(0)
    model = emozoo.create(MODEL)  # random weights, sent to the workers through the object store
    smooth = records(emozoo.predict(folder / "clip.avi", model, detector="haar", every=2, smooth=0.6))
    tasks = plan_tasks(expand_inputs(folder / "clip.avi"), 2, 8, 3, DEFAULT_DETECT_EVERY)
    assert [(t["start"], t["stop"]) for t in tasks] == [(0, 12), (12, 24), (24, 36), (36, -1)]
    got = run(folder / "clip.avi", model=model, every=2, smooth=0.6)
    assert got == smooth and [r["frame"] for r in got] == list(range(0, 40, 2))
    raw = records(emozoo.predict(folder / "clip.avi", model, detector="haar", every=2))
    assert [r["faces"] for r in raw] != [r["faces"] for r in got]  # the smoothing did change the scores


def test_no_more_actors_than_tasks(cluster, folder, single, monkeypatch):
    sizes = []
    real = cluster.data.ActorPoolStrategy

    def recording(*args, **kwargs):
        sizes.append(kwargs.get("size"))
        return real(*args, **kwargs)

    monkeypatch.setattr(cluster.data, "ActorPoolStrategy", recording)
    photo = folder / "photo0.jpg"
    got = run(photo, num_workers=2)  # one photo, one task: one actor loads the model, not two
    assert sizes == [1] and got == [r for r in single if r["source"] == str(photo)]


def test_a_worker_killed_on_its_first_batch_loses_no_row(cluster, folder, tmp_path):
    marker = tmp_path / "killed-once"

    class DiesOnce:
        """Haar, but the first detect() anywhere kills its worker process (as an OOM kill or a segfault would)."""

        def __init__(self, marker):
            self.marker, self.inner = str(marker), None

        def detect(self, image):
            if not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os._exit(1)
            if self.inner is None:
                self.inner = emozoo.create_detector("haar")
            return self.inner.detect(image)

    got = run(folder, detector=DiesOnce(marker), every=3)  # every 3rd frame: segments of 18 frames
    assert marker.exists()
    want = records(emozoo.predict(folder, MODEL, detector="haar", every=3))
    assert by_source_frame(got) == by_source_frame(want)


def test_cli_ray_matches_the_plain_run(cluster, cli, folder):
    plain = cli("predict", folder, "--detector", "haar", "--json")
    spread = cli("predict", folder, "--detector", "haar", "--json", "--ray", "--ray-workers", 2)
    assert plain.exit_code == spread.exit_code == 1  # two bad inputs
    out = [json.loads(r.stdout) for r in (plain, spread)]
    assert out[0] == out[1] and len(out[0]) == 8 + 2 + 40


def test_cli_ray_without_a_running_cluster_is_one_line(cli, folder, monkeypatch):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'emozoo[ray]'")
    import ray

    def no_cluster(address=None, **kwargs):  # what ray.init("auto") raises when no cluster runs here
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by "
                              "setting `--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the module's cluster must not be joined instead
    monkeypatch.setattr(ray, "init", no_cluster)
    result = cli("predict", folder / "photo0.jpg", "--detector", "haar", "--ray=auto")
    assert result.exit_code == 1 and "ray start --head" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_ray_client_addresses_are_refused_in_one_line(cli, folder):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'emozoo[ray]'")
    result = cli("predict", folder / "photo0.jpg", "--ray=ray://127.0.0.1:10001")
    assert result.exit_code == 1 and "--ray=auto" in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_ray_refuses_the_camera_and_annotate(cli, folder, tmp_path):
    result = cli("predict", folder, "--annotate", tmp_path, "--ray")
    assert result.exit_code == 2 and "--ray reads files on its workers" in result.output


def test_without_ray_installed_the_option_says_how_to_install_it(cli, folder, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    result = cli("predict", folder / "photo0.jpg", "--detector", "haar", "--ray")
    assert result.exit_code == 1 and "pip install 'emozoo[ray]'" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("fourcc,ext", [("MJPG", "avi"), ("mp4v", "mp4")])
def test_a_segment_read_by_seeking_has_exactly_the_frames_read_in_sequence(tmp_path, fourcc, ext):
    path = write_video(tmp_path / f"ramp.{ext}", 40, fourcc)
    cap, sequence = cv2.VideoCapture(str(path)), []
    while (frame := cap.read())[0]:
        sequence.append(cv2.cvtColor(frame[1], cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(sequence) == 40
    segment = Segment(str(path), 18, 30, 3)  # both ends included: the next segment's first frame ends this one
    frames = list(segment)
    assert [i for i, _, _ in frames] == [18, 21, 24, 27, 30] and not segment.ended
    assert all(np.array_equal(image, sequence[i]) for i, _, image in frames)
    assert frames[0][1] == pytest.approx(1.8)
    segment = Segment(str(path), 36, 42, 3)  # the video ends before frame 42: one process stops there too
    assert [i for i, _, _ in segment] == [36, 39] and segment.ended
    segment = Segment(str(path), 32, -1, 1)
    tail = list(segment)
    assert [i for i, _, _ in tail] == list(range(32, 40)) and segment.ended
    assert all(np.array_equal(image, sequence[i]) for i, _, image in tail)


def test_records_travel_with_every_float_exact(folder):
    pred = emozoo.predict(folder / "photo1.jpg", MODEL, detector="haar")[0]
    assert pred.faces and decode(encode(pred)) == pred


@pytest.mark.slow
def test_an_input_that_kills_every_worker_becomes_an_error_and_the_run_goes_on(cluster, folder, single):
    class KillsOnWide:
        """Haar, but an image 300 pixels wide kills its worker process every time (as a decoder segfault would)."""

        def __init__(self):
            self.inner = None

        def detect(self, image):
            if image.shape[1] == 300:
                os._exit(1)
            self.inner = self.inner or emozoo.create_detector("haar")
            return self.inner.detect(image)

    from emozoo.inference.ray import predict_ray

    killer = folder.parent / "killer"
    killer.mkdir()
    Image.new("RGB", (300, 200)).save(killer / "wide.png")
    inputs = [folder, killer, folder / "photo0.jpg", folder / "photo1.jpg"]
    got = records(predict_ray(inputs, MODEL, detector=KillsOnWide(), num_workers=2, segment_frames=8, images_per_task=3,
                              max_retries=1))
    tasks = plan_tasks(expand_inputs(inputs), 1, 8, 3)
    assert [os.path.basename(t["source"]) for t in tasks if t["task"] == tasks[-2]["task"]] == ["photo7.jpg", "wide.png",
                                                                                                "photo0.jpg"]
    # photo7 and photo0 are run again, alone, and photo1 (the next task) waits for them: all in input order
    want = {r["source"]: r for r in single}
    assert got[:len(single)] == single and got[-3]["source"] == str(killer / "wide.png")
    assert got[-2:] == [want[str(folder / "photo0.jpg")], want[str(folder / "photo1.jpg")]]
    assert "the Ray worker failed on this input after its retries" in got[-3]["error"]
