"""``emozoo models list`` and ``emozoo info``."""
from __future__ import annotations

import click

from . import echo_json


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
    if data["architecture"] == "emoxnet":
        args = data["model_args"]
        lines.append(f"members:       {', '.join(m['backbone'] for m in args['members'])}")
        lines.append(f"fusion:        {args['fusion']}")
    elif data["architecture"] == "emoxnetlite":
        lines.append(f"student:       {data['model_args']['student']['backbone']} {data['model_args']['student']['args']}")
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
    click.echo("\n".join(lines))


COMMANDS = (models_group, info_cmd)


def model_info(name: str) -> dict:
    """Everything ``emozoo info`` shows, as a dict."""
    from .._builder import create, model_spec
    from .._pretrained import PRETRAINED, default_tag
    from .._profile import count_macs, count_params

    name = model_spec(name)  # a saved folder, as `emozoo eval` takes it
    model = create(name)
    cfg = model.config
    arch = cfg.architecture
    tag = name.partition(".")[2] or (default_tag(arch) if ":" not in name else None)
    if ":" in name:
        weights = name
    elif tag and f"{arch}.{tag}" in PRETRAINED:
        p = PRETRAINED[f"{arch}.{tag}"]
        weights = f"{p.name}: Hugging Face Hub {p.hf_hub_id}" + (", shipped with emozoo" if p.is_shipped() else "")
    else:
        weights = "none published (random initialisation)"
    d = cfg.to_dict()
    return {**d, "name": name, "weights_name": cfg.name, "params": count_params(model), "macs": count_macs(model, cfg.input.shape),
            "weights": weights}
