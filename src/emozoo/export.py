"""ONNX export, int8 quantization and ONNX Runtime execution of emozoo models.

``export_onnx(model, "model.onnx")`` writes one self-contained ONNX file (torch's dynamo exporter,
batch dimension dynamic) and checks it: ONNX Runtime's outputs must match PyTorch's on random and
real face inputs, within :data:`FLOAT_TOLERANCE` for float32. ``int8=True`` also quantizes it
statically with ONNX Runtime (QDQ, int8 weights per channel, uint8 activations; the first convolution
stays float32), calibrated on
training faces; an int8 model cannot match float32 to 1e-4, so it is checked for top-1 agreement
(:data:`INT8_MIN_AGREEMENT`) and its accuracy change is measured by ``emozoo eval --backend int8``.

Needs the ``onnx`` extra: ``pip install "emozoo[onnx]"`` (onnx, onnxruntime, onnxscript).
"""
from __future__ import annotations

import contextlib
import io
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import DataError, EmozooError, ExportError

#: float32 ONNX vs PyTorch: largest allowed absolute difference of the output probabilities (softmax).
FLOAT_TOLERANCE = 1e-4
#: int8 ONNX vs float32 PyTorch: smallest allowed share of inputs with the same top-1 class.
INT8_MIN_AGREEMENT = 0.9
#: number of training faces used to calibrate int8 activations, and of random + real inputs checked.
CALIBRATION_FACES = 256
CHECK_INPUTS = 32


