"""The ``README.md`` model card pushed with a model, generated from its ``config.json``.

The card opens with Hub metadata (library, tags, licence, datasets, metrics and a ``model-index`` of
the measured results), then describes the results, labels, input, architecture, training recipe,
how to load the model with emozoo, and the paper to cite.
"""
from __future__ import annotations

import json
from typing import Any

from ._config import ModelConfig

PAPER = "https://arxiv.org/abs/2106.16126"
CITATION = """@article{momin2021emoxnet,
  title   = {Recognizing Facial Expressions in the Wild using Multi-Architectural Representations based
             Ensemble Learning with Distillation},
  author  = {Momin, Rauf and others},
  journal = {arXiv preprint arXiv:2106.16126},
  year    = {2021}
}"""
#: config metric key -> (Hub metric id, column title)
METRIC_NAMES = {"accuracy": ("accuracy", "accuracy"), "macro_f1": ("f1", "macro F1"),
                "ece": ("ece", "ECE"), "n": ("n", "images")}


def model_card(config: ModelConfig, repo_id: str, params: int | None = None, notes: str | None = None) -> str:
    """The model card of ``config`` published as ``repo_id``: Hub metadata header plus Markdown body.

    ``notes`` (Markdown, e.g. what was tried and what each attempt gave) is added after the results.
    """
    return f"---\n{_metadata(config, repo_id).to_yaml()}\n---\n\n{_body(config, repo_id, params, notes)}"


def _results(config: ModelConfig) -> dict[str, dict[str, Any]]:
    """``{split: metrics}`` of the config's measured metrics (other keys, such as the command, are skipped)."""
    return {split: m for split, m in config.metrics.items() if isinstance(m, dict)}


def _dataset_name(config: ModelConfig) -> str | None:
    return config.dataset.partition(" (")[0].rstrip("/").rsplit("/", 1)[-1] if config.dataset else None


def _metadata(config: ModelConfig, repo_id: str):
    from huggingface_hub import EvalResult, ModelCardData

    dataset = _dataset_name(config)
    tags = ["emozoo", "facial-expression-recognition", "image-classification", "pytorch", "safetensors",
            config.architecture.replace("/", "-"), "arxiv:2106.16126"]
    if config.architecture == "emoxnet":
        tags.append("ensemble")
    elif config.architecture == "emoxnetlite":
        tags.append("knowledge-distillation")
    results = [
        EvalResult(task_type="image-classification", task_name="Facial expression recognition",
                   dataset_type=dataset or "custom", dataset_name=f"{dataset or 'custom'} {split}",
                   dataset_split=split, metric_type=METRIC_NAMES[key][0], metric_name=METRIC_NAMES[key][1],
                   metric_value=value)
        for split, metrics in _results(config).items()
        for key, value in metrics.items() if key in METRIC_NAMES and key != "n"
    ]
    return ModelCardData(library_name="emozoo", license=config.license or "unknown", tags=tags,
                         datasets=[dataset] if dataset else None, pipeline_tag="image-classification",
                         metrics=sorted({r.metric_type for r in results}) or None,
                         model_name=config.name or repo_id, eval_results=results or None)


def _body(config: ModelConfig, repo_id: str, params: int | None, notes: str | None = None) -> str:
    inp = config.input
    sections = [
        f"# {config.name or repo_id}\n\n{_describe(config)} for facial expression recognition, made with emozoo "
        f"after [Momin et al., 2021]({PAPER}). Classes: {len(config.label_names)}"
        + (f"; parameters: {params:,}." if params is not None else "."),
        "## Results\n\n" + _results_section(config),
        *([notes.strip()] if notes and notes.strip() else []),
        "## Labels\n\nOutput index and label, in the order of the model's logits:\n\n| index | label |\n| --- | --- |\n"
        + "\n".join(f"| {i} | {name} |" for i, name in enumerate(config.label_names)),
        f"## Input\n\nA face crop (the detected face box grown by {inp.crop_margin:g} of its size on each side), "
        f"resized to {inp.size[0]}x{inp.size[1]}, {inp.in_chans} channel(s) "
        f"({'grayscale' if inp.in_chans == 1 else 'RGB'}), scaled to [0, 1] and normalised with mean "
        f"{list(inp.mean)} and std {list(inp.std)}. `emozoo.face_transform(model)` does exactly this.",
        "## Architecture\n\n" + _architecture_section(config),
        "## Training recipe\n\n" + _recipe_section(config),
        "## Use it\n\n```bash\npip install emozoo" + "".join(f" {d}" for d in sorted(set(config.requires.values())))
        + f"\nemozoo pull {repo_id}            # into the Hugging Face cache; loads offline afterwards\n```\n\n"
        "```python\nimport torch\nimport emozoo\n\n"
        + (f'model = emozoo.create("{config.name}", pretrained=True).eval()   # shipped with emozoo: works offline\n'
           f'# or from the Hub: emozoo.create("hf-hub:{repo_id}", pretrained=True)\n' if config.name else
           f'model = emozoo.create("hf-hub:{repo_id}", pretrained=True).eval()   # "hf-hub:{repo_id}@<commit>" pins it\n')
        + "to_input = emozoo.face_transform(model)   # PIL image or uint8 array of a face crop -> tensor\n"
        "with torch.no_grad():\n    probs = model(torch.stack([to_input(face) for face in faces])).softmax(-1)\n"
        "labels = [model.config.label_names[i] for i in probs.argmax(-1)]\n```",
        "## Files\n\n"
        f"- `model.safetensors`: the state dict{_ensemble_note(config)} (sha256 `{config.weights_sha256}`, checked on load)\n"
        "- `config.json`: architecture and arguments, labels, input, data, recipe and metrics\n"
        "- `README.md`: this card, generated by `emozoo push` from `config.json`",
        "## Licence and data terms\n\n" + _terms_section(config),
        f"## Citation\n\n```bibtex\n{CITATION}\n```",
    ]
    return "\n\n".join(sections) + "\n"


