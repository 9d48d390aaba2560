"""Ensembles: assembling trained members into an EmoXNet, fitting its fusion, unpacking it again."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from .. import errors
from .._builder import create
from .._models import architecture_cfg
from .._weights import save_pretrained
from ..builtins.emoxnet import EmoXNet
from ..data import eval_transform
from .evaluate import evaluate_model
from .fusion import fit_fusion
from .saving import Log, metrics_summary
from .splits import HOLDOUT, check_not_test, open_holdout, validation_record


def _as_member(config) -> dict:
    """The member spec that rebuilds a trained model inside an ensemble, as its architecture declares it."""
    return architecture_cfg(config.architecture).member_of(config.architecture, config.model_args)


def assemble_ensemble(members: list[nn.Module], fusion: str = "mean_logit", fusion_args: dict | None = None, *,
                      flip: bool = False, names: list[str] | None = None) -> EmoXNet:
    """An EmoXNet holding the trained ``members`` (their weights copied), with an untrained ``fusion``.

    The members must share labels and input spec but for the size: the ensemble takes the smallest
    input size of its members, and a member trained at a larger one (on upsampled faces) sees the input
    resized to it. A member that is itself a distilled student (``emoxnetlite``) joins as its network: its own
    test-time flip is dropped, and the ensemble's ``flip`` applies to every member alike. ``names`` (e.g. their
    folders) label them in the error.
    """
    names = names or [f"member {i}" for i in range(len(members))]
    first = members[0].config
    smallest = min((m.config.input for m in members), key=lambda spec: spec.size[0] * spec.size[1])
    for name, m in zip(names, members):
        if (m.config.label_names != first.label_names
                or dataclasses.replace(m.config.input, size=first.input.size) != first.input):
            raise errors.ConfigError(f"{name}: its labels or input spec (channels, normalisation, crop) differ from "
                                     f"{names[0]}'s; ensemble members must share both")
    specs = [{**_as_member(m.config), **({"input_size": list(m.config.input.size)}
                                          if m.config.input.size != smallest.size else {})} for m in members]
    model = create("emoxnet", members=specs, fusion=fusion, fusion_args=fusion_args or {}, flip=flip,
                   label_names=first.label_names)
    model.config.input = smallest
    for slot, member in zip(model.members, members):
        slot.load_state_dict(member.state_dict())
    return model


def shared_holdout(members: list[nn.Module]) -> float | None:
    """The training holdout fraction every member kept aside, or None if they differ or kept none."""
    holdouts = {m.config.recipe.get("holdout", 0.0) for m in members}
    return holdouts.pop() if len(holdouts) == 1 and next(iter(holdouts)) > 0 else None


def build_ensemble(member_dirs: list[str], fusion: str, fusion_args: dict, out_dir: str | Path, data_spec: str,
                   fit_split: str, val_split: str | None, fit_epochs: int = 30, *, flip: bool = False,
                   log: Log | None = None, command: str = "", progress: bool = True) -> dict:
    """Combine trained members into an EmoXNet, fit a learned fusion on held-back data, evaluate, save.

    The validation split is the part of ``fit_split`` the members all kept aside (their recipes' equal
    ``holdout``): a learned fusion is fitted on it, and it is the split scored unless ``val_split`` names
    another (``"none"``: none; a test split is scored there as the model's one report, after every choice).
    A test split as ``fit_split`` is refused. ``flip=True`` makes every member average its outputs over the
    image and its mirror (at fitting, evaluation and inference alike).
    """
    log = log or (lambda e: None)
    check_not_test(fit_split, "--fit-split")
    members = [create(d, pretrained=True) for d in member_dirs]
    first = members[0].config
    model = assemble_ensemble(members, fusion, fusion_args, flip=flip, names=[str(d) for d in member_dirs])
    member_holdouts = [m.config.recipe.get("holdout", 0.0) for m in members]
    holdout = shared_holdout(members)
    recipe: dict[str, Any] = {"command": command, "members": [str(d) for d in member_dirs], "fusion": fusion,
                              "flip": flip, "member_holdouts": member_holdouts}
    held = None
    if holdout is not None:
        held = open_holdout(data_spec, fit_split, holdout, eval_transform(model.config.input), first.label_names,
                            soft=True)
        recipe["validation"] = validation_record(data_spec, fit_split, holdout, len(held))
    else:
        recipe["validation"] = None
    if getattr(model.fusion, "trainable", False):
        if held is None:
            raise errors.ConfigError(
                f"fusion {fusion!r} must be fitted on data the members never saw, but the members were trained "
                f"with holdout fractions {sorted(set(member_holdouts))}. "
                "Train every member with the same --holdout (e.g. 0.05), or use mean_prob / mean_logit / majority_vote.")
        recipe.update(fit_split=fit_split, holdout=holdout, fit_epochs=fit_epochs, fit_images=len(held))
        fit_fusion(model, held, fit_epochs, progress)
    val_split = ensemble_val_split(val_split, holdout)
    metrics = {}
    if val_split == HOLDOUT:
        result = evaluate_model(model, data_spec, fit_split, members=True, progress=progress, holdout=holdout)
        metrics = metrics_summary(result, data_spec, HOLDOUT, out_dir, train_split=fit_split, holdout=holdout)
    elif val_split:
        result = evaluate_model(model, data_spec, val_split, members=True, progress=progress)
        metrics = metrics_summary(result, data_spec, val_split, out_dir)
    save_pretrained(model, out_dir, dataset=f"{data_spec} ({fit_split})", recipe=recipe, metrics=metrics)
    log({"event": "done", "out": str(out_dir), "accuracy": metrics.get(val_split, {}).get("accuracy")})
    return {"out": str(out_dir), "metrics": metrics, "recipe": recipe}


def ensemble_val_split(val_split: str | None, holdout: float | None) -> str | None:
    """The split ``emozoo ensemble`` scores: ``val_split`` as given (``"none"``: none), else the members' shared
    holdout (the validation split) when they kept one, else none."""
    if val_split == HOLDOUT and holdout is None:
        raise errors.ConfigError("--val-split holdout scores the training holdout the members kept aside, but they "
                                 "kept none or different ones; train every member with the same --holdout (e.g. 0.05)")
    if val_split:
        return None if val_split == "none" else val_split
    return HOLDOUT if holdout is not None else None


def unpack_ensemble(spec: str, out_dir: str | Path, *, command: str = "", overwrite: bool = False) -> list[Path]:
    """Write each member of the EmoXNet ``spec`` as a model folder of its own, ``out_dir/<i>_<backbone>``.

    The folders load like any trained backbone: ``emozoo eval`` scores a member alone, ``emozoo train
    --init`` gives it a new learning-rate cycle, and ``emozoo ensemble`` rebuilds an ensemble from them.
    Weights are written in float32 whatever the ensemble stores. Each member's ``holdout`` is kept where
    the ensemble recorded it (``emozoo ensemble`` does). A member folder that already holds a model is
    an error before anything is written, unless ``overwrite`` is true.
    """
    model = create(spec, pretrained=True)
    if not isinstance(model, EmoXNet):
        raise errors.ConfigError(f"{spec} is a {model.config.architecture}, not an emoxnet; only an ensemble "
                                 "has members to unpack")
    out_dir = Path(out_dir)
    targets = [out_dir / f"{i}_{name}" for i, name in enumerate(model.member_names)]
    taken = [str(t) for t in targets if (t / "config.json").exists() or (t / "model.safetensors").exists()]
    if taken and not overwrite:
        raise errors.ConfigError(f"{', '.join(taken)} already hold{'s' if len(taken) == 1 else ''} a model; "
                                 "pass --force to overwrite, or pick a new --out")
    holdouts = model.config.recipe.get("member_holdouts")  # what each member held back (emozoo ensemble records it)
    written = []
    for i, (name, target, spec_i, member) in enumerate(zip(model.member_names, targets,
                                                           model.config.model_args["members"], model.members)):
        single = create(name, label_names=model.config.label_names, **spec_i["args"])
        single.config.input = dataclasses.replace(model.config.input, size=tuple(spec_i.get("input_size")
                                                                                   or model.config.input.size))
        single.load_state_dict(member.state_dict())
        recipe = {"command": command, "unpacked_from": spec, "member": i, "ensemble_recipe": model.config.recipe}
        if holdouts:  # kept, so that a learned fusion can still be fitted over the unpacked members
            recipe["holdout"] = holdouts[i]
        written.append(save_pretrained(single, target, dataset=model.config.dataset,
                                       recipe=recipe, license=model.config.license))
    return written


#: the fusions ``emozoo ensemble --search`` tries by default (nothing to fit: the holdout only scores them)
SEARCH_FUSIONS = ("mean_prob", "mean_logit")


def search_ensemble(member_dirs: list[str], data_spec: str, fit_split: str = "Training",
                    fusions: tuple[str, ...] | list[str] = SEARCH_FUSIONS, *, flip: bool | str = False,
                    progress: bool = True, batch_size: int = 256, max_macs: float | None = None,
                    report: dict | None = None) -> tuple[list[dict], dict]:
    """Score every subset of the members under each fusion on the members' shared training holdout.

    Returns ``(rows, best)``: one row per subset, fusion and flip (``members``, ``fusion``, ``flip``, ``accuracy``,
    ``macs``: the subset's multiply-accumulates per face at batch 1, flip included, ``n``, ``split``,
    ``validation``: the :func:`~emozoo.workflows.splits.validation_record` scored on), and the best row
    (:func:`pick_best`) among the subsets of at most ``max_macs`` MACs (all when None). ``flip`` is test-time flip
    for every candidate, or ``"both"``: each candidate with and without it (the mirror doubles the MACs; its
    outputs come from one more pass over the mirrored faces). When ``report`` is a dict, it receives ``members``
    (each member's holdout accuracy and MACs, with flip when ``flip`` is True), ``diversity`` (:func:`error_overlap`
    of every pair of members), ``best_any_cost`` (the best row whatever its MACs), ``runner_up`` (the best row of
    another subset or flip within ``max_macs``, with ``pick_only``, ``runner_up_only`` and ``p_value`` of
    :func:`~emozoo.metrics.paired_test` against the pick; None when there is none) and ``best_any_cost_test``
    (``any_cost_only``, ``pick_only``, ``p_value``; None when the best at any cost is the pick). The holdout is the part of
    ``fit_split`` that every member kept aside (their recipes' equal ``holdout``), so no member trained on it and no
    test split is looked at (a test split as ``fit_split`` is refused). Fusions with parameters would be fitted on
    those same faces, so only fusions without them (e.g. mean_prob, mean_logit) are searched. Member outputs are
    computed once over the faces and, with flip, once over their mirrors.
    """
    import itertools

    import torch

    from .._models import build_fusion
    from .._profile import count_macs
    from ..metrics import paired_test
    from .fusion import member_outputs

    check_not_test(fit_split, "--search")
    if not fusions:
        raise errors.ConfigError("--search needs at least one fusion to try")
    if flip not in (False, True, "both"):
        raise errors.ConfigError(f"search flip must be true, false or 'both', not {flip!r}")
    flips = [False, True] if flip == "both" else [bool(flip)]
    members = [create(d, pretrained=True) for d in member_dirs]
    holdout = shared_holdout(members)
    if holdout is None:
        held = sorted({m.config.recipe.get("holdout", 0.0) for m in members})
        raise errors.ConfigError(f"--search scores on the training holdout every member kept aside, but the members "
                                 f"were trained with holdout fractions {held}; train every member with the same "
                                 "--holdout (e.g. 0.1)")
    first = members[0].config
    num_classes = len(first.label_names)
    for fusion in fusions:
        probe = build_fusion(fusion, 2, num_classes, [1, 1]) if len(members) > 1 else None
        if getattr(probe, "trainable", False):
            raise errors.ConfigError(f"--search: fusion {fusion!r} is fitted on the holdout the search scores on, "
                                     f"so its score would flatter it; search fusions without parameters "
                                     f"({', '.join(SEARCH_FUSIONS)}) and fit it afterwards with --fusion")
    model = assemble_ensemble(members, fusions[0], flip=False, names=[str(d) for d in member_dirs]).eval()
    data = open_holdout(data_spec, fit_split, holdout, eval_transform(model.config.input), first.label_names)
    plain, plain_features, targets = member_outputs(model, data, progress, batch_size)
    outputs = {False: (plain, plain_features)}
    if True in flips:  # flip's outputs are the mean over the faces and their mirrors, as EmoXNet(flip=True) gives
        mirrored, mirrored_features, _ = member_outputs(model, data, progress, batch_size, mirror=True)
        outputs[True] = ((plain + mirrored) / 2, [(a + b) / 2 for a, b in zip(plain_features, mirrored_features)])
    split = f"{fit_split} holdout ({holdout:g})"
    validation = validation_record(data_spec, fit_split, holdout, len(targets))
    # each member as the ensemble runs it: a distilled student's own test-time flip is not part of it (the
    # ensemble's flip is), so its MACs are its network's, not the doubled count of the model it came from
    macs = [count_macs(slot.float(), m.config.input.shape) for slot, m in zip(model.members, members)]
    if report is not None:
        logits = outputs[flips[-1]][0]
        wrong = [(logits[i].argmax(1) != targets) for i in range(len(members))]
        report["members"] = [{"member": str(d), "accuracy": round(1 - w.float().mean().item(), 4),
                              "macs": c * (2 if flips[-1] else 1)} for d, w, c in zip(member_dirs, wrong, macs)]
        report["diversity"] = [{"members": [str(member_dirs[i]), str(member_dirs[j])], **error_overlap(wrong[i], wrong[j])}
                               for i, j in itertools.combinations(range(len(members)), 2)]
    rows, right = [], []  # right[i]: which faces rows[i] gets right, for the paired comparisons below
    for k in range(1, len(members) + 1):
        for subset in itertools.combinations(range(len(members)), k):
            pick = list(subset)
            for flipped in flips:
                logits, features = outputs[flipped]
                for fusion in fusions[:1] if k == 1 else fusions:  # one member: every averaging fusion is the member
                    module = build_fusion(fusion, k, num_classes, [features[i].shape[1] for i in pick]).eval()
                    with torch.no_grad():
                        fused = module(logits[pick], [features[i] for i in pick])
                    right.append(fused.argmax(1) == targets)
                    accuracy = right[-1].float().mean().item()
                    rows.append({"members": [str(member_dirs[i]) for i in pick], "fusion": fusion, "flip": flipped,
                                 "accuracy": round(accuracy, 4),
                                 "macs": sum(macs[i] for i in pick) * (2 if flipped else 1), "n": len(targets),
                                 "split": split, "validation": validation})
    best = pick_best(rows, max_macs, fusions)
    if best is None:
        cheapest = min(macs) * (2 if flips == [True] else 1)
        raise errors.ConfigError(f"--max-macs {max_macs:,.0f}: no subset of the members is that cheap (the cheapest "
                                 f"member takes {cheapest:,} MACs per face{' with --flip' if flips == [True] else ''}); "
                                 "raise it")
    if report is not None:
        report["best_any_cost"] = pick_best(rows, None, fusions)
        index = {id(r): i for i, r in enumerate(rows)}
        others = [r for r in rows if (r["members"], r["flip"]) != (best["members"], best["flip"])]
        runner_up = pick_best(others, max_macs, fusions)  # the best other subset (or flip) within the budget
        if runner_up is not None:
            test = paired_test(right[index[id(best)]], right[index[id(runner_up)]])
            runner_up = {**runner_up, "pick_only": test["a_only"], "runner_up_only": test["b_only"],
                         "p_value": test["p_value"]}
        report["runner_up"] = runner_up
        any_cost, report["best_any_cost_test"] = report["best_any_cost"], None
        if any_cost is not best:
            test = paired_test(right[index[id(any_cost)]], right[index[id(best)]])
            report["best_any_cost_test"] = {"any_cost_only": test["a_only"], "pick_only": test["b_only"],
                                            "p_value": test["p_value"]}
    return rows, best


def pick_best(rows: list[dict], max_macs: float | None = None,
              fusions: tuple[str, ...] | list[str] = SEARCH_FUSIONS) -> dict | None:
    """The rule that picks from :func:`search_ensemble`'s rows, fixed before any search: the highest accuracy among
    the rows of at most ``max_macs`` MACs (all when None), then the fewest members, then the cheaper (no flip),
    then the first of ``fusions``; None when no row is that cheap."""
    order = {f: i for i, f in enumerate(fusions)}
    allowed = [r for r in rows if max_macs is None or r["macs"] <= max_macs]
    if not allowed:
        return None
    return min(allowed, key=lambda r: (-r["accuracy"], len(r["members"]), r["macs"], order.get(r["fusion"], len(order))))


def plot_search(rows: list[dict], best: dict, path: str | Path, *, max_macs: float | None = None,
                best_any_cost: dict | None = None) -> Path:
    """Draw :func:`search_ensemble`'s rows: each candidate's validation accuracy against its MACs per face (log
    scale; circles without flip, triangles with it), the best accuracy at each cost as a step line, ``max_macs`` as a
    dashed line, the pick and the best at any cost marked and named in the legend beside the axes. Needs matplotlib
    (``pip install 'emozoo[plot]'``)."""
    from .._plot import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for flipped, marker in ((False, "o"), (True, "^")):
        these = [r for r in rows if r["flip"] == flipped]
        if these:
            ax.scatter([r["macs"] / 1e6 for r in these], [100 * r["accuracy"] for r in these], s=14, marker=marker,
                       color="0.6", alpha=0.7, label=f"candidates, flip {'on' if flipped else 'off'}")
    front, top = [], -1.0
    for r in sorted(rows, key=lambda r: (r["macs"], -r["accuracy"])):
        if r["accuracy"] > top:
            front.append(r)
            top = r["accuracy"]
    ax.step([r["macs"] / 1e6 for r in front], [100 * r["accuracy"] for r in front], where="post", color="tab:blue",
            alpha=0.6, label="best at each cost")
    if max_macs:
        ax.axvline(max_macs / 1e6, color="tab:red", linestyle="--", alpha=0.6, label=f"budget {max_macs / 1e6:,.0f} M")
    marks = [(best, "*", "tab:red", "pick")]
    if best_any_cost is not None and best_any_cost is not best:
        marks.append((best_any_cost, "P", "tab:blue", "best at any cost"))
    for r, marker, color, what in marks:  # labelled in the legend: two marks close together never hide each other
        names = "\n".join(r["members"]) if len(r["members"]) <= 3 else f"{len(r['members'])} members"
        ax.scatter(r["macs"] / 1e6, 100 * r["accuracy"], s=140, marker=marker, color=color, zorder=5,
                   label=f"{what}: {100 * r['accuracy']:.2f} %, {r['macs'] / 1e6:,.0f} M, "
                         f"flip {'on' if r['flip'] else 'off'}\n{names}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.margins(x=0.05, y=0.08)
    ax.set_xlabel("M MACs per face at batch 1 (log scale; flip doubles them)")
    ax.set_ylabel(f"accuracy (%), {best['split']}")
    ax.set_title("Ensemble search on the validation split")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)  # beside the axes: hides no point
    return save_figure(fig, path)


def error_overlap(wrong_a, wrong_b) -> dict:
    """How much two members' errors coincide, from boolean ``wrong`` vectors over the same faces: ``both_wrong``
    (the share of faces both get wrong: the double fault) and ``overlap`` (of the faces either gets wrong, the share
    both get wrong: 1 when their errors are the same faces, 0 when disjoint). Lower is more diverse."""
    both = (wrong_a & wrong_b).float().sum().item()
    either = (wrong_a | wrong_b).float().sum().item()
    return {"both_wrong": round(both / max(1, len(wrong_a)), 4), "overlap": round(both / either, 4) if either else 0.0}
