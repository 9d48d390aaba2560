"""``emozoo train``, ``emozoo distill``, ``emozoo ensemble`` and ``emozoo eval``."""
from __future__ import annotations

import difflib
import json
import shlex
import sys
from pathlib import Path

import click

from ..errors import ConfigError
from .output import echo_json

RECIPE_FIELDS = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "warmup_epochs", "label_smoothing",
                 "target", "augment", "batch_augment", "holdout", "limit", "seed", "swa_epochs", "swa_lr", "mixup",
                 "corrupt", "num_workers", "amp")


def recipe_options(f):
    """The recipe's options; each one left out keeps the value of ``--recipe FILE`` or the default."""
    opts = [
        click.option("--recipe", "recipe_file", type=click.Path(exists=True, dir_okay=False),
                     help="JSON recipe (see recipes/); options given on the command line override it."),
        click.option("--epochs", type=int), click.option("--batch-size", type=int, help="Global batch size."),
        click.option("--optimizer", type=click.Choice(["sgd", "adamw"])), click.option("--lr", type=float),
        click.option("--weight-decay", type=float), click.option("--warmup-epochs", type=float),
        click.option("--label-smoothing", type=float),
        click.option("--target", type=click.Choice(["soft", "majority"]),
                     help="FER+: train on the vote distribution (soft) or the majority label."),
        click.option("--augment", type=click.Choice(["none", "light", "default", "strong"])),
        click.option("--batch-augment/--no-batch-augment", default=None,
                     help="Augment whole batches on the training device (fast on a GPU) instead of each image "
                          "in loader workers."),
        click.option("--holdout", type=float, help="Fraction of the training split held back for fusion fitting."),
        click.option("--limit", type=int, help="Train on at most N images (smoke runs)."),
        click.option("--seed", type=int),
        click.option("--swa-epochs", type=int,
                     help="Save the mean of the weights after each of the last N epochs (stochastic weight "
                          "averaging; BatchNorm statistics recomputed) [0: off]."),
        click.option("--swa-lr", type=float,
                     help="With --swa-epochs: hold this learning rate over those epochs [0: cosine to the end]."),
        click.option("--mixup", type=float,
                     help="Blend each batch with a shuffled copy of itself, weight ~ Beta(A, A), targets alike; in "
                          "distill the teacher scores the blends (needs --teacher-online) [0: off]."),
        click.option("--corrupt", type=float,
                     help="Robustness: give each training image, with this probability, one random camera "
                          "corruption (blur, JPEG, downscaling, noise, low light, occlusion); an online teacher sees "
                          "the clean image (needs --batch-augment) [0: off]."),
        click.option("--num-workers", type=int),
        click.option("--amp/--no-amp", default=None, help="bfloat16 autocast on CUDA."),
        click.option("--data", "data_spec", help="Data spec: ferplus, a path, or name:path (see emozoo.data)."),
        click.option("--split", help="Training split [Training]."),
        click.option("--val-split", help="Validation split [holdout: the part of --split that --holdout keeps aside]; "
                                          "test splits are refused."),
        click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder."),
        click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --out."),
        click.option("--json", "as_json", is_flag=True, help="Log one JSON object per epoch on stdout."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


#: the keys of a recipe file besides ``recipe`` (the hyper-parameters), and what each holds
FILE_KEYS = {"model": str, "model_args": dict, "data": str, "split": str, "val_split": (str, type(None)),
             "teacher": str, "command": str, "recipe": dict}


def load_recipe_file(path: str | None) -> dict:
    """The recipe file at ``path`` (``{}`` without one); its keys and their types are checked here, the
    hyper-parameters under ``recipe`` when they are merged with the options."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the recipe as UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a JSON object (keys {', '.join(FILE_KEYS)}), not a "
                          f"{type(data).__name__}")
    for key, value in data.items():
        if key not in FILE_KEYS:
            close = difflib.get_close_matches(key, list(FILE_KEYS) + list(RECIPE_FIELDS), n=1)
            where = "" if not close else (f"; did you mean {close[0]!r}?" if close[0] in FILE_KEYS else
                                          f"; {close[0]!r} is a hyper-parameter: put it under \"recipe\"")
            raise ConfigError(f"{path}: unknown key {key!r}{where} (known keys: {', '.join(FILE_KEYS)})")
        if not isinstance(value, FILE_KEYS[key]) or isinstance(value, bool):
            want = {str: "a string", dict: "a JSON object"}.get(FILE_KEYS[key], "a string or null")
            raise ConfigError(f"{path}: {key} is {json.dumps(value)}; expected {want}")
    return data


def _merge(file_data: dict, options: dict, recipe_file: str | None = None):
    from ..train import Recipe

    values = dict(file_data.get("recipe", {}))
    values.update({k: v for k, v in options.items() if k in RECIPE_FIELDS and v is not None})
    return Recipe.from_dict(values, source=f"{recipe_file}: recipe" if recipe_file else "recipe")


def parse_kv(pairs) -> dict:
    """``key=value`` pairs; values are JSON when they parse (numbers, lists, true), else strings."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def make_logger(as_json: bool):
    def log(event: dict):
        if as_json:
            click.echo(json.dumps(event))
        elif event.get("event") == "epoch":
            val = event["val"]
            click.echo(f"epoch {event['epoch']}/{event['epochs']}  train loss {event['train']['loss']:.4f} "
                       f"acc {event['train']['accuracy']:.4f}  val acc {val.get('accuracy', float('nan')):.4f} "
                       f"f1 {val.get('macro_f1', float('nan')):.4f}  ({event['seconds']}s, "
                       f"eta {event['eta_seconds'] // 60}m{event['eta_seconds'] % 60:02d}s)", err=True)
        elif event.get("event") == "swa":
            val = event["val"]
            click.echo(f"weights averaged over the last {event['epochs_averaged']} epochs  val acc "
                       f"{val.get('accuracy', float('nan')):.4f} f1 {val.get('macro_f1', float('nan')):.4f}  "
                       f"({event['seconds']}s)", err=True)
        elif event.get("event") == "resume":
            click.echo(f"resuming after epoch {event['epoch']} (step {event['step']})", err=True)
        elif event.get("event") == "done":
            accuracy = event.get("accuracy")
            click.echo(f"saved {event['out']} " + (f"(val accuracy {accuracy:.4f})" if accuracy is not None
                                                     else "(no validation split)"), err=True)
    return log


def _check_grow(init, grow) -> None:
    if grow and not init:
        raise ConfigError("--grow widens the weights of --init; give --init NARROWER_MODEL as well")


def command_line() -> str:
    """The command being run, as typed (recorded in the recipe of what it trains)."""
    argv = click.get_current_context().meta.get("emozoo.argv", sys.argv[1:])
    return "emozoo " + " ".join(shlex.quote(a) for a in argv)


grow_option = click.option(
    "--grow", is_flag=True, help="With --init: the weights may be a narrower model of the same architecture (e.g. "
                                 "width 0.5 into 0.75); the new channels start so that the model computes what the "
                                 "narrow one does.")


@click.command("train")
@click.argument("model", required=False)
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
              help="Argument for the model constructor, e.g. width=0.5 or members='[\"resnet18\"]'.")
@click.option("--init", multiple=True,
              help="Start from these weights (a folder or name of the same architecture and arguments) instead of "
                   "random ones, e.g. to give a finished run a new lr cycle. Given once per branch, it starts a "
                   "model with branches from one model each (esr from resnet18s: base and branch 0 from the "
                   "first).")
@grow_option
@recipe_options
def train_cmd(model, model_args, init, grow, recipe_file, out_dir, resume, as_json, data_spec, split, val_split,
              **options):
    """Train MODEL (a backbone, emoxnetlite, timm/<arch>, ...) on --data; write --out.

    Without MODEL, --init WEIGHTS is trained further; on data with other classes (a folder of your own,
    RAF-DB's 7) every weight but the classifier head(s) is kept: fine-tuning, e.g.
    emozoo train --init emoxnetlite.ferplus --data folder:faces/ --out runs/mine

    Writes a checkpoint every epoch (--resume continues it) and, at the end, model.safetensors and
    config.json with the recipe and the validation metrics.
    """
    from .._builder import check_model_arg_names
    from ..workflows import train_model

    _check_grow(init, grow)
    init = init[0] if len(init) == 1 else list(init) or None
    file_data = load_recipe_file(recipe_file)
    model = model or file_data.get("model")
    if not model and not init:
        raise ConfigError("name the model to train (emozoo train resnet18 ...), give --recipe with a 'model', "
                          "or fine-tune published weights with --init (emozoo train --init emoxnetlite.ferplus ...)")
    args = {**file_data.get("model_args", {}), **parse_kv(model_args)}
    check_model_arg_names(args, "--model-arg", ["name", "pretrained", "revision", "label_names"])
    train_model(model, args, data_spec or file_data.get("data", "ferplus"), split or file_data.get("split", "Training"),
                val_split or file_data.get("val_split"), _merge(file_data, options, recipe_file), out_dir, resume=resume,
                log=make_logger(as_json), command=command_line(), init=init, grow=grow)


@click.command("distill")
@click.option("--teacher", required=False, help="Teacher: a model folder, local-dir:, hf-hub: or a pretrained name.")
@click.option("--student", help="Student architecture [emoxnetlite].")
@click.option("--student-arg", "student_args", multiple=True, metavar="KEY=VALUE")
@click.option("--loss", help="Distillation loss [kd_smooth].")
@click.option("--loss-arg", "loss_args", multiple=True, metavar="KEY=VALUE",
              help="Loss hyper-parameter, e.g. eps=0.1 T=2 alpha=0.9.")
@click.option("--init", help="Start the student from these weights (a folder or name of the same "
                             "architecture) instead of random ones.")
@grow_option
@click.option("--teacher-online/--teacher-cached", "teacher_online", default=None,
              help="The teacher sees every augmented batch the student sees (consistent teaching; one teacher "
                   "forward per step) instead of its outputs on the plain images being cached once [cached].")
@recipe_options
def distill_cmd(teacher, student, student_args, loss, loss_args, init, grow, teacher_online, recipe_file, out_dir,
                resume, as_json, data_spec, split, val_split, **options):
    """Distil a --teacher into a --student on --data (teacher outputs cached once, or --teacher-online)."""
    from .._builder import check_model_arg_names
    from ..workflows import distill_model

    _check_grow(init, grow)
    file_data = load_recipe_file(recipe_file)
    teacher = teacher or file_data.get("teacher")
    if not teacher:
        raise ConfigError("give --teacher (a model folder or name) or a --recipe with a 'teacher'")
    recipe = _merge(file_data, options, recipe_file)
    recipe.distill_loss = loss or file_data.get("recipe", {}).get("distill_loss") or "kd_smooth"
    recipe.distill_args = {**file_data.get("recipe", {}).get("distill_args", {}), **parse_kv(loss_args)}
    if teacher_online is not None:
        recipe.teacher_online = teacher_online
    student_args = {**file_data.get("model_args", {}), **parse_kv(student_args)}
    check_model_arg_names(student_args, "--student-arg", ["name", "pretrained", "revision", "label_names"])
    distill_model(teacher, student or file_data.get("model", "emoxnetlite"), student_args,
                  data_spec or file_data.get("data", "ferplus"), split or file_data.get("split", "Training"),
                  val_split or file_data.get("val_split"), recipe, out_dir, resume=resume,
                  log=make_logger(as_json), command=command_line(), init=init, grow=grow)


@click.command("ensemble")
@click.argument("members", nargs=-1, required=True)
@click.option("--fusion", help="Fusion of the members [default: mean_prob].")
@click.option("--fusion-arg", "fusion_args", multiple=True, metavar="KEY=VALUE")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--data", "data_spec", default="ferplus", show_default=True)
@click.option("--fit-split", default="Training", show_default=True,
              help="Split whose held-back part (the members' --holdout: the validation split) fits a learned fusion "
                   "and scores --search; test splits are refused.")
@click.option("--val-split", help="Split to score and record [holdout: the validation split, the part of --fit-split "
                                  "the members kept aside; none: no scoring]. A test split is scored as the model's "
                                  "one report, after every choice was made on the validation split.")
@click.option("--fit-epochs", default=30, show_default=True)
@click.option("--flip", is_flag=True, help="Test-time flip: each member averages the image and its mirror "
                                           "(twice the MACs).")
@click.option("--search", is_flag=True,
              help="Score every subset of the MEMBERS under each --search-fusions fusion on the training holdout "
                   "they all kept aside (never on a test split), then build the best one (ties: fewer members).")
@click.option("--search-fusions", default="mean_prob,mean_logit", show_default=True, metavar="F1,F2",
              help="With --search: the fusions to try (fusions without parameters; a learned one would be "
                   "fitted on the faces that score it).")
@click.option("--search-flip", is_flag=True,
              help="With --search: try every subset with and without test-time flip (the mirror doubles the MACs; "
                   "no --flip then: the search picks it).")
@click.option("--max-macs", type=click.FloatRange(min=1), metavar="M",
              help="With --search: pick the best subset among those of at most M multiply-accumulates per face at "
                   "batch 1 (flip included), e.g. 1.5e9; the table lists every subset's MACs and the best at any "
                   "cost is reported beside the pick.")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="With --search: draw every candidate's validation accuracy against its MACs into this PNG.")
