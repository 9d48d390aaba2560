"""Bad inputs to `emozoo predict` and emozoo.predict (issue items 6, 12, 15, 17): each is refused with one
line that names the fix (an EmozooError; `Error: ...` and exit status 1 on the command line), or becomes
the error of the one input it concerns while the rest of the run goes on."""
import math

import numpy as np
import pytest
import torch
from conftest import REPO

import emozoo
from emozoo.errors import ConfigError, DataError, EmozooError, WeightsError

FACE = REPO / "examples" / "face.png"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return emozoo.create("emoxnetlite").eval()  # random weights


# -- the command line: refused before any work, on one line ------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--csv", "/nonexistent/x.csv"], "--csv /nonexistent/x.csv: the folder /nonexistent does not exist"),
    (["--csv", "/proc/version/x.csv"], "--csv /proc/version/x.csv: the folder /proc/version does not exist"),
    (["--annotate", "/proc/no-such-dir"], "--annotate /proc/no-such-dir: cannot create this folder"),
    (["--device", "potato"], "unknown device 'potato': use cpu, cuda, cuda:N or mps"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "device 'cuda"),
    (["--device", "mps"], "device 'mps': MPS (Apple GPU) is not available here; use device cpu"),
])
def test_cli_refuses_outputs_and_devices_it_cannot_use_before_any_work(cli, monkeypatch, args, message):
    if args[:2] == ["--device", "mps"] and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")
    monkeypatch.setattr("emozoo._builder.create", no_model)
    result = cli("predict", FACE, "--detector", "full", *args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines


@pytest.mark.parametrize("device,error", [("potato", ConfigError), ("cuda:99", ConfigError), (42, ConfigError)])
def test_api_refuses_unknown_or_missing_devices(model, device, error):
    with pytest.raises(error, match="device"):
        emozoo.predict([], model, detector="full", device=device)


# -- item 6: a detector plugin that fails or returns malformed faces ------------------------------------------
class Flaky:
    """Raises on the first image only."""

    def __init__(self):
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("model file vanished\nsecond line")
        return [emozoo.Face((0.0, 0.0, float(image.shape[1]), float(image.shape[0])))]


class Returns:
    def __init__(self, value):
        self.value = value

    def detect(self, image):
        return self.value


@pytest.mark.parametrize("detector,message", [
    (Flaky(), "face detector Flaky failed: RuntimeError: model file vanished second line"),
    (Returns(None), "face detector Returns returned a malformed face"),
    (Returns([(0, 0, 10, 10)]), "got tuple, not emozoo.Face"),
    (Returns([emozoo.Face((0, 0, math.nan, 10))]), "need 4 finite numbers"),
    (Returns([emozoo.Face((10, 10, 5, 20))]), "is empty: need x0 < x1 and y0 < y1"),
    (Returns([emozoo.Face((0, 0, 10))]), "need 4 finite numbers"),
    (Returns([emozoo.Face(("a", 0, 10, 10))]), "malformed face"),
])
def test_a_failing_detector_makes_that_image_an_error_and_the_run_goes_on(model, detector, message):
    image = np.full((40, 40, 3), 128, np.uint8)
    preds = emozoo.predict([image, image], model, detector=detector)
    assert preds[0].error.startswith("<array 0>: ") and message in preds[0].error and "\n" not in preds[0].error
    assert preds[0].faces == []
    if isinstance(detector, Flaky):
        assert preds[1].ok and len(preds[1].faces) == 1


def test_a_registered_detector_that_fails_is_named(model, user_registrations):
    emozoo.register_face_detector("broken-b", lambda: Returns(None))
    pred = emozoo.predict([np.zeros((20, 20, 3), np.uint8)], model, detector="broken-b")[0]
    assert "face detector 'broken-b' returned a malformed face" in pred.error


# -- item 15: non-finite models and float images --------------------------------------------------------------
def test_nan_weights_are_refused_naming_the_model_and_parameter():
    model = emozoo.create("emoxnetlite")
    name, param = next(iter(model.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    with pytest.raises(WeightsError, match=f"model emoxnetlite: parameter {name} holds NaN"):
        emozoo.predict([np.zeros((48, 48), np.uint8)], model, detector="full")


@pytest.mark.parametrize("field,value", [("mean", (math.nan,)), ("mean", (-math.inf,)), ("std", (math.inf,))])
def test_non_finite_input_normalisation_is_refused(field, value):
    from dataclasses import replace

    model = emozoo.create("emoxnetlite")
    model.config.input = replace(model.config.input, **{field: value})
    with pytest.raises(ConfigError, match="config.input mean .* must be finite, with std non-zero"):
        emozoo.predict([np.zeros((48, 48), np.uint8)], model, detector="full")


def test_non_finite_scores_become_that_input_s_error(model, monkeypatch):
    real = type(model).forward

    def forward(self, x):
        out = real(self, x)
        out[0] = float("nan")  # the first face of every batch
        return out
    monkeypatch.setattr(type(model), "forward", forward)
    preds = emozoo.predict([np.zeros((48, 48), np.uint8)] * 2, model, detector="full", batch_size=2)
    assert "the model emoxnetlite gave non-finite scores" in preds[0].error and preds[0].faces == []
    assert preds[1].ok and len(preds[1].faces) == 1


@pytest.mark.parametrize("image,message", [
    (np.full((48, 48, 3), 200.0, np.float32), "float pixels must be in [0, 1], got values from 200 to 200"),
    (torch.full((3, 48, 48), 600.0), "float pixels must be in [0, 1], got values from 600 to 600"),
    (np.full((48, 48), -0.5, np.float64), "got values from -0.5 to -0.5"),
    (np.full((48, 48), np.nan, np.float32), "NaN or infinite values"),
    (torch.full((1, 48, 48), math.inf), "NaN or infinite values"),
])
def test_face_transform_refuses_float_images_outside_0_1(model, image, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        emozoo.face_transform(model)(image)
    assert isinstance(info.value, EmozooError) and "divide" in str(info.value) or "uint8" in str(info.value)


def test_face_transform_takes_floats_in_0_1_as_the_uint8_image(model):
    image = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    to_input = emozoo.face_transform(model)
    assert torch.allclose(to_input(image.astype(np.float32) / 255), to_input(image), atol=1e-6)
    assert torch.allclose(to_input(torch.from_numpy(image)[None].float() / 255), to_input(image), atol=1e-6)
