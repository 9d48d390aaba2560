"""Scoring a model under its dataset's protocol: PyTorch or ONNX Runtime, each ensemble member too."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import Subset

from .. import errors
from .._builder import create
from ..builtins.emoxnet import EmoXNet
from ..calibration import probabilities, temperature
from ..data import eval_transform
from ..data.corruptions import canonical
from ..metrics import calibration_metrics, classification_metrics, paired_test, plot_confusion, plot_reliability, reliability
from ..train import predict_logits
from .fusion import member_outputs
from .splits import open_holdout, open_split, open_votes, validation_record


@torch.no_grad()
def evaluate_model(model: str | nn.Module, data_spec: str, split: str, *, batch_size: int = 256,
                   members: bool = True, plot: str | None = None, progress: bool = True,
                   backend: str = "eager", flip: bool | None = None, holdout: float | None = None,
                   corrupt: str | Sequence[str] | None = None, seed: int = 0, limit: int | None = None,
                   against: str | None = None) -> dict:
    """Score a model under its dataset's protocol; for an EmoXNet also each member.

    ``flip`` turns test-time flip on or off when ``model`` is a name or folder of an emoxnet or
    emoxnetlite (``None``: as saved); the result still carries the name as given.

    ``backend="onnx"`` or ``"int8"`` scores the model exported to ONNX (int8: statically quantized,
    calibrated on the data's training split) and run by ONNX Runtime; members are then not scored, and
    ``eager_accuracy`` and ``accuracy_change`` compare it with the PyTorch model on the same images.

    ``holdout`` scores only the part of ``split`` that runs trained with ``--holdout`` that fraction kept
    aside: the validation split every choice is made on, never PublicTest.

    The scores are the model's calibrated probabilities, ``softmax(logits / T)`` with the temperature in its
    config (``temperature``; 1 when none was fitted): ``ece``, ``nll``, ``brier`` and, for FER+, ``vote_ce``
    (against the annotators' votes) measure them, and ``before`` holds the same measures of the raw softmax
    (``T = 1``). Accuracy does not depend on ``T``. ``plot`` also writes a reliability diagram, before and
    after, beside the confusion matrix: :func:`reliability_path`.
    With ``holdout`` the result names the validation split under ``validation``
    (:func:`~emozoo.workflows.splits.validation_record`).
    ``corrupt`` (``"KIND[:STRENGTH]"`` or a list, applied in that order; :mod:`emozoo.data.corruptions`) scores
    the faces as a camera or detector would spoil them, each face's random draws seeded by ``seed`` and its
    pixels; the result names them (``corrupt``, ``seed``). ``limit`` scores only the first N faces (quick runs).
    ``against`` (a name or folder) scores a second model, as saved, on the same faces (each through its own input
    transform, the same corruptions) and adds ``against``: its ``model`` and ``accuracy``, ``model_only`` and
    ``against_only`` (the faces only one of them gets right) and ``p_value`` (:func:`~emozoo.metrics.paired_test`:
    whether the split can tell the two apart).
    """
    specs = [corrupt] if isinstance(corrupt, str) else list(corrupt or [])
    specs = [canonical(spec) for spec in specs]  # a bad kind or strength fails here, before any model is built
    name = model if isinstance(model, str) else (model.config.name or model.config.architecture)
    if against is not None and backend != "eager":
        raise errors.ConfigError("--against compares the two models in PyTorch: give it without --backend")
    other = create(against, pretrained=True).eval() if against is not None else None  # a wrong name fails first
    if isinstance(model, str):
        model = create(model, pretrained=True, flip=flip)
    elif flip is not None:
        raise errors.ConfigError("flip= applies to a model given by name or folder; build the module with it instead")
    model.eval()
    reference = model
    if backend != "eager":
        from ..export import onnx_model

        if backend not in ("onnx", "int8"):
            raise errors.ConfigError(f"unknown backend {backend!r}; choose eager, onnx or int8")
        model = onnx_model(model, int8=backend == "int8", data_spec=data_spec)
    if other is not None and other.config.label_names != model.config.label_names:
        raise errors.ConfigError(f"--against {against}: its labels {other.config.label_names} differ from "
                                 f"{name}'s {model.config.label_names}; compare models with the same labels")

    def faces(input_spec):  # the same faces, through a model's own input transform
        transform = eval_transform(input_spec, corrupt=specs, seed=seed)
        if holdout:
            data = open_holdout(data_spec, split, holdout, transform, model.config.label_names)
        else:
            data = open_split(data_spec, split, transform, model.config.label_names)
        return Subset(data, range(min(limit, len(data)))) if limit else data

    data = faces(model.config.input)
    member_logits = None
    if isinstance(model, EmoXNet):
        member_logits, features, targets = member_outputs(model, data, progress, batch_size)
        fused = model.fusion(member_logits, features)
    else:
        fused, targets = predict_logits(model, data, batch_size, progress=progress, desc="eval")
    labels = model.config.label_names
    votes = open_votes(data_spec, split, holdout, labels, n=len(targets), limit=limit)
    t = temperature(reference)
    result = {"model": name, "data": data_spec, "split": split,
              **({"holdout": holdout, "validation": validation_record(data_spec, split, holdout, len(data))}
                 if holdout else {}),
              **({"limit": limit} if limit else {}), **({"corrupt": specs, "seed": seed} if specs else {}),
              "backend": backend,
              "flip": bool(model.config.model_args.get("flip", False)),
              "temperature": t,
              **classification_metrics(probabilities(reference, fused), targets, labels, votes=votes),
              "before": calibration_metrics(fused.softmax(1), targets, votes=votes)}
    if backend != "eager":
        eager, _ = predict_logits(reference, data, batch_size, progress=progress, desc="eval eager")
        result["eager_accuracy"] = (eager.argmax(1) == targets).float().mean().item()
        result["accuracy_change"] = result["accuracy"] - result["eager_accuracy"]
    if other is not None:
        logits, other_targets = predict_logits(other, faces(other.config.input), batch_size, progress=progress,
                                               desc="eval against")
        assert torch.equal(other_targets, targets)
        right = fused.argmax(1) == targets
        other_right = logits.argmax(1) == targets
        test = paired_test(right, other_right)
        result["against"] = {"model": against, "accuracy": other_right.float().mean().item(),
                             "model_only": test["a_only"], "against_only": test["b_only"], "p_value": test["p_value"]}
    if member_logits is not None and members:
        result["members"] = {f"{i}:{n}": (member_logits[i].argmax(1) == targets).float().mean().item()
                             for i, n in enumerate(model.member_names)}
    if plot:
        plot_confusion(result["confusion"], labels, plot,
                       title=f"{name} on {split}{' under ' + ' + '.join(specs) if specs else ''}: "
                             f"accuracy {result['accuracy']:.4f}")
        result["reliability_plot"] = reliability_path(plot)
        plot_reliability({"before (T = 1)": reliability(fused.softmax(1), targets),
                          f"after (T = {t:.3g})": reliability(probabilities(reference, fused), targets)},
                         result["reliability_plot"], title=f"{name} on {split}" + (f" holdout {holdout:g}" if holdout else ""))
    return result


def reliability_path(plot: str) -> str:
    """Where ``emozoo eval --plot PATH`` writes its reliability diagram: ``PATH``'s stem + ``_reliability.png``."""
    from pathlib import Path

    path = Path(plot)
    return str(path.with_name(path.stem + "_reliability.png"))