@click.option("--show", default="20", show_default=True, metavar="N|all",
              help="With --search: print the N best candidates (the pick and the best at any cost always); all: every "
                   "one. --json holds every candidate.")
@click.option("--json", "as_json", is_flag=True)
def ensemble_cmd(members, fusion, fusion_args, out_dir, data_spec, fit_split, val_split, fit_epochs, flip, search,
                 search_fusions, search_flip, max_macs, plot, show, as_json):
    """Build an EmoXNet from trained MEMBERS with --fusion; write --out.

    Each member is a trained model folder or the name of published weights (e.g. emoxnetlite.ferplus: a distilled
    student joins as its network; the ensemble's --flip applies to every member).

    A learned fusion is fitted on the part of --fit-split that the members held back (their recipe's
    holdout: the validation split), never on test data. With --search, the subset of members and the
    fusion are chosen on that holdout too, the best candidates are printed (--show), and the pick is tested
    against the runner-up on the same faces. The saved
    config.json records the validation split under recipe.validation.
    """
    from ..workflows import build_ensemble, search_ensemble

    rows = best = None
    report: dict = {}
    if max_macs and not search:
        raise ConfigError("--max-macs limits what --search may pick: give it with --search")
    if search_flip and not search:
        raise ConfigError("--search-flip is a choice --search makes: give it with --search, or give --flip alone")
    if search_flip and flip:
        raise ConfigError("--search-flip tries every subset with and without flip: give it without --flip")
    if plot and not search:
        raise ConfigError("--plot draws the candidates of --search: give it with --search")
    if show != "all" and not (show.isdigit() and int(show) > 0):
        raise ConfigError(f"--show {show}: give a number of candidates to print (e.g. 20) or all")
    if plot:
        from .._plot import check_plot

        check_plot(plot)  # before the search: no matplotlib, or no folder for the file
    if search:
        if fusion or fusion_args:
            raise ConfigError("--search picks the fusion from --search-fusions; give --fusion without --search")
        fusions = [f.strip() for f in search_fusions.split(",") if f.strip()]
        rows, best = search_ensemble(list(members), data_spec, fit_split, fusions,
                                     flip="both" if search_flip else flip, progress=not as_json, max_macs=max_macs,
                                     report=report)
        if not as_json:
            click.echo(format_members(report))
            click.echo(format_search(rows, best, max_macs, report["best_any_cost"], runner_up=report["runner_up"],
                                     any_cost_test=report["best_any_cost_test"],
                                     show=None if show == "all" else int(show)))
        members, fusion, flip = best["members"], best["fusion"], best["flip"]
    result = build_ensemble(list(members), fusion or "mean_prob", parse_kv(fusion_args), out_dir, data_spec,
                            fit_split, val_split, fit_epochs, flip=flip, log=make_logger(False),
                            command=command_line())
    if plot:  # after the ensemble is saved, so nothing the search chose is lost to a plot
        from ..workflows.ensemble import plot_search

        plot_search(rows, best, plot, max_macs=max_macs, best_any_cost=report["best_any_cost"])
        click.echo(f"search plot: {plot}", err=as_json)
    if search:
        result["search"] = {"split": best["split"], "validation": best["validation"], "max_macs": max_macs, "best": best,
                            "rows": rows, **report}
    if as_json:  # the whole result as one JSON document; progress and the summary line go to stderr
        echo_json(result)


