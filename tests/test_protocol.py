"""The selection protocol (issue 34): every choice is made on the validation split, the Training holdout drawn
with a fixed seed; test splits are refused by whatever searches or fits; each saved model records its
validation split."""
import json

import pytest

import emozoo
from emozoo.errors import ConfigError
from emozoo.train import VALIDATION_SEED, holdout_split
from emozoo.workflows import build_ensemble, default_val_split, search_ensemble

FAST = ["--batch-size", "32", "--num-workers", "0", "--seed", "1"]


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two untrained members on fer_csv's labels whose recipes say they kept the same 20 % holdout aside."""
    root = tmp_path_factory.mktemp("members")
    out = []
    for name, args in (("resnet10", {"width": 0.25}), ("mini_xception", {"width": 0.5})):
        model = emozoo.create(name, label_names=emozoo.data.FER2013_LABELS, **args)
        out.append(emozoo.save_pretrained(model, root / name, recipe={"holdout": 0.2}))
    return out


def record(data, n, split="Training", holdout=0.2):
    return {"data": str(data), "split": split, "holdout": holdout, "seed": VALIDATION_SEED, "n": n}


def test_the_holdout_is_the_same_every_run_nested_across_fractions_and_disjoint_from_training():
    train, held = holdout_split(28388, 0.05)  # FER+ Training: the members' validation split
    assert len(held) == 1419 and (train, held) == holdout_split(28388, 0.05, VALIDATION_SEED)
    assert not set(train) & set(held) and sorted(train + held) == list(range(28388))
    _, wider = holdout_split(28388, 0.1)
    assert len(wider) == 2839 and set(held) < set(wider)  # a larger holdout keeps the smaller one's faces
    assert holdout_split(28388, 0.05, VALIDATION_SEED + 1)[1] != held  # the seed is what fixes it
    assert VALIDATION_SEED == 20210630


@pytest.mark.parametrize("split", ["PublicTest", "PrivateTest", "test"])
def test_a_test_split_as_validation_split_is_refused(split):
    with pytest.raises(ConfigError, match=f"--val-split refuses {split}.*--holdout 0.05"):
        default_val_split("Training", split, 0.05)
    assert default_val_split("Training", None, 0.05) == "holdout" and default_val_split("Training", "none", 0.05) is None


def test_train_refuses_val_split_publictest_in_one_line_naming_the_fix(cli, fer_csv, tmp_path):
    result = cli("train", "mini_xception", "--data", fer_csv, "--val-split", "PublicTest", "--epochs", 1,
                 "--out", tmp_path / "m")
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "--holdout 0.05" in result.output, result.output
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_search_refuses_a_test_split(cli, members, fer_csv, tmp_path):
    with pytest.raises(ConfigError, match="--search refuses PublicTest"):
        search_ensemble([str(m) for m in members], str(fer_csv), "PublicTest")
    result = cli("ensemble", *members, "--search", "--data", fer_csv, "--fit-split", "PublicTest",
                 "--out", tmp_path / "s")
    assert result.exit_code == 1 and "refuses PublicTest" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_a_fitted_fusion_refuses_a_test_fit_split(cli, members, fer_csv, tmp_path):
    with pytest.raises(ConfigError, match="--fit-split refuses PublicTest"):
        build_ensemble([str(m) for m in members], "stacking", {}, tmp_path / "e", str(fer_csv), "PublicTest", None,
                       fit_epochs=1, progress=False)
    result = cli("ensemble", *members, "--fusion", "learned_weights", "--data", fer_csv, "--fit-split", "PrivateTest",
                 "--out", tmp_path / "f")
    assert result.exit_code == 1 and "--fit-split refuses PrivateTest" in result.output, result.output
    assert not (tmp_path / "e").exists() and not (tmp_path / "f").exists()


def test_search_scores_and_names_the_validation_split(cli, members, fer_csv, tmp_path):
    rows, best = search_ensemble([str(m) for m in members], str(fer_csv), progress=False)
    assert all(r["validation"] == record(fer_csv, 64) for r in rows) and best in rows
    result = cli("ensemble", *members, "--search", "--data", fer_csv, "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    assert (f"on the validation split, Training holdout 0.2 (seed {VALIDATION_SEED}, 64 faces of {fer_csv})"
            in result.output)
    doc = json.loads(cli("ensemble", *members, "--search", "--data", fer_csv, "--out", tmp_path / "j", "--json").stdout)
    assert doc["search"]["validation"] == record(fer_csv, 64)
    saved = emozoo.create(tmp_path / "j", pretrained=True).config
    assert saved.recipe["validation"] == record(fer_csv, 64) and set(saved.metrics) == {"holdout", "command"}


def test_ensemble_scores_the_shared_holdout_by_default_and_records_it(cli, members, fer_csv, tmp_path):
    result = cli("ensemble", *members, "--data", fer_csv, "--out", tmp_path / "e", "--json")
    assert result.exit_code == 0, result.output
    config = emozoo.create(tmp_path / "e", pretrained=True).config
    assert config.recipe["validation"] == record(fer_csv, 64)
    assert config.metrics["holdout"]["n"] == 64 and "PublicTest" not in config.metrics
    assert config.metrics["command"] == f"emozoo eval {tmp_path / 'e'} --data {fer_csv} --split Training --holdout 0.2"
    # PublicTest is scored when asked for, as the one report; the validation split is still what is recorded
    result = cli("ensemble", *members, "--data", fer_csv, "--val-split", "PublicTest", "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    config = emozoo.create(tmp_path / "p", pretrained=True).config
    assert config.metrics["PublicTest"]["n"] == 64 and config.recipe["validation"] == record(fer_csv, 64)


def test_train_and_distill_record_their_validation_split(cli, fer_csv, tmp_path):
    base = ["--data", fer_csv, "--epochs", 1, "--limit", 32, *FAST]
    result = cli("train", "resnet10", "--model-arg", "width=0.25", *base, "--holdout", 0.2, "--out", tmp_path / "t")
    assert result.exit_code == 0, result.output
    trained = emozoo.create(tmp_path / "t", pretrained=True).config
    assert trained.recipe["validation"] == record(fer_csv, 64) and trained.metrics["holdout"]["n"] == 64
    result = cli("distill", "--teacher", tmp_path / "t", "--student", "resnet10", "--student-arg", "width=0.25",
                 *base, "--holdout", 0.1, "--out", tmp_path / "d")
    assert result.exit_code == 0, result.output
    assert emozoo.create(tmp_path / "d", pretrained=True).config.recipe["validation"] == record(fer_csv, 32, holdout=0.1)
    result = cli("train", "resnet10", "--model-arg", "width=0.25", *base, "--out", tmp_path / "n")
    assert result.exit_code == 0, result.output  # no holdout: no validation split, and the config says so
    assert emozoo.create(tmp_path / "n", pretrained=True).config.recipe["validation"] is None


def test_eval_holdout_names_the_validation_split(cli, members, fer_csv):
    result = cli("eval", members[0], "--data", fer_csv, "--split", "Training", "--holdout", 0.2, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["validation"] == record(fer_csv, 64)
    text = cli("eval", members[0], "--data", fer_csv, "--split", "Training", "--holdout", 0.2).output
    assert f"{members[0]} on the validation split, Training holdout 0.2 (seed {VALIDATION_SEED}, 64 faces" in text
