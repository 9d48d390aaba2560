"""``emozoo models list`` and ``emozoo info``."""
from __future__ import annotations

import click

from .output import echo_json


@click.group("models")
def models_group():
    """List and inspect models."""


@models_group.command("list")
@click.argument("pattern", default="*")
@click.option("--pretrained", is_flag=True, help="List published weights (arch.tag) instead of architectures.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_cmd(pattern, pretrained, as_json):
    """List model names matching PATTERN (fnmatch, e.g. 'resnet*')."""
    from .._builder import list_models

    names = list_models(pattern, pretrained=pretrained)
    if as_json:
        echo_json(names)
    elif names:
        click.echo("\n".join(names))
    else:
        click.echo(f"No {'pretrained ' if pretrained else ''}models match {pattern!r}.", err=True)


@click.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def info_cmd(name, as_json):
    """Describe model NAME: architecture, size, cost, labels, input and weights."""
    data = model_info(name)
    if as_json:
        echo_json(data)
        return
    inp = data["input"]
    lines = [
        f"name:          {data['name']}",
        f"architecture:  {data['architecture']}",
    ]
    lines.append(f"summary:       {data['summary']}")
    if data["model_args"].get("flip"):
        lines.append("test-time flip: on (face and mirror averaged; flip=False turns it off)")
    lines += [
        f"parameters:    {data['params']:,} ({data['params'] / 1e6:.2f} M)",
        f"MACs:          {data['macs']:,} ({data['macs'] / 1e6:.1f} M) at {inp['in_chans']}x{inp['size'][0]}x{inp['size'][1]}",
        f"labels:        {', '.join(data['label_names'])}",
        f"input:         {inp['in_chans']} channel(s), {inp['size'][0]}x{inp['size'][1]}, mean {inp['mean']}, "
        f"std {inp['std']}, face-crop margin {inp['crop_margin']}",
        f"weights:       {data['weights']}",
    ]
    for split, m in data["metrics"].items():
        if isinstance(m, dict) and "accuracy" in m:
            extra = f", macro-F1 {m['macro_f1']:.4f}" if "macro_f1" in m else ""
            lines.append(f"{split + ':':<15}accuracy {m['accuracy']:.4f}{extra} ({m.get('n', '?')} images)")
    if data["metrics"].get("command"):
        lines.append(f"measured with: {data['metrics']['command']}")
    lines.append(scores_line(data.get("calibration") or {}))
    click.echo("\n".join(lines))


def scores_line(calibration: dict) -> str:
    """What the model's scores are: ``softmax(logits / T)`` with its fitted temperature, or the raw softmax."""
    if "temperature" not in calibration:
        return "scores:        raw softmax (no temperature fitted; emozoo calibrate fits one)"
    where = " ".join(f"--{k} {calibration[k]}" for k in ("data", "split", "holdout") if calibration.get(k))
    return f"scores:        softmax(logits / T), T = {calibration['temperature']:.4g}" + (f" (fitted: {where})" if where else "")


COMMANDS = (models_group, info_cmd)


def model_info(name: str) -> dict:
    """Everything ``emozoo info`` shows, as a dict."""
    from .._builder import LOCAL_PREFIX, as_folder, create
    from .._models import architecture_cfg
    from .._profile import count_macs, count_params

    folder = as_folder(name)
    name = f"{LOCAL_PREFIX}{folder}" if folder is not None else name  # a saved folder, as `emozoo eval` takes it
    model = create(name)
    cfg = model.config
    arch_cfg = architecture_cfg(cfg.architecture)
    if ":" in name:
        weights = name
    else:
        tag = name.partition(".")[2] or arch_cfg.default_tag
        p = arch_cfg.pretrained.get(tag) if tag else None
        weights = ("none published (random initialisation)" if p is None else
                   f"{cfg.architecture}.{tag}: Hugging Face Hub {p.hf_hub_id}" + (", shipped" if p.is_shipped() else ""))
    d = cfg.to_dict()
    return {**d, "name": name, "weights_name": cfg.name, "summary": arch_cfg.description_of(cfg),
            "params": count_params(model), "macs": count_macs(model, cfg.input.shape), "weights": weights}