def format_search(rows: list[dict], best: dict, max_macs: float | None = None, best_any_cost: dict | None = None, *,
                  runner_up: dict | None = None, any_cost_test: dict | None = None, show: int | None = None) -> str:
    """The ``--search`` table: accuracy on the holdout, MACs, fusion, flip and members of each candidate, the pick
    marked *; with ``max_macs``, a line on the best at any cost (+ in the table) and how far above the pick; with
    ``runner_up`` / ``any_cost_test`` (:func:`~emozoo.workflows.search_ensemble`'s report), whether the split can
    tell the pick from them (exact McNemar test on the faces where they disagree). ``show``: only the best ``show``
    candidates, and the pick and the best at any cost wherever they rank (None: every one)."""
    from ..workflows.splits import describe_validation

    ranked = sorted(rows, key=lambda r: (-r["accuracy"], len(r["members"]), r["macs"]))
    budget = f", the best of at most {max_macs / 1e6:,.0f} M MACs marked *" if max_macs else ""
    lines = [f"member subsets and fusions on the validation split, {describe_validation(best['validation'])}, "
             f"best first{budget}:",
             f"  {'accuracy':>8}  {'M MACs':>8}  {'fusion':<12} {'flip':<4} members"]
    hidden, skipped = 0, False
    for i, r in enumerate(ranked):
        if show is not None and i >= show and r is not best and r is not best_any_cost:
            hidden, skipped = hidden + 1, True
            continue
        if skipped:  # rows left out just above this marked one
            lines.append("  ...")
            skipped = False
        lines.append(f"{'*' if r is best else '+' if r is best_any_cost else ' '} {r['accuracy']:>8.4f}  "
                     f"{r['macs'] / 1e6:>8,.0f}  {r['fusion']:<12} {'on' if r['flip'] else 'off':<4} "
                     f"{' '.join(r['members'])}")
    if hidden:
        lines.append(f"  ... {hidden} more candidates not shown ({len(ranked)} in all: --show all, or --json)")
    if max_macs and best_any_cost is not None and best_any_cost is not best:
        gain = (best_any_cost["accuracy"] - best["accuracy"]) * 100
        lines.append(f"+ the best at any cost, {best_any_cost['macs'] / 1e6:,.0f} M MACs: {gain:+.2f} points over *"
                     + (f" ({_paired(any_cost_test['any_cost_only'], any_cost_test['pick_only'], '+', any_cost_test['p_value'])})"
                        if any_cost_test else ""))
    if runner_up is not None:
        gap = (best["accuracy"] - runner_up["accuracy"]) * 100
        lines.append(f"* against the runner-up ({' '.join(runner_up['members'])}, flip "
                     f"{'on' if runner_up['flip'] else 'off'}, {runner_up['accuracy']:.4f}): {gap:+.2f} points "
                     f"({_paired(runner_up['pick_only'], runner_up['runner_up_only'], '*', runner_up['p_value'])})")
    return "\n".join(lines)


