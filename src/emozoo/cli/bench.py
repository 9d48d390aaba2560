"""``emozoo bench`` (latency, throughput and cost per backend) and ``emozoo export`` (ONNX, int8)."""
from __future__ import annotations

import re
from pathlib import Path

import click

from ..errors import ConfigError
from .output import echo_json


def _int_list(value: str, option: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise ConfigError(f"{option} takes positive integers separated by commas, e.g. 1,32; got {value!r}")
    return out


def _backends(value: str) -> list[str]:
    from ..bench import BACKENDS

    names = list(BACKENDS) if value.strip() == "all" else [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise ConfigError(f"unknown backend {', '.join(unknown) or value!r}; choose from {', '.join(BACKENDS)} "
                          "(comma-separated) or all")
    return names


def _input_size(value: str | None) -> tuple[int, int, int] | None:
    if not value:
        return None
    parts = re.split(r"[x,]", value.lower())
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--input-size is CxHxW, e.g. 1x48x48 or 3x224x224; got {value!r}")
    return tuple(int(p) for p in parts)


def calibration_spec(given: str | None) -> tuple[str | None, bool]:
    """The data spec that calibrates int8 and checks ONNX exports, and whether it must be readable.

    A spec given on the command line must be (an unreadable one is an error); else
    :func:`emozoo.data.default_calibration_data`, and when that is None random inputs, which the report names.
    """
    if given:
        return given, True
    from ..data import default_calibration_data

    return default_calibration_data(), False


CALIBRATION_HELP = ("Data spec (as --data takes elsewhere) whose training faces calibrate int8 and check ONNX "
                    "exports; --data is the old name. Default: $EMOZOO_CALIBRATION_DATA if set, else the FER+ .npz "
                    "beside a source checkout ($EMOZOO_FERPLUS_NPZ) if it exists, else random normal inputs, which "
                    "the output says.")


@click.command("bench")
@click.argument("patterns", nargs=-1)
@click.option("--batch-size", "batch_sizes", default="1", show_default=True, help="Batch sizes, e.g. 1,32.")
@click.option("--threads", type=int, help="CPU threads for PyTorch, ONNX Runtime and the roofline [torch's].")
@click.option("--backend", "backends", default="eager", show_default=True,
              help="Comma-separated: eager, channels_last, compile, onnx, int8; or all.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--input-size", help="Input CxHxW instead of the model's own, e.g. 3x224x224.")
@click.option("--min-runs", default=10, show_default=True, help="Timed runs at least (after warm-up).")
@click.option("--max-time", default=3.0, show_default=True,
              help="Seconds of timed runs per row before stopping short of a stable median.")
@click.option("--target", default=0.02, show_default=True,
              help="Stop once the median's 95% confidence interval is within this fraction.")
@click.option("--calibration-data", "--data", "data_spec", metavar="SPEC",
              help=CALIBRATION_HELP)
@click.option("--roofline/--no-roofline", default=True, help="Measure the float32 peak for the roofline bound.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write an accuracy-against-latency PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False), help="Also write the rows to a CSV file.")
@click.option("--flip/--no-flip", default=None,
              help="Turn test-time flip on or off for emoxnet / emoxnetlite models [default: as published].")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
              help="Build architectures (random weights) with this argument, e.g. width=0.75 or "
                   "student='{\"backbone\": \"resnet10\", \"args\": {\"width\": 0.75}}'; repeatable.")
def bench_cmd(patterns, batch_sizes, threads, backends, device, input_size, min_runs, max_time, target, data_spec,
              roofline, plot, as_json, csv_file, flip, model_args):
    """Latency (median, p90, p99 per batch), throughput, size, MACs and memory of models matching PATTERNS.

    PATTERNS are model names (arch.tag for published weights, an architecture for random weights,
    a folder, local-dir:, hf-hub: or timm/ names) or fnmatch patterns ('emoxnet*'); the default is
    every published weight. A model or backend that fails is reported in its row; the rest go on.
    """
    import torch

    from .. import bench as B
    from .._builder import list_models
    from .train import parse_kv

    if as_json and csv_file:
        raise ConfigError("give --json or --csv FILE, not both")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch; use --device cpu")
    sizes, names_ = _int_list(batch_sizes, "--batch-size"), _backends(backends)
    shape = _input_size(input_size)
    model_args = parse_kv(model_args)
    threads = threads or torch.get_num_threads()
    names = B.resolve_names(patterns or list_models(pretrained=True))
    data_spec, required = calibration_spec(data_spec)
    log = (lambda msg: click.echo(msg, err=True))
    peak = None
    if roofline:
        peak = B.measure_peak_flops(threads, device)
    machine = B.machine_info(threads, device)
    if not as_json:
        click.echo(f"machine: {machine['cpu']}, {machine['cores']} cores, {threads} thread(s), torch "
                   f"{machine['torch']}, load average {machine['load_average']}")
        if peak:
            click.echo(f"float32 peak (best 512-2048 square matmul, {threads} thread(s)): {peak / 1e9:.1f} GFLOP/s")
    rows = []
    for name in names:
        if not as_json:
            log(f"benchmarking {name} ({', '.join(names_)}; batch {', '.join(map(str, sizes))}) ...")
        rows += B.bench_model(name, backends=names_, batch_sizes=sizes, threads=threads, device=device,
                              input_shape=shape, peak_flops=peak, min_runs=min_runs, max_time=max_time,
                              target=target, data_spec=data_spec, flip=flip, model_args=model_args,
                              require_data=required)
    best = B.best_backends(rows)
    points = B.pareto_points(rows)
    if csv_file:
        B.write_csv(rows, csv_file)
    if plot:
        B.plot_pareto(points, plot, title=f"Accuracy against latency ({machine['cpu']}, {threads} thread(s))")
    if as_json:
        echo_json({"machine": machine, "peak_gflops": peak and peak / 1e9,
                   "results": [r.as_dict() for r in rows], "best_backend": best, "pareto": points})
    else:
        click.echo(B.format_table(rows))
        click.echo(B.TABLE_LEGEND)
        for model, per_batch in best.items():
            click.echo(f"best backend for {model}: " + ", ".join(f"{b} at batch {bs}" for bs, b in per_batch.items()))
        if csv_file:
            click.echo(f"rows: {csv_file}")
        if plot:
            click.echo(f"accuracy against latency: {plot}")
    _fail_if_unloaded(rows)


def _fail_if_unloaded(rows) -> None:
    """Exit 1 (after every row is shown) when a model could not be loaded at all: nothing was measured for it."""
    failed = list(dict.fromkeys(r.model for r in rows if r.error and r.params is None))
    if failed:
        first = next(r.error for r in rows if r.model == failed[0])
        raise ConfigError(f"{len(failed)} model(s) could not be loaded, so nothing was measured for them: "
                          f"{', '.join(failed)} ({failed[0]}: {first})")


@click.command("export")
@click.argument("name")
@click.option("--format", "fmt", default="onnx", show_default=True, type=click.Choice(["onnx"]))
@click.option("--out", type=click.Path(dir_okay=False), help="Output file [NAME.onnx, or NAME.int8.onnx].")
@click.option("--int8", is_flag=True, help="Quantize to int8 (ONNX Runtime, static, calibrated on faces).")
@click.option("--calibration-data", "--data", "data_spec", metavar="SPEC",
              help=CALIBRATION_HELP)
@click.option("--json", "as_json", is_flag=True)
def export_cmd(name, fmt, out, int8, data_spec, as_json):
    """Export model NAME to ONNX and check that ONNX Runtime reproduces PyTorch.

    float32: the softmax probabilities must match PyTorch within 1e-4 on random inputs and training
    faces; int8: the top-1 class must agree on at least 90% of them (its accuracy change:
    emozoo eval NAME --backend int8).
    """
    from .._builder import create
    from ..export import export_onnx

    model = create(name, pretrained=True)
    data_spec, required = calibration_spec(data_spec)
    if not out:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name.split(":")[-1]).name or "model")
        out = f"{stem}.int8.onnx" if int8 else f"{stem}.onnx"
    report = export_onnx(model, out, int8=int8, data_spec=data_spec, require_data=required)
    if as_json:
        echo_json(report.as_dict())
        return
    inputs = f"{report.n_random} random inputs" + (f" and {report.n_real} training faces" if report.n_real else "")
    click.echo(f"wrote {report.path} ({'int8' if int8 else 'float32'}, format {fmt})")
    if report.calibration:
        click.echo(f"int8 calibration: {report.calibration}")
    click.echo(f"ONNX Runtime vs PyTorch on {inputs}: max |prob diff| {report.max_abs_prob:.2g}, "
               f"max |logit diff| {report.max_abs_logit:.2g}, top-1 agreement {report.top1_agreement:.1%} "
               f"(required: {report.tolerance})")


COMMANDS = (bench_cmd, export_cmd)
