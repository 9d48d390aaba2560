"""Training, distillation, ensembling and evaluation, end to end through the CLI."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import emozoo
from emozoo.cli import build_cli
from emozoo.data import DEFAULT_FERPLUS_NPZ

TINY = ["--model-arg", "width=0.25"]
FAST = ["--batch-size", "32", "--num-workers", "0", "--seed", "1"]


def cli(*args):
    result = CliRunner().invoke(build_cli(), [str(a) for a in args])
    return result


def emozoo_cmd(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "emozoo.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kw)


@pytest.fixture(scope="module")
def member(fer_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "member"
    result = cli("train", "resnet10", *TINY, "--data", fer_csv, "--out", out, "--epochs", 2, "--holdout", 0.2,
                 "--lr", 0.02, *FAST, "--json")
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_weights_recipe_metrics_and_json_log(member, fer_csv):
    model = emozoo.create(f"local-dir:{member}", pretrained=True)
    cfg = model.config
    assert cfg.architecture == "resnet10" and cfg.model_args == {"width": 0.25}
    assert cfg.label_names == emozoo.data.FER2013_LABELS
    assert cfg.recipe["epochs"] == 2 and cfg.recipe["holdout"] == 0.2 and cfg.recipe["command"].startswith("emozoo train")
    assert cfg.recipe["steps"] == 2 * 8  # 256 of 320 images trained (20% held back), batches of 32
    assert 0 <= cfg.metrics["holdout"]["accuracy"] <= 1 and cfg.metrics["holdout"]["n"] == 64  # validated on the holdout
    assert cfg.metrics["command"] == f"emozoo eval {member} --data {fer_csv} --split Training --holdout 0.2"
    meta = json.loads((member / "checkpoint" / "checkpoint.json").read_text())
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    assert meta["architecture"] == "resnet10" and meta["model_args"] == {"width": 0.25}  # enough to rebuild it


def test_json_log_lines(fer_csv, tmp_path):
    result = cli("train", "mini_xception", "--model-arg", "width=0.5", "--data", fer_csv, "--out", tmp_path / "m",
                 "--epochs", 1, "--limit", 64, *FAST, "--json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]  # progress bars go to stderr
    assert [e["event"] for e in events] == ["epoch", "done"]
    assert {"epoch", "step", "train", "val", "eta_seconds"} <= set(events[0])
    assert events[0]["step"] == 2


def test_json_log_is_strict_json_without_a_validation_split(fer_csv, tmp_path):
    args = ["train", "mini_xception", "--model-arg", "width=0.5", "--data", fer_csv, "--epochs", 1, "--limit", 64,
            "--val-split", "none", *FAST]
    result = cli(*args, "--out", tmp_path / "m", "--json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout.splitlines()[-1], parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert done["event"] == "done" and done["accuracy"] is None
    text = cli(*args, "--out", tmp_path / "t")
    assert text.exit_code == 0 and "(no validation split)" in text.output


def test_existing_checkpoint_needs_resume_and_other_architecture_is_refused(member, fer_csv, tmp_path):
    result = cli("train", "resnet10", *TINY, "--data", fer_csv, "--out", member, "--epochs", 2, *FAST)
    assert result.exit_code == 1 and "pass --resume" in result.output
    result = cli("train", "mini_xception", "--data", fer_csv, "--out", member, "--epochs", 2, "--holdout", 0.2,
                 "--lr", 0.02, *FAST, "--resume")
    assert result.exit_code == 1 and "another architecture ('resnet10')" in result.output


def test_eval_json_and_plot(member, fer_csv, tmp_path):
    plot = tmp_path / "cm.png"
    result = cli("eval", member, "--data", fer_csv, "--split", "PublicTest", "--json", "--plot", plot)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["n"] == 64 and set(data) >= {"accuracy", "macro_f1", "ece", "per_class_accuracy", "confusion"}
    assert sum(map(sum, data["confusion"])) == 64
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = cli("eval", member, "--data", fer_csv, "--split", "PublicTest").output
    assert "accuracy" in text and "macro-F1" in text


def test_eval_flip_overrides_the_saved_test_time_flip(member, fer_csv, tmp_path):
    lite = emozoo.save_pretrained(emozoo.create("emoxnetlite", student=("resnet10", {"width": 0.25})), tmp_path / "lite")
    plain = json.loads(cli("eval", lite, "--data", fer_csv, "--json").output)
    flipped = json.loads(cli("eval", lite, "--data", fer_csv, "--flip", "--json").output)
    assert plain["flip"] is False and flipped["flip"] is True and flipped["n"] == plain["n"] == 64
    assert flipped["model"] == plain["model"] == str(lite)  # labelled with the name given, flip or not
    model = emozoo.create(f"local-dir:{lite}", pretrained=True, flip=True)
    direct = emozoo.workflows.evaluate_model(model, str(fer_csv), "PublicTest", progress=False)
    assert flipped["accuracy"] == direct["accuracy"] and flipped["confusion"] == direct["confusion"]
    result = cli("eval", member, "--data", fer_csv, "--no-flip")
    assert result.exit_code == 1 and "flip= is an option of emoxnet and emoxnetlite" in result.output


def test_eval_against_scores_a_second_model_on_the_same_faces_with_a_paired_test(member, fer_csv, tmp_path):
    from emozoo.data import eval_transform
    from emozoo.train import predict_logits
    from emozoo.workflows import open_split

    other = emozoo.save_pretrained(emozoo.create("mini_xception", width=0.5, label_names=emozoo.data.FER2013_LABELS),
                                   tmp_path / "other")
    doc = json.loads(cli("eval", member, "--data", fer_csv, "--against", other, "--json").output)
    against = doc["against"]
    assert against["model"] == str(other) and 0 <= against["p_value"] <= 1
    # the counts are those of the two models' predictions on the same 64 faces
    right = {}
    for name in (member, other):
        model = emozoo.create(f"local-dir:{name}", pretrained=True).eval()
        logits, targets = predict_logits(model, open_split(str(fer_csv), "PublicTest", eval_transform(model.config.input),
                                                           model.config.label_names))
        right[name] = logits.argmax(1) == targets
    assert against["model_only"] == int((right[member] & ~right[other]).sum())
    assert against["against_only"] == int((right[other] & ~right[member]).sum())
    assert against["accuracy"] == right[other].float().mean().item()
    assert against["model_only"] - against["against_only"] == round((doc["accuracy"] - against["accuracy"]) * doc["n"])
    text = cli("eval", member, "--data", fer_csv, "--against", other).output
    assert f"against {other}: accuracy" in text and "exact McNemar p = " in text
    alone = json.loads(cli("eval", member, "--data", fer_csv, "--json").output)
    assert "against" not in alone and alone["accuracy"] == doc["accuracy"]
    for args, message in ((("--against", "resnet18"), "no pretrained weights are published for 'resnet18'"),
                          (("--against", "emoxnetlite.ferplus"), "differ from"),  # 8 FER+ labels against 7
                          (("--against", other, "--backend", "onnx"), "give it without --backend")):
        result = cli("eval", member, "--data", fer_csv, *args)
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_ensemble_fits_learned_fusion_on_holdout_only(member, fer_csv, tmp_path):
    other = tmp_path / "other"
    assert cli("train", "mini_xception", "--model-arg", "width=0.5", "--data", fer_csv, "--out", other, "--epochs", 1,
               "--holdout", 0.2, *FAST).exit_code == 0
    out = tmp_path / "ens"
    result = cli("ensemble", member, other, "--fusion", "stacking", "--data", fer_csv, "--out", out, "--fit-epochs", 2,
                 "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["recipe"]["fusion"] == "stacking"  # --json: one JSON document on stdout
    model = emozoo.create(f"local-dir:{out}", pretrained=True)
    assert model.config.architecture == "emoxnet" and model.member_names == ["resnet10", "mini_xception"]
    assert model.config.recipe["fit_images"] == 64  # 20% of the 320 training rows, none of PublicTest
    assert set(model.config.metrics["holdout"]["members"]) == {"0:resnet10", "1:mini_xception"}  # scored there too
    # members keep their trained weights exactly
    single = emozoo.create(f"local-dir:{member}", pretrained=True).eval()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(model.eval().members[0](x), single(x))
    # a learned fusion over members that saw all the training data is refused
    full = tmp_path / "full"
    assert cli("train", "mini_xception", "--model-arg", "width=0.5", "--data", fer_csv, "--out", full, "--epochs", 1,
               *FAST).exit_code == 0
    result = cli("ensemble", member, full, "--fusion", "learned_weights", "--data", fer_csv, "--out", tmp_path / "x")
    assert result.exit_code == 1 and "never saw" in result.output


def test_unpack_writes_each_member_as_a_model_that_rebuilds_the_ensemble(member, fer_csv, tmp_path):
    other = tmp_path / "other"
    assert cli("train", "mini_xception", "--model-arg", "width=0.5", "--data", fer_csv, "--out", other, "--epochs", 1,
               "--holdout", 0.2, *FAST).exit_code == 0
    ens = tmp_path / "ens"
    assert cli("ensemble", member, other, "--fusion", "mean_logit", "--flip", "--data", fer_csv,
               "--out", ens).exit_code == 0
    result = cli("unpack", ens, "--out", tmp_path / "members", "--json")
    assert result.exit_code == 0, result.output
    paths = json.loads(result.stdout)["members"]
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["0_resnet10", "1_mini_xception"]
    ensemble = emozoo.create(f"local-dir:{ens}", pretrained=True).eval()
    x = torch.randn(3, 1, 48, 48)
    for path, slot, source in zip(paths, ensemble.members, [member, other]):
        unpacked = emozoo.create(f"local-dir:{path}", pretrained=True).eval()
        trained = emozoo.create(f"local-dir:{source}", pretrained=True).eval()
        assert unpacked.config.architecture == trained.config.architecture
        assert unpacked.config.model_args == trained.config.model_args
        assert unpacked.config.input == ensemble.config.input
        assert unpacked.config.recipe["holdout"] == 0.2 and unpacked.config.recipe["unpacked_from"] == str(ens)
        with torch.no_grad():
            assert torch.equal(unpacked(x), trained(x)) and torch.equal(unpacked(x), slot(x))
    # the unpacked folders are members again: a learned fusion accepts them (their holdout was kept)
    again = tmp_path / "again"
    assert cli("ensemble", *paths, "--fusion", "learned_weights", "--fit-epochs", 1, "--data", fer_csv,
               "--out", again).exit_code == 0
    result = cli("unpack", member, "--out", tmp_path / "x")
    assert result.exit_code == 1 and "not an emoxnet" in result.output and not (tmp_path / "x").exists()


def test_unpack_refuses_to_overwrite_members_without_force(member, fer_csv, tmp_path):
    ens = tmp_path / "ens"
    assert cli("ensemble", member, member, "--fusion", "mean_logit", "--data", fer_csv, "--out", ens).exit_code == 0
    out = tmp_path / "members"
    assert cli("unpack", ens, "--out", out).exit_code == 0
    (out / "1_resnet10" / "model.safetensors").write_bytes(b"kept")  # stands for a member trained further
    result = cli("unpack", ens, "--out", out)
    assert result.exit_code == 1 and "1_resnet10 already hold" in result.output and "--force" in result.output
    assert (out / "1_resnet10" / "model.safetensors").read_bytes() == b"kept"
    result = cli("unpack", ens, "--out", out, "--force")
    assert result.exit_code == 0, result.output
    emozoo.create(f"local-dir:{out / '1_resnet10'}", pretrained=True)  # written again, loads


def test_distill_caches_teacher_outputs(member, fer_csv, tmp_path, monkeypatch):
    import emozoo.workflows.distill as wf  # where teacher_outputs looks predict_logits up

    calls = []
    real = wf.predict_logits
    monkeypatch.setattr(wf, "predict_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    args = ["distill", "--teacher", member, "--student", "mini_xception", "--student-arg", "width=0.5",
            "--loss", "kd_smooth", "--loss-arg", "eps=0.2", "--data", fer_csv, "--epochs", 1, *FAST]
    out = tmp_path / "student"
    result = cli(*args, "--out", out)
    assert result.exit_code == 0, result.output
    cache = out / "checkpoint" / "teacher_logits.safetensors"
    assert load_file(str(cache))["logits"].shape == (320, 7)
    model = emozoo.create(f"local-dir:{out}", pretrained=True)
    assert model.config.recipe["distill_loss"] == "kd_smooth" and model.config.recipe["distill_args"] == {"eps": 0.2}
    assert model.config.recipe["teacher"] == str(member)
    result = cli(*args, "--out", out, "--resume", "--epochs", 2)
    assert result.exit_code == 1 and "another recipe" in result.output  # the resumed recipe must match
    (out / "checkpoint" / "checkpoint.json").unlink()
    assert cli(*args, "--out", out).exit_code == 0
    assert len(calls) == 1  # the second run reused the cached teacher outputs


@pytest.mark.parametrize("command", ["train", "distill"])
def test_init_starts_from_given_weights(command, member, fer_csv, tmp_path):
    torch.manual_seed(3)
    start = emozoo.save_pretrained(emozoo.create("mini_xception", width=0.5, label_names=emozoo.data.FER2013_LABELS),
                                   tmp_path / "start")
    if command == "train":
        args = ["train", "mini_xception", "--model-arg", "width=0.5"]
    else:
        args = ["distill", "--teacher", member, "--student", "mini_xception", "--student-arg", "width=0.5"]
    args += ["--data", fer_csv, "--epochs", 1, "--limit", 64, "--lr", 1e-9, "--warmup-epochs", 0, *FAST]
    result = cli(*args, "--init", start, "--out", tmp_path / "tuned")
    assert result.exit_code == 0, result.output
    tuned = emozoo.create(f"local-dir:{tmp_path / 'tuned'}", pretrained=True)
    assert f"--init {start}" in tuned.config.recipe["command"]
    before = emozoo.create(f"local-dir:{start}", pretrained=True)
    params = dict(before.named_parameters())
    for name, p in tuned.named_parameters():  # a learning rate of 1e-9 leaves the starting weights in place
        torch.testing.assert_close(p, params[name], rtol=0, atol=1e-6)
    fresh = emozoo.create("mini_xception", width=0.25, label_names=emozoo.data.FER2013_LABELS)
    other = emozoo.save_pretrained(fresh, tmp_path / "other")
    result = cli(*args, "--init", other, "--out", tmp_path / "x")
    assert result.exit_code == 1 and "do not fit the model being trained" in result.output
    assert "shape mismatch" in result.output and not (tmp_path / "x" / "model.safetensors").exists()


def test_batch_augment_trains_repeatably_and_is_recorded(fer_csv, tmp_path):
    args = ["train", "resnet10", *TINY, "--data", fer_csv, "--epochs", 1, "--limit", 96, *FAST]
    for name in ("a", "b"):
        result = cli(*args, "--batch-augment", "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
    a, b = (emozoo.create(f"local-dir:{tmp_path / n}", pretrained=True) for n in ("a", "b"))
    assert a.config.recipe["batch_augment"] is True and a.config.recipe["steps"] == 3
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k  # the same seed draws the same augmentations
    # a checkpoint written before the recipe had this field still resumes: the field takes its default
    assert cli(*args, "--out", tmp_path / "old").exit_code == 0
    meta_path = tmp_path / "old" / "checkpoint" / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    del meta["recipe"]["batch_augment"]
    meta_path.write_text(json.dumps(meta))
    result = cli(*args, "--out", tmp_path / "old", "--resume")
    assert result.exit_code == 0, result.output


@pytest.mark.multiprocess
def test_resume_after_sigkill_mid_epoch_matches_uninterrupted_run(fer_csv, tmp_path):
    args = ["train", "resnet10", "--model-arg", "width=0.5", "--data", fer_csv, "--epochs", 3, "--val-split", "none",
            *FAST]
    full = emozoo_cmd(*args, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "emozoo.cli", *map(str, args), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    meta = out / "checkpoint" / "checkpoint.json"
    deadline = time.time() + 120
    while not meta.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # well into epoch 2
    assert proc.poll() is None, "the run finished before it could be killed; make the fixture larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads(meta.read_text())["epoch"] == 1
    assert not (out / "model.safetensors").exists()
    resumed = emozoo_cmd(*args, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = emozoo.create(f"local-dir:{tmp_path / 'full'}", pretrained=True)
    b = emozoo.create(f"local-dir:{out}", pretrained=True)
    assert a.config.recipe["steps"] == b.config.recipe["steps"] == 3 * 10
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va.float(), vb.float(), atol=1e-5), k


@pytest.mark.multiprocess
def test_ddp_two_processes_gloo_matches_single_process_steps(member, fer_csv, tmp_path):
    out = tmp_path / "ddp"
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "emozoo.cli", "train", "resnet10", *TINY, "--data", str(fer_csv), "--out", str(out),
         "--epochs", "2", "--holdout", "0.2", "--lr", "0.02", *FAST],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:  # never leave worker processes behind, even on a timeout
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    ddp = emozoo.create(f"local-dir:{out}", pretrained=True)
    single = emozoo.create(f"local-dir:{member}", pretrained=True)
    assert ddp.config.recipe["steps"] == single.config.recipe["steps"] == 16
    assert ddp(torch.randn(2, 1, 48, 48)).shape == (2, 7)


@pytest.mark.parametrize("args,message", [
    (["train", "resnet10", "--data", "/nope/fer2013.csv"], "/nope/fer2013.csv: no such file"),
    (["train", "resnet10", "--data", "ferplus:/nope.npz"], "/nope.npz"),
    (["train", "resnet10", "--epochs", "0"], "epochs must be at least 1"),
    (["train", "resnett10"], "Unknown model 'resnett10'"),
    (["distill", "--teacher", "resnet10"], "no pretrained weights are published for 'resnet10'"),
])
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    result = cli(*args, "--out", tmp_path / "o")
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_bad_recipe_file(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"model": "resnet10", "recipe": {"epochs": 1, "lerning_rate": 1}}))
    result = cli("train", "--recipe", bad, "--out", tmp_path / "o")
    assert result.exit_code == 1 and "unknown key(s) ['lerning_rate']" in result.output


def test_recipes_in_the_repo_are_valid():
    from conftest import REPO

    from emozoo.train import Recipe

    files = sorted((REPO / "recipes").glob("*.json"))
    assert files
    for path in files:
        data = json.loads(path.read_text())
        Recipe.from_dict(data["recipe"])
        emozoo.create(data["model"], **data.get("model_args", {}))


@pytest.mark.skipif(not DEFAULT_FERPLUS_NPZ.is_file(), reason="the shared FER+ data file is not here")
def test_smoke_member_and_distillation_on_real_ferplus(tmp_path):
    member = tmp_path / "member"
    result = cli("train", "resnet10", "--model-arg", "width=0.5", "--data", "ferplus", "--out", member, "--epochs", 1,
                 "--limit", 384, "--holdout", 0.05, *FAST)
    assert result.exit_code == 0, result.output
    cfg = emozoo.create(f"local-dir:{member}").config
    assert cfg.label_names == emozoo.FERPLUS_LABELS and cfg.metrics["holdout"]["n"] == 1419  # the validation split
    student = tmp_path / "student"
    result = cli("distill", "--teacher", member, "--data", "ferplus", "--out", student, "--epochs", 1,
                 "--limit", 384, *FAST)
    assert result.exit_code == 0, result.output
    cfg = emozoo.create(f"local-dir:{student}").config
    assert cfg.architecture == "emoxnetlite" and cfg.recipe["distill_loss"] == "kd_smooth"


def test_weight_average_and_batchnorm_recount():
    from emozoo.train import WeightAverage, update_batchnorm

    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    average = WeightAverage(a)
    average.update(a)
    average.update(b)
    target = torch.nn.Linear(3, 2)
    average.apply(target)
    assert torch.allclose(target.weight, (a.weight + b.weight) / 2) and torch.allclose(target.bias, (a.bias + b.bias) / 2)
    restored = WeightAverage(a)
    restored.load(average.tensors(), average.count)
    assert restored.count == 2 and all(torch.equal(restored.mean[k], average.mean[k]) for k in average.mean)

    net = torch.nn.Sequential(torch.nn.BatchNorm2d(2)).eval()
    batches = [torch.randn(4, 2, 3, 3) * 2 + 5 for _ in range(3)]
    update_batchnorm(net, iter(batches))
    data = torch.cat(batches)
    assert torch.allclose(net[0].running_mean, data.mean((0, 2, 3)), atol=1e-5)
    assert not net.training and net[0].momentum == 0.1  # left as it was found


def test_swa_lr_schedule_ends_the_cosine_at_the_held_rate():
    from emozoo.train import Recipe, lr_schedule

    plain = lr_schedule(Recipe(epochs=4, lr=0.1, warmup_epochs=0), 10)
    assert plain(0) == pytest.approx(0.1) and plain(39) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))
    held = lr_schedule(Recipe(epochs=4, lr=0.1, warmup_epochs=0, swa_epochs=2, swa_lr=0.01), 10)
    assert held(0) == pytest.approx(0.1) and held(19) > 0.01
    assert [held(s) for s in range(20, 40)] == [0.01] * 20
    with pytest.raises(emozoo.errors.ConfigError, match="swa_epochs"):
        Recipe(epochs=2, swa_epochs=3)
    with pytest.raises(emozoo.errors.ConfigError, match="swa_lr needs swa_epochs"):
        Recipe(swa_lr=0.01)


def test_swa_saves_the_mean_of_the_last_epochs(fer_csv, tmp_path):
    args = ["train", "resnet10", *TINY, "--data", fer_csv, "--epochs", 2, "--limit", 96, "--holdout", 0.2,
            "--batch-augment", *FAST]
    plain = cli(*args, "--out", tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    result = cli(*args, "--swa-epochs", 2, "--out", tmp_path / "swa", "--json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events] == ["epoch", "epoch", "swa", "done"] and events[2]["epochs_averaged"] == 2
    assert events[3]["accuracy"] == events[2]["val"]["accuracy"]  # the saved model is the average
    raw = {k[len("model."):]: v for k, v in load_file(tmp_path / "plain" / "checkpoint" / "checkpoint.safetensors").items()
           if k.startswith("model.")}
    ckpt = load_file(tmp_path / "swa" / "checkpoint" / "checkpoint.safetensors")
    saved = emozoo.create(f"local-dir:{tmp_path / 'swa'}", pretrained=True)
    assert saved.config.recipe["swa_epochs"] == 2
    params = dict(saved.named_parameters())
    for k, v in params.items():
        assert torch.equal(ckpt[f"model.{k}"], raw[k]), k  # averaging leaves the trajectory alone
        assert torch.allclose(v, ckpt[f"extra.swa.{k}"]), k
    assert any(not torch.allclose(v, raw[k]) for k, v in params.items())
    bn = next(k for k in saved.state_dict() if k.endswith("running_mean"))
    assert not torch.allclose(saved.state_dict()[bn], raw[bn])  # statistics recounted for the averaged weights
    # a run killed after its last epoch, before the average was saved, resumes to the same averaged model
    for name in ("model.safetensors", "config.json"):
        (tmp_path / "swa" / name).unlink()
    resumed = cli(*args, "--swa-epochs", 2, "--out", tmp_path / "swa", "--resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    again = emozoo.create(f"local-dir:{tmp_path / 'swa'}", pretrained=True)
    for (k, va), vb in zip(saved.state_dict().items(), again.state_dict().values()):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize("name", ["resnet10", "mini_xception", "vgg13"])
def test_grow_state_dict_keeps_the_narrow_models_outputs(name):
    from emozoo._weights import grow_state_dict

    torch.manual_seed(0)
    narrow = emozoo.create(name, width=0.25).eval()
    wide = emozoo.create(name, width=0.5).eval()
    wide.load_state_dict(grow_state_dict(narrow.state_dict(), wide.state_dict()))
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(wide(x), narrow(x), rtol=1e-4, atol=1e-5)
    small = narrow.state_dict()
    grew = next(k for k, v in wide.state_dict().items() if v.ndim == 4 and v.shape != small[k].shape)
    assert wide.state_dict()[grew].abs().sum() > small[grew].abs().sum()  # new channels start random
    with pytest.raises(emozoo.errors.ConfigError, match="does not fit inside"):
        grow_state_dict(wide.state_dict(), narrow.state_dict())


def test_distill_grow_starts_a_wider_student_from_a_narrow_one(member, fer_csv, tmp_path, user_registrations):
    torch.manual_seed(3)
    narrow = emozoo.save_pretrained(emozoo.create("resnet10", width=0.25, label_names=emozoo.data.FER2013_LABELS),
                                    tmp_path / "narrow")
    args = ["distill", "--teacher", member, "--student", "resnet10", "--student-arg", "width=0.5", "--data", fer_csv,
            "--epochs", 1, "--limit", 64, "--lr", 1e-9, "--warmup-epochs", 0, *FAST, "--init", narrow]
    result = cli(*args, "--out", tmp_path / "refused")
    assert result.exit_code == 1 and "or --grow for a narrower model" in result.output
    result = cli(*args[:-2], "--grow", "--out", tmp_path / "no_init")
    assert result.exit_code == 1 and "give --init NARROWER_MODEL" in result.output
    result = cli(*args, "--grow", "--out", tmp_path / "grown", "--holdout", 0.2)  # validated on the Training holdout
    assert result.exit_code == 0, result.output
    grown = emozoo.create(f"local-dir:{tmp_path / 'grown'}", pretrained=True)
    assert grown.config.model_args == {"width": 0.5} and "--grow" in grown.config.recipe["command"]
    before = emozoo.create(f"local-dir:{narrow}", pretrained=True)
    assert grown.config.metrics["holdout"]["accuracy"] == pytest.approx(
        emozoo.workflows.evaluate_model(before, str(fer_csv), "Training", progress=False, holdout=0.2)["accuracy"])
    # LayerNorm over channels is not preserved by growing: refused with the reason
    from emozoo.builtins.backbones import ConvNeXt

    @emozoo.register_backbone("tiny_convnext")
    def tiny_convnext(num_classes=8, in_chans=1, base=8):
        return ConvNeXt((1, 1, 1, 1), tuple(base * m for m in (1, 2, 4, 8)), num_classes, in_chans)

    small = emozoo.save_pretrained(emozoo.create("tiny_convnext", label_names=emozoo.data.FER2013_LABELS),
                                   tmp_path / "small")
    result = cli("train", "tiny_convnext", "--model-arg", "base=16", "--data", fer_csv, "--epochs", 1, "--limit", 64,
                 *FAST, "--init", small, "--grow", "--out", tmp_path / "cnx")
    assert result.exit_code == 1 and "does not compute what" in result.output and "LayerNorm" in result.output


def test_teacher_online_matches_cached_outputs_when_nothing_is_augmented(member, fer_csv, tmp_path):
    base = ["distill", "--teacher", member, "--student", "resnet10", "--student-arg", "width=0.25", "--data", fer_csv,
            "--epochs", 1, "--limit", 64, "--val-split", "none", *FAST]
    args = [*base, "--augment", "none"]
    cached = cli(*args, "--out", tmp_path / "cached")
    online = cli(*args, "--teacher-online", "--out", tmp_path / "online")
    assert cached.exit_code == 0 and online.exit_code == 0, cached.output + online.output
    assert (tmp_path / "cached" / "checkpoint" / "teacher_logits.safetensors").exists()
    assert not (tmp_path / "online" / "checkpoint" / "teacher_logits.safetensors").exists()
    a, b = (emozoo.create(f"local-dir:{tmp_path / n}", pretrained=True) for n in ("cached", "online"))
    assert b.config.recipe["teacher_online"] is True and a.config.recipe["teacher_online"] is False
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va.float(), vb.float(), rtol=1e-3, atol=1e-4, msg=k)
    # with augmentation the online teacher sees other images than the cached one, so the runs part
    shifted = cli(*base, "--teacher-online", "--out", tmp_path / "aug")
    assert shifted.exit_code == 0, shifted.output
    c = emozoo.create(f"local-dir:{tmp_path / 'aug'}", pretrained=True)
    assert any(not torch.allclose(va.float(), vc.float(), atol=1e-4)
               for va, vc in zip(a.state_dict().values(), c.state_dict().values()))


def test_mix_batch_blends_images_and_targets_with_one_weight():
    from emozoo.train import mix_batch

    torch.manual_seed(0)
    target = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0])
    x = target.float().view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()  # each image's pixels are its class number
    mixed, soft = mix_batch(x, target, 0.4, 7)
    assert mixed.shape == x.shape and soft.shape == (8, 7)
    torch.testing.assert_close(soft.sum(1), torch.ones(8))
    # the image is the blend its target says: pixel value = sum over classes of weight x class number
    torch.testing.assert_close(mixed[:, 0, 0, 0], soft @ torch.arange(7.0))
    assert not torch.equal(mixed, x)
    votes = torch.softmax(torch.randn(8, 7), 1)  # distributions are blended the same way
    mixed, soft = mix_batch(x, votes, 0.4, 7)
    torch.testing.assert_close(soft.sum(1), torch.ones(8))


def test_mixup_trains_and_distils_with_the_teacher_online_only(member, fer_csv, tmp_path):
    result = cli("train", "resnet10", "--model-arg", "width=0.25", "--data", fer_csv, "--epochs", 1, "--limit", 64,
                 "--val-split", "none", "--mixup", 0.2, *FAST, "--out", tmp_path / "t")
    assert result.exit_code == 0, result.output
    assert emozoo.create(f"local-dir:{tmp_path / 't'}", pretrained=True).config.recipe["mixup"] == 0.2
    base = ["distill", "--teacher", member, "--student", "resnet10", "--student-arg", "width=0.25", "--data", fer_csv,
            "--epochs", 1, "--limit", 64, "--val-split", "none", "--mixup", 0.2, *FAST]
    result = cli(*base, "--out", tmp_path / "cached")
    assert result.exit_code == 1 and "--teacher-online" in result.output
    assert not (tmp_path / "cached" / "checkpoint" / "teacher_logits.safetensors").exists()
    result = cli(*base, "--teacher-online", "--out", tmp_path / "online")
    assert result.exit_code == 0, result.output
    recipe = emozoo.create(f"local-dir:{tmp_path / 'online'}", pretrained=True).config.recipe
    assert recipe["mixup"] == 0.2 and recipe["teacher_online"] is True
    result = cli("train", "resnet10", "--data", fer_csv, "--mixup", -1, "--out", tmp_path / "bad")
    assert result.exit_code == 1 and "mixup must be 0" in result.output


def test_ensemble_search_picks_members_and_fusion_on_the_training_holdout(member, fer_csv, tmp_path):
    from emozoo.data import eval_transform
    from emozoo.train import predict_logits
    from emozoo.workflows import open_holdout

    other = tmp_path / "other"
    assert cli("train", "mini_xception", "--model-arg", "width=0.5", "--data", fer_csv, "--out", other, "--epochs", 1,
               "--holdout", 0.2, *FAST).exit_code == 0
    out = tmp_path / "searched"
    result = cli("ensemble", member, other, "--search", "--data", fer_csv, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows, best = doc["search"]["rows"], doc["search"]["best"]
    # each member alone (one row: every mean of one member is the member), and the pair under each fusion
    assert [(r["members"], r["fusion"]) for r in rows] == [
        ([str(member)], "mean_prob"), ([str(other)], "mean_prob"),
        ([str(member), str(other)], "mean_prob"), ([str(member), str(other)], "mean_logit")]
    assert all(r["split"] == "Training holdout (0.2)" and r["n"] == 64 for r in rows)  # never PublicTest
    assert best["accuracy"] == max(r["accuracy"] for r in rows)
    single = emozoo.create(f"local-dir:{member}", pretrained=True)
    held = open_holdout(str(fer_csv), "Training", 0.2, eval_transform(single.config.input), single.config.label_names)
    logits, targets = predict_logits(single, held)
    assert rows[0]["accuracy"] == round((logits.argmax(1) == targets).float().mean().item(), 4)
    model = emozoo.create(f"local-dir:{out}", pretrained=True)  # what was saved is the best row
    assert model.config.recipe["members"] == best["members"] and model.config.recipe["fusion"] == best["fusion"]
    text = cli("ensemble", member, other, "--search", "--data", fer_csv, "--out", tmp_path / "again")
    assert text.exit_code == 0 and "validation split, Training holdout 0.2" in text.output and "\n*" in text.output
    refused = cli("ensemble", member, other, "--search", "--search-fusions", "mean_prob,stacking", "--data", fer_csv,
                  "--out", tmp_path / "x")
    assert refused.exit_code == 1 and "would flatter it" in refused.output
    both = cli("ensemble", member, other, "--search", "--fusion", "mean_logit", "--data", fer_csv, "--out", tmp_path / "y")
    assert both.exit_code == 1 and "give --fusion without --search" in both.output

    # every row carries its MACs (the members' sum); the members' accuracies and the overlap of their errors are reported
    from emozoo._profile import count_macs

    macs = {str(d): count_macs(emozoo.create(f"local-dir:{d}", pretrained=True), (1, 48, 48)) for d in (member, other)}
    assert all(r["macs"] == sum(macs[m] for m in r["members"]) for r in rows)
    assert [m["accuracy"] for m in doc["search"]["members"]] == [rows[0]["accuracy"], rows[1]["accuracy"]]
    [pair] = doc["search"]["diversity"]
    assert pair["members"] == [str(member), str(other)] and 0 <= pair["both_wrong"] <= pair["overlap"] <= 1
    assert "error overlap of each pair" in text.output and "M MACs" in text.output
    # --max-macs: the best of the subsets that cheap, however good a costlier one
    cheap = min(macs.values())
    capped = json.loads(cli("ensemble", member, other, "--search", "--max-macs", cheap, "--data", fer_csv,
                            "--out", tmp_path / "cheap", "--json").stdout)["search"]
    assert capped["best"]["macs"] <= cheap and capped["max_macs"] == cheap
    assert capped["best"]["accuracy"] == max(r["accuracy"] for r in rows if r["macs"] <= cheap)
    none = cli("ensemble", member, other, "--search", "--max-macs", cheap - 1, "--data", fer_csv, "--out", tmp_path / "z")
    assert none.exit_code == 1 and "no subset of the members is that cheap" in none.output
    alone = cli("ensemble", member, other, "--max-macs", cheap, "--data", fer_csv, "--out", tmp_path / "w")
    assert alone.exit_code == 1 and "give it with --search" in alone.output


def test_ensemble_search_flip_tries_each_subset_with_and_without_the_mirror(member, fer_csv, tmp_path):
    other = tmp_path / "other"
    assert cli("train", "mini_xception", "--model-arg", "width=0.5", "--data", fer_csv, "--out", other, "--epochs", 1,
               "--holdout", 0.2, *FAST).exit_code == 0
    doc = json.loads(cli("ensemble", member, other, "--search", "--search-flip", "--data", fer_csv,
                         "--out", tmp_path / "s", "--json").stdout)["search"]
    rows = doc["rows"]
    plain = {(tuple(r["members"]), r["fusion"]): r for r in rows if not r["flip"]}
    mirrored = {(tuple(r["members"]), r["fusion"]): r for r in rows if r["flip"]}
    assert len(rows) == 8 and plain.keys() == mirrored.keys()  # 4 candidates, each with and without flip
    assert all(mirrored[k]["macs"] == 2 * plain[k]["macs"] for k in plain)
    assert doc["best_any_cost"] == doc["best"] and doc["best"]["accuracy"] == max(r["accuracy"] for r in rows)
    # a flipped row scores what the ensemble built with --flip scores on the same faces
    pair = (str(member), str(other))
    built = cli("ensemble", member, other, "--fusion", "mean_logit", "--flip", "--data", fer_csv, "--out",
                tmp_path / "f", "--json")
    assert built.exit_code == 0, built.output
    assert json.loads(built.stdout)["metrics"]["holdout"]["accuracy"] == mirrored[pair, "mean_logit"]["accuracy"]
    saved = emozoo.create(tmp_path / "s", pretrained=True)  # the pick's flip is what was built
    assert saved.config.recipe["flip"] == doc["best"]["flip"] and saved.flip == doc["best"]["flip"]
    # a budget the flipped pair exceeds: the pick is within it, the best at any cost reported beside it
    budget = plain[pair, "mean_prob"]["macs"]
    text = cli("ensemble", member, other, "--search", "--search-flip", "--max-macs", budget, "--data", fer_csv,
               "--out", tmp_path / "b", "--plot", tmp_path / "search.png")
    capped = json.loads(cli("ensemble", member, other, "--search", "--search-flip", "--max-macs", budget, "--data",
                            fer_csv, "--out", tmp_path / "j", "--json").stdout)["search"]
    assert text.exit_code == 0, text.output
    assert "fusion       flip members" in text.output and "\n* " in text.output
    # the pick against the best other subset or flip within the budget, on the same faces
    runner_up, best = capped["runner_up"], capped["best"]
    assert (runner_up["members"], runner_up["flip"]) != (best["members"], best["flip"])
    assert runner_up["macs"] <= budget and runner_up["accuracy"] <= best["accuracy"] and 0 <= runner_up["p_value"] <= 1
    assert runner_up["pick_only"] - runner_up["runner_up_only"] == round((best["accuracy"] - runner_up["accuracy"])
                                                                         * runner_up["n"])
    assert "* against the runner-up (" in text.output and "exact McNemar p = " in text.output
    assert f"search plot: {tmp_path / 'search.png'}" in text.output
    assert (tmp_path / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capped["best"]["macs"] <= budget and capped["best_any_cost"]["accuracy"] == doc["best"]["accuracy"]
    if capped["best_any_cost"] != capped["best"]:
        assert "+ the best at any cost" in text.output and "\n+ " in text.output
        test = capped["best_any_cost_test"]
        assert test["any_cost_only"] - test["pick_only"] == round(
            (capped["best_any_cost"]["accuracy"] - best["accuracy"]) * best["n"])
    else:
        assert capped["best_any_cost_test"] is None
    unplotted = cli("ensemble", member, other, "--plot", tmp_path / "p.png", "--data", fer_csv, "--out", tmp_path / "x")
    assert unplotted.exit_code == 1 and "--plot draws the candidates of --search" in unplotted.output
    nowhere = cli("ensemble", member, other, "--search", "--plot", tmp_path / "no" / "p.png", "--data", fer_csv,
                  "--out", tmp_path / "x")  # refused before the search, in one line
    assert nowhere.exit_code == 1 and "does not exist; create it" in nowhere.output
    assert len(nowhere.output.strip().splitlines()) == 1
    for args, message in (((), "give it with --search"), (("--search", "--flip"), "give it without --flip")):
        bad = cli("ensemble", member, other, "--search-flip", *args, "--data", fer_csv, "--out", tmp_path / "x")
        assert bad.exit_code == 1 and message in bad.output and len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_ensemble_search_counts_a_distilled_student_member_without_its_own_flip(member, fer_csv, tmp_path):
    from emozoo._profile import count_macs

    student = tmp_path / "student"  # a narrow member: a distilled student, its flip on as the shipped student's is
    result = cli("distill", "--teacher", member, "--student", "emoxnetlite", "--student-arg",
                 'student={"backbone": "resnet10", "args": {"width": 0.25}}', "--student-arg", "flip=true",
                 "--data", fer_csv, "--epochs", 1, "--holdout", 0.2, "--teacher-online", *FAST, "--out", student)
    assert result.exit_code == 0, result.output
    lite = emozoo.create(student, pretrained=True)
    assert lite.config.architecture == "emoxnetlite" and lite.config.model_args["flip"] is True
    network = count_macs(lite.model, (1, 48, 48))  # the student network inside its flip
    assert count_macs(lite, (1, 48, 48)) == 2 * network  # the student alone runs its mirror too
    doc = json.loads(cli("ensemble", member, student, "--search", "--search-flip", "--data", fer_csv,
                         "--out", tmp_path / "s", "--json").stdout)["search"]
    alone = {r["flip"]: r for r in doc["rows"] if r["members"] == [str(student)]}
    # in the ensemble it runs as its network: once without the ensemble's flip, twice with it
    assert alone[False]["macs"] == network and alone[True]["macs"] == 2 * network
    assert doc["members"][1] == {"member": str(student), "accuracy": alone[True]["accuracy"], "macs": 2 * network}
    built = emozoo.create(tmp_path / "s", pretrained=True)
    assert count_macs(built, (1, 48, 48)) == doc["best"]["macs"]  # what the search says is what the saved model costs


def test_ensemble_members_are_folders_or_published_names_and_a_wrong_one_is_named_in_one_line(member, tmp_path):
    # published weights join by name, as emozoo.create finds them; --val-split none: no data is read
    result = cli("ensemble", "emoxnetlite.ferplus", "emoxnetlite.ferplus", "--val-split", "none",
                 "--out", tmp_path / "named", "--json")
    assert result.exit_code == 0, result.output
    model = emozoo.create(tmp_path / "named", pretrained=True)
    assert [m["backbone"] for m in model.config.model_args["members"]] == ["resnet10", "resnet10"]
    assert model.config.recipe["members"] == ["emoxnetlite.ferplus", "emoxnetlite.ferplus"]
    lite = emozoo.create("emoxnetlite.ferplus", pretrained=True)
    torch.testing.assert_close(model.members[0].state_dict(), lite.model.state_dict())
    for wrong, message in (("emoxnetlite.ferplsu", "Did you mean: emoxnetlite.ferplus"),
                           (tmp_path / "nowhere", "config.json: not found"),
                           ("resnet18", "no pretrained weights are published for 'resnet18'")):
        result = cli("ensemble", member, wrong, "--out", tmp_path / "x")
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_pick_best_takes_the_best_within_the_budget_then_fewer_members_then_fewer_macs():
    from emozoo.workflows import pick_best

    rows = [{"members": ["a"], "fusion": "mean_prob", "flip": False, "accuracy": 0.8, "macs": 10},
            {"members": ["a"], "fusion": "mean_prob", "flip": True, "accuracy": 0.8, "macs": 20},
            {"members": ["a", "b"], "fusion": "mean_logit", "flip": False, "accuracy": 0.8, "macs": 15},
            {"members": ["a", "b"], "fusion": "mean_prob", "flip": True, "accuracy": 0.85, "macs": 30},
            {"members": ["a", "b"], "fusion": "mean_logit", "flip": True, "accuracy": 0.85, "macs": 30}]
    assert pick_best(rows) is rows[3]  # the best; between equal fusions, the first listed
    assert pick_best(rows, fusions=["mean_logit", "mean_prob"]) is rows[4]
    assert pick_best(rows, max_macs=25) is rows[0]  # a tie: one member, then no flip (fewer MACs)
    assert pick_best(rows, max_macs=5) is None


def test_search_table_shows_the_best_candidates_and_always_the_pick_and_the_best_at_any_cost(member, fer_csv, tmp_path):
    from emozoo.cli.train import format_search

    validation = {"data": "x", "split": "Training", "holdout": 0.05, "seed": 1, "n": 100}
    rows = [{"members": [f"m{i}"], "fusion": "mean_prob", "flip": False, "accuracy": 0.9 - i / 100,
             "macs": 1e8 * (10 - i), "validation": validation} for i in range(10)]
    text = format_search(rows, rows[6], 4.5e8, rows[0], show=3)
    table = [line.split()[-1] if "mean_prob" in line else line.strip() for line in text.splitlines()[2:8]]
    assert table == ["m0", "m1", "m2", "...", "m6", "... 6 more candidates not shown (10 in all: --show all, or --json)"]
    assert text.splitlines()[2].startswith("+") and text.splitlines()[6].startswith("*")
    adjacent = format_search(rows, rows[6], 4.5e8, rows[5], show=2).splitlines()[2:8]  # two marked rows in a row
    assert [line.split()[-1] if "mean_prob" in line else line.strip() for line in adjacent][:5] == [
        "m0", "m1", "...", "m5", "m6"]
    every = format_search(rows, rows[6], 4.5e8, rows[0])
    assert all(f" m{i}\n" in every + "\n" for i in range(10)) and "not shown" not in every
    bad = cli("ensemble", member, member, "--search", "--show", "0", "--data", fer_csv, "--out", tmp_path / "x")
    assert bad.exit_code == 1 and "--show 0: give a number" in bad.output and not (tmp_path / "x").exists()
    shown = cli("ensemble", member, member, "--search", "--show", "1", "--data", fer_csv, "--out", tmp_path / "y")
    assert shown.exit_code == 0 and "more candidates not shown" in shown.output and "\n* " in shown.output


def test_plot_search_names_the_pick_and_the_best_at_any_cost_in_a_legend_beside_the_axes(monkeypatch, tmp_path):
    import emozoo._plot
    from emozoo.workflows.ensemble import plot_search

    drawn = []
    monkeypatch.setattr(emozoo._plot, "save_figure", lambda fig, path, dpi=120: drawn.append(fig) or path)
    rows = [{"members": ["a"], "fusion": "mean_prob", "flip": False, "accuracy": 0.84, "macs": 4e8, "split": "v"},
            {"members": ["a", "b"], "fusion": "mean_prob", "flip": True, "accuracy": 0.862, "macs": 1.0e9, "split": "v"},
            {"members": ["a", "b", "c"], "fusion": "mean_prob", "flip": True, "accuracy": 0.865, "macs": 2e9, "split": "v"}]
    plot_search(rows, rows[1], tmp_path / "s.png", max_macs=1.5e9, best_any_cost=rows[2])
    [fig] = drawn
    legend = fig.axes[0].get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert "pick: 86.20 %, 1,000 M, flip on\na\nb" in texts
    assert "best at any cost: 86.50 %, 2,000 M, flip on\na\nb\nc" in texts and "budget 1,500 M" in texts
    assert not fig.axes[0].texts  # no labels on the axes themselves, where two close marks would hide each other
    box = legend.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= fig.axes[0].get_window_extent().x1  # beside the axes, over no candidate


def test_paired_test_is_the_exact_mcnemar_test_on_the_faces_two_candidates_disagree_on():
    import torch

    from emozoo.metrics import paired_test

    a = torch.tensor([True] * 90 + [False] * 10)
    b = a.clone()
    assert paired_test(a, b) == {"a_only": 0, "b_only": 0, "p_value": 1.0}  # the same faces: no evidence either way
    b[:5] = False  # a alone right on 5 faces, b on 0: two-sided 2 * 0.5**5
    assert paired_test(a, b) == {"a_only": 5, "b_only": 0, "p_value": 0.0625}
    b[:20] = False
    b[90:] = True  # 20 against 10: p = 0.0987 (scipy's binomtest; by hand: 2 * sum(C(30, k), k <= 10) / 2**30)
    assert paired_test(a, b) == {"a_only": 20, "b_only": 10, "p_value": 0.0987}
    b[:40] = False  # 40 against 10
    assert paired_test(a, b)["p_value"] < 0.001


def test_error_overlap_counts_shared_errors():
    import torch

    from emozoo.workflows.ensemble import error_overlap

    a = torch.tensor([True, True, False, False, False, True])
    b = torch.tensor([True, False, True, False, False, True])
    assert error_overlap(a, b) == {"both_wrong": round(2 / 6, 4), "overlap": 0.5}   # 2 shared of 4 either
    assert error_overlap(a, a)["overlap"] == 1.0
    assert error_overlap(a, ~a) == {"both_wrong": 0.0, "overlap": 0.0}
    assert error_overlap(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool))["overlap"] == 0.0


def test_esr_branches_share_the_base_and_forward_is_their_mean():
    torch.manual_seed(0)
    model = emozoo.create("esr", branches=3, width=0.25).eval()
    x = torch.randn(2, 1, 48, 48)
    branches = model.forward_branches(x)
    assert branches.shape == (2, 3, 8)
    assert torch.allclose(model(x), branches.mean(1), atol=1e-6)
    assert torch.allclose(model.forward_head(model.forward_features(x)), model(x), atol=1e-6)
    assert sum(p.numel() for p in model.base.parameters()) == sum(  # one base, three branches
        p.numel() for p in emozoo.create("esr", branches=1, width=0.25).base.parameters())
    model.train()
    assert model(x).shape == (2, 8)  # the (B, C) contract holds until a training loop asks for the branches
    model.return_branches = True
    assert model(x).shape == (2, 3, 8)
    with pytest.raises(emozoo.ConfigError, match="branches must be a positive integer"):
        emozoo.create("esr", branches=0)


def test_branch_mean_gives_each_branch_only_its_own_loss():
    from emozoo.train.loop import branch_mean

    torch.manual_seed(0)
    model = emozoo.create("esr", branches=2, width=0.25)
    model.return_branches = True
    x, y = torch.randn(4, 1, 48, 48), torch.tensor([0, 1, 2, 3])
    branch_mean(model(x), torch.nn.functional.cross_entropy, y).backward()
    own = model.heads[1].fc.weight.grad.clone()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model.forward_branches(x)[:, 1], y).div(2).backward()
    assert torch.allclose(own, model.heads[1].fc.weight.grad, atol=1e-6)
    model.zero_grad()
    torch.nn.functional.cross_entropy(model.forward_branches(x).mean(1), y).backward()  # what a fused loss would do
    assert not torch.allclose(own, model.heads[1].fc.weight.grad, atol=1e-4)
    out = torch.randn(4, 8)
    assert branch_mean(out, lambda b: b.sum()) == out.sum()  # one head: the loss itself


def test_esr_trains_each_branch_on_its_own_loss_and_saves_as_one_model(fer_csv, tmp_path, monkeypatch):
    import emozoo.train.loop as loop

    seen = []
    real = loop.branch_mean
    monkeypatch.setattr(loop, "branch_mean", lambda out, *a: seen.append(tuple(out.shape)) or real(out, *a))
    result = cli("train", "esr", "--model-arg", "branches=2", "--model-arg", "width=0.25", "--data", fer_csv,
                 "--epochs", 1, "--limit", 64, "--out", tmp_path / "esr", *FAST)
    assert result.exit_code == 0, result.output
    assert seen and all(len(shape) == 3 and shape[1] == 2 for shape in seen)  # every step saw both branches' logits
    model = emozoo.create(f"local-dir:{tmp_path / 'esr'}", pretrained=True)
    assert model.config.model_args == {"branches": 2, "width": 0.25} and not model.return_branches
    assert model(torch.randn(1, 1, 48, 48)).shape == (1, model.config.num_classes)


def test_esr_starts_from_one_resnet18_per_branch(fer_csv, tmp_path):
    from emozoo.errors import ConfigError

    torch.manual_seed(0)
    labels = emozoo.data.FER2013_LABELS  # fer_csv's, for the CLI part
    first, second = (emozoo.create("resnet18", label_names=labels).eval() for _ in range(2))
    model = emozoo.create("esr", branches=2, width=1.0, label_names=labels).eval()
    model.init_branches([first.state_dict(), second.state_dict()])
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():  # the base and branch 0 are the first resnet18; branch 1 has the second's stages 3-4
        assert torch.allclose(model.forward_branches(x)[:, 0], first(x), atol=1e-5)
        assert torch.equal(model.heads[1].fc.weight, second.head.fc.weight)
        assert torch.equal(model.branches[1][0][0].conv1[0].weight, second.stages[2][0].conv1[0].weight)
    with pytest.raises(ConfigError, match="give one --init per branch"):
        model.init_branches([first.state_dict()])
    with pytest.raises(ConfigError, match="width=1.0"):
        emozoo.create("esr", branches=2, label_names=labels).init_branches([first.state_dict(), second.state_dict()])
    with pytest.raises(ConfigError, match="not a resnet18's"):
        model.init_branches([emozoo.create("vgg13", label_names=labels).state_dict()] * 2)

    # the CLI: --init once per branch, as saved resnet18 folders
    folders = []
    for i, net in enumerate((first, second)):
        folders.append(emozoo.save_pretrained(net, tmp_path / f"r{i}"))
    result = cli("train", "esr", "--model-arg", "branches=2", "--model-arg", "width=1.0", "--init", folders[0],
                 "--init", folders[1], "--data", fer_csv, "--epochs", 1, "--limit", 32, "--lr", 1e-9,
                 "--val-split", "none", "--out", tmp_path / "esr", *FAST)
    assert result.exit_code == 0, result.output
    trained = emozoo.create(f"local-dir:{tmp_path / 'esr'}", pretrained=True)
    assert "--init" in trained.config.recipe["command"]
    assert torch.allclose(trained.heads[1].fc.weight, second.head.fc.weight, atol=1e-6)  # lr 1e-9: as started
    for args, message in ((["resnet18", "--init", folders[0], "--init", folders[1]], "resnet18 has no branches"),
                          (["--init", folders[0], "--init", folders[1]], "name the MODEL")):
        bad = cli("train", *args, "--data", fer_csv, "--epochs", 1, "--limit", 32, "--out", tmp_path / "bad", *FAST)
        assert bad.exit_code == 1 and message in bad.output, bad.output