def _paired(first_only: int, second_only: int, first: str, p_value: float) -> str:
    """One comparison of two candidates on the same faces, in words."""
    verdict = "this split cannot tell them apart" if p_value >= 0.05 else "a difference this split can see"
    return (f"{first} alone right on {first_only} faces, the other on {second_only}; exact McNemar p = {p_value:.2f}: "
            f"{verdict}")


def format_members(report: dict) -> str:
    """Each member's validation accuracy and MACs, then how much each pair's errors coincide (lower: more diverse)."""
    lines = ["members on the validation split:", f"  {'accuracy':>8}  {'M MACs':>8}  member"]
    lines += [f"  {m['accuracy']:>8.4f}  {m['macs'] / 1e6:>8,.0f}  {m['member']}" for m in report["members"]]
    if report["diversity"]:
        lines += ["error overlap of each pair (of the faces either gets wrong, the share both get wrong; lower: more "
                  "diverse):"]
        lines += [f"  {d['overlap']:>8.3f}  {d['members'][0]} + {d['members'][1]}"
                  for d in sorted(report["diversity"], key=lambda d: d["overlap"])]
    return "\n".join(lines)


@click.command("unpack")
@click.argument("model")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite member folders under --out that already hold a model.")
@click.option("--json", "as_json", is_flag=True)
def unpack_cmd(model, out_dir, force, as_json):
    """Write each member of the ensemble MODEL as its own model folder under --out.

    E.g. `emozoo unpack emoxnet.ferplus --out runs/members` gives runs/members/0_resnet18, ...,
    which `emozoo eval`, `emozoo train --init` and `emozoo ensemble` take like any trained member.
    """
    from ..workflows import unpack_ensemble

    written = unpack_ensemble(model, out_dir, command=command_line(), overwrite=force)
    if as_json:
        echo_json({"model": model, "members": [str(p) for p in written]})
        return
    for path in written:
        click.echo(str(path))