def require_onnx(*modules: str) -> None:
    """Raise a one-line :class:`EmozooError` unless ``modules`` (default: onnx, onnxruntime, onnxscript) import."""
    import importlib

    for module in modules or ("onnx", "onnxruntime", "onnxscript"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise EmozooError(f"ONNX export and ONNX Runtime need {module}: pip install \"emozoo[onnx]\"") from None


def sample_faces(model: nn.Module, n: int, data_spec: str | None = "ferplus", *,
                 required: bool = False) -> torch.Tensor | None:
    """``n`` training faces of ``data_spec`` as ``model``'s input batch, spread over the split; None when unreadable.

    The training split is used (``Training``, else ``train``): never validation or test images. With
    ``required`` an unreadable ``data_spec`` is a :class:`emozoo.DataError` instead of None.
    """
    if not data_spec:
        return None
    from .data import eval_transform, open_dataset

    config = getattr(model, "config", None)
    if config is None:
        return None
    reasons = []
    for split in ("Training", "train"):
        try:
            data = open_dataset(data_spec, split, transform=eval_transform(config.input))  # images only
        except (EmozooError, OSError, TypeError, ValueError) as exc:
            reasons.append(str(exc))
            continue
        if len(data) == 0:
            continue
        index = np.linspace(0, len(data) - 1, min(n, len(data))).astype(int)
        return torch.stack([data[int(i)][0] for i in index])
    if required:
        why = reasons[0] if reasons else "its training split is empty"
        raise DataError(f"calibration data {data_spec}: no training faces can be read ({why})")
    return None


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how closely ONNX Runtime reproduces PyTorch."""

    path: str
    int8: bool
    #: largest absolute difference of probabilities and of logits, over every checked input
    max_abs_prob: float
    max_abs_logit: float
    #: share of checked inputs whose top-1 class is the same as PyTorch's
    top1_agreement: float
    n_random: int
    n_real: int
    tolerance: str
    calibration: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _export_fp32(model: nn.Module, path: Path, shape: tuple[int, ...]) -> None:
    require_onnx()
    example = torch.randn(2, *shape)
    batch = torch.export.Dim("batch", min=1, max=4096)
    quiet = io.StringIO()  # the exporter prints its progress
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: batch},), external_data=False, verbose=False)
    except Exception as exc:  # the exporter wraps the cause in several layers; show the innermost in one line
        while exc.__cause__ is not None:
            exc = exc.__cause__
        lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
        cause = f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__} ({cause}); "
                          "run the model in PyTorch (--backend eager) or make its forward exportable") from None


def _quantize(fp32: Path, out: Path, calibration: torch.Tensor) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": b.numpy()} for b in calibration.split(32)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32), str(pre))
        except TypeError:
            # onnxruntime's symbolic shape inference has no rule for some ops (ReduceLogSumExp, which the
            # mean_prob fusion exports to) and fails on them; ONNX's own shape inference covers a CNN's graph.
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=_first_conv(pre))


def _first_conv(path: Path) -> list[str]:
    """The name of the graph's first Conv node, kept in float32 by int8 quantization.

    The stem convolution sees the raw one-channel face; quantizing it cost EmoXNetLite 1.5 points of
    PublicTest accuracy (81.00 % against 82.52 % in float32), keeping it in float32 costs none
    (82.89 %) and no measurable time (it is one of 12 convolutions).
    """
    import onnx

    first = next((node.name for node in onnx.load(str(path)).graph.node if node.op_type == "Conv"), None)
    return [first] if first else []


def ort_session(path: str | Path, threads: int | None = None, device: str = "cpu"):
    """An ONNX Runtime ``InferenceSession`` on ``threads`` intra-op threads (one inter-op thread)."""
    require_onnx("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EmozooError("this onnxruntime has no CUDA provider: pip install onnxruntime-gpu")
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


class OnnxRuntimeModel(nn.Module):
    """An exported model run by ONNX Runtime behind the ``nn.Module`` interface (inputs and outputs are tensors).

    It keeps the original ``config``, so ``emozoo eval`` and ``face_transform`` work unchanged.
    """

    def __init__(self, path: str | Path, config=None, threads: int | None = None, device: str = "cpu"):
        super().__init__()
        self.path = str(path)
        self.session = ort_session(path, threads, device)
        self.input_name = self.session.get_inputs()[0].name
        self.config = config
        # predict_logits() finds the device through the parameters; this one is empty
        self._device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def run_numpy(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run_numpy(x.detach().float().cpu().contiguous().numpy()))


def export_onnx(model: nn.Module, path: str | Path, *, int8: bool = False, data_spec: str | None = "ferplus",
                input_shape: tuple[int, ...] | None = None, check: bool = True, strict: bool = True,
                require_data: bool = False) -> ExportReport:
    """Export ``model`` to ONNX at ``path`` (float32, or int8 with ``int8=True``) and check it against PyTorch.

    Inputs checked: :data:`CHECK_INPUTS` random normal inputs plus as many training faces of
    ``data_spec`` (when it can be read). int8 activations are calibrated on
    :data:`CALIBRATION_FACES` training faces of ``data_spec`` (random inputs when none can be read:
    the report says which). Raises :class:`ExportError` when the check fails; with ``strict=False``
    a low int8 agreement is only reported (a float32 mismatch always raises). With ``require_data`` an
    unreadable ``data_spec`` is a :class:`emozoo.DataError` rather than a fall-back to random inputs.
    """
    model = model.eval()
    shape = tuple(input_shape or model.config.input.shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    faces = sample_faces(model, CALIBRATION_FACES if int8 else CHECK_INPUTS, data_spec, required=require_data)
    real = None if faces is None else faces[torch.linspace(0, len(faces) - 1, min(CHECK_INPUTS, len(faces))).long()]
    calibration = ""
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx" if int8 else path
        _export_fp32(model, fp32, shape)
        if int8:
            if faces is None:
                faces = torch.randn(CALIBRATION_FACES, *shape)
                calibration = "random normal inputs (no training faces found)"
            else:
                calibration = f"{len(faces)} training faces of {data_spec}"
            _quantize(fp32, path, faces)
    inputs = [torch.randn(CHECK_INPUTS, *shape, generator=torch.Generator().manual_seed(0))]
    if real is not None:
        inputs.append(real)
    tolerance = (f"top-1 agreement >= {INT8_MIN_AGREEMENT:.0%} with float32 PyTorch" if int8
                 else f"max |probability difference| <= {FLOAT_TOLERANCE:.0e}")
    report = ExportReport(str(path), int8, 0.0, 0.0, 1.0, CHECK_INPUTS, 0 if real is None else len(real), tolerance,
                          calibration)
    if not check:
        return report
    runner = OnnxRuntimeModel(path)
    with torch.inference_mode():
        ref = torch.cat([model(x) for x in inputs]).float()
    got = torch.cat([runner(x) for x in inputs])
    report.max_abs_logit = (got - ref).abs().max().item()
    # the raw softmax of both backends (T = 1): this compares the exported graph with PyTorch, and a fitted
    # temperature, applied to both alike outside the graph (emozoo.calibration), would change neither's argmax
    report.max_abs_prob = (got.softmax(1) - ref.softmax(1)).abs().max().item()
    report.top1_agreement = (got.argmax(1) == ref.argmax(1)).float().mean().item()
    if int8 and strict and report.top1_agreement < INT8_MIN_AGREEMENT:
        raise ExportError(f"{path}: int8 top-1 agrees with PyTorch on {report.top1_agreement:.0%} of inputs "
                          f"(< {INT8_MIN_AGREEMENT:.0%}); export float32 (drop --int8) for this model")
    if not int8 and report.max_abs_prob > FLOAT_TOLERANCE:
        raise ExportError(f"{path}: ONNX Runtime's probabilities differ from PyTorch's by {report.max_abs_prob:.2g} "
                          f"(> {FLOAT_TOLERANCE:.0e}); please report it with the model name")
    return report


def onnx_model(model: nn.Module, *, int8: bool = False, data_spec: str | None = "ferplus", threads: int | None = None,
               directory: str | Path | None = None) -> OnnxRuntimeModel:
    """``model`` exported (and checked) to ONNX and loaded in ONNX Runtime; the file stays in ``directory`` if given."""
    with tempfile.TemporaryDirectory(prefix="emozoo-onnx-") as tmp:  # the session keeps the model in memory
        path = Path(directory or tmp) / ("model.int8.onnx" if int8 else "model.onnx")
        export_onnx(model, path, int8=int8, data_spec=data_spec)
        return OnnxRuntimeModel(path, getattr(model, "config", None), threads)