#: what is known of the terms of the datasets emozoo reads, by the name used in ``config.dataset``
DATA_TERMS = {
    "ferplus": (
        "Trained on the FER2013 images (Goodfellow et al., 2013, the ICML 2013 'Challenges in Representation "
        "Learning' Kaggle competition) with the FER+ labels (Barsoum et al., 2016). FER2013 has no open "
        "licence: its images were gathered from web image search and it is distributed for research. The FER+ "
        "votes are published by Microsoft (github.com/microsoft/FERPlus) under the MIT licence. Weights "
        "learned from FER2013 inherit whatever limits its terms place on your use: check them before any "
        "commercial use."),
}


def _terms_section(config: ModelConfig) -> str:
    licence = (f"The weights are released under `{config.license}` (the licence field of `config.json`)."
               if config.license else "No licence is recorded for these weights (`license` in `config.json`).")
    terms = DATA_TERMS.get((_dataset_name(config) or "").lower())
    return licence + ("\n\n" + terms if terms else "")


def _describe(config: ModelConfig) -> str:
    args = config.model_args
    if config.architecture == "emoxnet":
        names = ", ".join(m["backbone"] for m in args["members"])
        flip = ", each averaged over the face and its mirror," if args.get("flip") else ""
        return f"An EmoXNet ensemble of {len(args['members'])} members ({names}){flip} fused by `{args['fusion']}`"
    if config.architecture == "emoxnetlite":
        flip = ", averaged over the face and its mirror at test time" if args.get("flip") else ""
        return (f"An EmoXNetLite student (`{args['student']['backbone']}`{flip}) trained by knowledge distillation "
                "from a larger teacher (see the training recipe)")
    return f"A `{config.architecture}` network"


def _ensemble_note(config: ModelConfig) -> str:
    if config.architecture != "emoxnet":
        return ""
    return " of the whole ensemble in one file: member i under `members.i.*`, the fusion under `fusion.*`"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _results_section(config: ModelConfig) -> str:
    results = _results(config)
    if not results:
        return "No metrics were measured for these weights (config.json has none)."
    columns = [k for k in METRIC_NAMES if any(k in m for m in results.values())]
    lines = ["| split | " + " | ".join(METRIC_NAMES[k][1] for k in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    lines += [f"| {split} | " + " | ".join(_fmt(m.get(k, "")) for k in columns) + " |" for split, m in results.items()]
    for split, metrics in results.items():
        for key, title in (("per_class_accuracy", "label"), ("members", "member")):
            if isinstance(metrics.get(key), dict):
                lines += ["", f"{key.replace('_', ' ').capitalize()} on {split}:", "",
                          f"| {title} | accuracy |", "| --- | --- |"]
                lines += [f"| {name} | {_fmt(value)} |" for name, value in metrics[key].items()]
    if config.metrics.get("command"):
        lines += ["", f"Measured with `{config.metrics['command']}`."]
    if config.name and _dataset_name(config):
        lines += ["", "Reproduce: " + ", ".join(
            f"`emozoo eval {config.name} --data {_dataset_name(config)} --split {split}`" for split in results) + "."]
    return "\n".join(lines)


def _architecture_section(config: ModelConfig) -> str:
    args = config.model_args
    if config.architecture == "emoxnet":
        lines = ["| member | backbone | arguments |", "| --- | --- | --- |"]
        lines += [f"| {i} | `{m['backbone']}` | `{json.dumps(m['args'])}` |" for i, m in enumerate(args["members"])]
        lines += ["", f"Fusion: `{args['fusion']}` with arguments `{json.dumps(args.get('fusion_args', {}))}`. "
                      "The members and the fusion are stored together in `model.safetensors`, and `config.json` "
                      "names them, so `emozoo.create` rebuilds the whole ensemble in one call."]
        if args.get("flip"):
            lines += ["", "Test-time flip (`flip: true`): each member scores the face and its mirror image in one "
                          "doubled batch and passes the mean of both logits and features to the fusion "
                          "(twice the members' MACs). `emozoo.create(..., flip=False)` turns it off (same weights)."]
    elif config.architecture == "emoxnetlite":
        student = args["student"]
        lines = [f"Student backbone `{student['backbone']}` with arguments `{json.dumps(student['args'])}`."]
        if args.get("flip"):
            lines += ["", "Test-time flip (`flip: true`): the student scores the face and its mirror image in one "
                          "doubled batch and returns the mean of both logits (twice the MACs). "
                          "`emozoo.create(..., flip=False)` turns it off (same weights)."]
    else:
        lines = [f"Backbone `{config.architecture}` with arguments `{json.dumps(args)}`."]
    if config.requires:
        lines += ["", "Needs these plugin packages: " + ", ".join(
            f"`{dist}` ({what})" for what, dist in sorted(config.requires.items())) + "."]
    return "\n".join(lines)


def _recipe_section(config: ModelConfig) -> str:
    if not config.recipe and not config.dataset:
        return "Not recorded in config.json."
    text = f"Data: {config.dataset or 'not recorded'}."
    if config.recipe:
        text += f"\n\n```json\n{json.dumps(config.recipe, indent=2, default=str)}\n```"
    return text