@click.command("eval")
@click.argument("model")
@click.option("--data", "data_spec", default="ferplus", show_default=True)
@click.option("--split", default="PublicTest", show_default=True)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--members/--no-members", default=True, help="Also score each member of an ensemble.")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Write a confusion-matrix PNG there, and a reliability diagram (before and after calibration) "
                   "beside it, named STEM_reliability.png.")
@click.option("--backend", default="eager", show_default=True, type=click.Choice(["eager", "onnx", "int8"]),
              help="Run in PyTorch, or exported to ONNX Runtime (float32 or int8-quantized).")
@click.option("--flip/--no-flip", default=None,
              help="Turn test-time flip (face and mirror averaged) on or off for emoxnet / emoxnetlite "
                   "[default: as saved].")
@click.option("--holdout", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Score only the fraction of --split that training with --holdout kept aside (the validation "
                   "split every choice is made on), e.g. --split Training --holdout 0.1.")
@click.option("--corrupt", "corrupt", multiple=True, metavar="KIND[:STRENGTH]",
              help="Score the faces as a camera or detector spoils them, e.g. blur:1.5, jpeg:10, downscale:16, "
                   "rotate:20, mouth:0.2 (kinds and strengths: emozoo.data.corruptions); given again, the corruptions "
                   "apply in order to each face (--corrupt downscale:24 --corrupt jpeg:30).")
@click.option("--seed", default=0, show_default=True,
              help="Seed of the corruptions' random draws (noise, turn direction, shift, patch place).")
@click.option("--limit", type=click.IntRange(1), help="Score only the first N faces (quick runs).")
@click.option("--against", metavar="OTHER",
              help="Also score OTHER (a name or folder, as saved) on the same faces and say whether the split can "
                   "tell the two apart: the faces only one of them gets right, an exact McNemar p-value.")
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(model, data_spec, split, batch_size, members, plot, backend, flip, holdout, corrupt, seed, limit, against,
             as_json):
    """Evaluate MODEL (a folder, a name with weights, local-dir: or hf-hub:) on --data --split.

    With --corrupt, each face passes through the corruption after it is resized to the model's input and before
    it is normalised; the same face gets the same draws in every run (seeded by --seed and its pixels).
    benchmarks/robustness.py runs the whole list.
    """
    from ..workflows import evaluate_model

    result = evaluate_model(model, data_spec, split, batch_size=batch_size, members=members, plot=plot,
                            progress=not as_json, backend=backend, flip=flip, holdout=holdout,
                            corrupt=list(corrupt), seed=seed, limit=limit, against=against)
    if as_json:
        echo_json(result)
        return
    via = "" if backend == "eager" else f" via {backend} (ONNX Runtime)"
    part = f" first {limit}" if limit else ""
    spoilt = f" under {' + '.join(result['corrupt'])} (seed {seed})" if result.get("corrupt") else ""
    if holdout:
        from ..workflows.splits import describe_validation

        click.echo(f"{result['model']} on the validation split, {describe_validation(result['validation'])}{part}{via}{spoilt}")
    else:
        click.echo(f"{result['model']} on {result['data']} {result['split']}{part} ({result['n']} faces){via}{spoilt}")
    click.echo(f"accuracy  {result['accuracy']:.4f}\nmacro-F1  {result['macro_f1']:.4f}")
    click.echo(format_calibration(result))
    if "accuracy_change" in result:
        click.echo(f"accuracy change vs PyTorch float32 ({result['eager_accuracy']:.4f}): "
                   f"{100 * result['accuracy_change']:+.2f} points")
    for name, acc in result["per_class_accuracy"].items():
        click.echo(f"  {name:<10} {acc:.4f}  (n={result['support'][name]})")
    for name, acc in result.get("members", {}).items():
        click.echo(f"member {name}: accuracy {acc:.4f}")
    if "against" in result:
        other = result["against"]
        gap = 100 * (result["accuracy"] - other["accuracy"])
        paired = _paired(other["model_only"], other["against_only"], result["model"], other["p_value"])
        click.echo(f"against {other['model']}: accuracy {other['accuracy']:.4f} ({gap:+.2f} points for "
                   f"{result['model']}); {paired}")
    if plot:
        click.echo(f"confusion matrix: {plot}\nreliability diagram: {result['reliability_plot']}")


def format_calibration(result: dict) -> str:
    """``emozoo eval``'s calibration table: ECE, NLL, Brier (and vote cross-entropy) of the raw softmax (T = 1)
    and of the scores the model returns (its fitted temperature)."""
    names = {"ece": "ECE", "nll": "NLL", "brier": "Brier", "vote_ce": "vote CE"}
    t = result["temperature"]
    lines = [f"{'':<9} {'T = 1':>8} {f'T = {t:.3g}':>10}" + ("" if t != 1 else "  (no temperature fitted: emozoo calibrate)")]
    lines += [f"{label:<9} {result['before'][key]:>8.4f} {result[key]:>10.4f}"
              for key, label in names.items() if key in result]
    return "\n".join(lines)


@click.command("calibrate")
@click.argument("model")
@click.option("--data", "data_spec", default="ferplus", show_default=True)
@click.option("--split", default="Training", show_default=True, help="The split the validation faces come from; "
              "test splits are refused.")
@click.option("--holdout", default=0.05, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="The fraction of --split that training kept aside: the validation split.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="The model folder to write; MODEL's own folder calibrates it in place.")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite another model already in --out.")
@click.option("--json", "as_json", is_flag=True)
def calibrate_cmd(model, data_spec, split, holdout, out_dir, batch_size, force, as_json):
    """Fit MODEL's temperature on the validation split and save it, calibrated, as the folder --out.

    Every score emozoo then returns for it (predict, emozoo.predict, emozoo.predict_proba, eval) is
    softmax(logits / T): argmax and accuracy stay, and a score of 0.9 comes to mean right about nine times
    in ten. E.g. `emozoo calibrate emoxnetlite.ferplus --data ferplus --out runs/lite-cal`; then
    `emozoo eval runs/lite-cal` shows ECE, NLL and Brier before (T = 1) and after.
    """
    from ..workflows import calibrate_model

    result = calibrate_model(model, data_spec, out_dir, split=split, holdout=holdout, batch_size=batch_size,
                             progress=not as_json, command=command_line(), overwrite=force)
    if as_json:
        echo_json(result)
        return
    click.echo(f"{model}: temperature {result['temperature']:.4f}, fitted on {data_spec} {split} holdout "
               f"{holdout:g} ({result['n']} faces)")
    click.echo(f"on those faces (accuracy {result['accuracy']:.4f}):")
    click.echo(format_calibration({"temperature": result["temperature"], "before": result["before"], **result["after"]}))
    click.echo(f"saved: {result['out']}" + ("" if result["weights_unchanged"] else " (weights re-encoded)"))


COMMANDS = (train_cmd, distill_cmd, ensemble_cmd, unpack_cmd, eval_cmd, calibrate_cmd)
