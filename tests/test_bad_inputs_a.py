"""Bad inputs to training, checkpoints and recipes: each gives one line that names the file or key and the fix."""
import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from torch import nn

from emozoo._checkpoint import CKPT_META, CKPT_TENSORS, load_checkpoint, save_checkpoint
from emozoo.cli import build_cli
from emozoo.errors import EmozooError


def cli(*args):
    return CliRunner().invoke(build_cli(), [str(a) for a in args])


def _model_opt():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def _truncate(path):
    path.write_bytes(path.read_bytes()[:40])


def _edit_meta(change):
    def edit(path):
        meta = json.loads((path / CKPT_META).read_text())
        change(meta)
        (path / CKPT_META).write_text(json.dumps(meta))
    return edit


def _drop_tensor(key):
    def edit(path):
        tensors = load_file(path / CKPT_TENSORS)
        del tensors[key]
        save_id = json.loads((path / CKPT_META).read_text())["save_id"]
        save_file(tensors, path / CKPT_TENSORS, metadata={"emozoo.save_id": save_id})
    return edit


CORRUPT_CHECKPOINTS = {
    "tensors truncated": (lambda p: _truncate(p / CKPT_TENSORS), f"{CKPT_TENSORS}: corrupt checkpoint tensors"),
    "tensors not safetensors": (lambda p: (p / CKPT_TENSORS).write_bytes(b"\x00" * 100), "corrupt checkpoint tensors"),
    "tensors empty": (lambda p: (p / CKPT_TENSORS).write_bytes(b""), "corrupt checkpoint tensors"),
    "metadata truncated": (lambda p: _truncate(p / CKPT_META), f"{CKPT_META}: corrupt checkpoint metadata"),
    "metadata not UTF-8": (lambda p: (p / CKPT_META).write_bytes(b"\xff\xfe{"), "corrupt checkpoint metadata"),
    "metadata a list": (lambda p: (p / CKPT_META).write_text("[1, 2]"), "not a JSON object"),
    "optimizer key missing": (_edit_meta(lambda m: m.pop("optimizer")), "lacks optimizer"),
    "optimizer scalars missing": (_edit_meta(lambda m: m["optimizer"].pop("scalars")), "lacks optimizer.scalars"),
    "param groups wrong": (_edit_meta(lambda m: m["optimizer"].update(param_groups=[])), "optimizer state does not load"),
    "epoch missing": (_edit_meta(lambda m: m.pop("epoch")), "lacks epoch"),
    "rng state missing": (_drop_tensor("rng.torch"), "lacks rng.torch"),
    "optimizer tensor missing": (_drop_tensor("optim.0.momentum_buffer"), "lacks optim.0.momentum_buffer"),
}


@pytest.mark.parametrize("case", CORRUPT_CHECKPOINTS, ids=list(CORRUPT_CHECKPOINTS))
def test_a_corrupt_checkpoint_is_one_line_naming_the_file_and_the_fix(tmp_path, case):
    corrupt, expected = CORRUPT_CHECKPOINTS[case]
    model, opt = _model_opt()
    save_checkpoint(tmp_path, model, opt, {"epoch": 1, "step": 1, "history": []})
    corrupt(tmp_path)
    model, opt = _model_opt()
    with pytest.raises(EmozooError) as info:
        load_checkpoint(tmp_path, model, opt)
    message = str(info.value)
    assert expected in message and "\n" not in message, message
    assert str(tmp_path) in message and "without --resume" in message, message


def test_resume_from_a_corrupt_checkpoint_through_the_cli(fer_csv, tmp_path):
    args = ["train", "mini_xception", "--model-arg", "width=0.5", "--data", fer_csv, "--epochs", 1, "--limit", 32,
            "--batch-size", 32, "--num-workers", 0, "--val-split", "none", "--out", tmp_path]
    assert cli(*args).exit_code == 0
    _truncate(tmp_path / "checkpoint" / CKPT_TENSORS)
    result = cli(*args, "--resume", "--epochs", 2)
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "corrupt checkpoint tensors" in result.output and "without --resume" in result.output


BAD_RECIPES = {  # file contents -> what the one line must say
    "epochs a string": ({"recipe": {"epochs": "2"}},
                        'recipe: epochs is "2" (a string); expected a whole number (without quotes)'),
    "lr a string": ({"recipe": {"lr": "0.1"}}, 'lr is "0.1" (a string); expected a number'),
    "epochs a fraction": ({"recipe": {"epochs": 1.5}}, "epochs is 1.5 (a number); expected a whole number"),
    "batch_size null": ({"recipe": {"batch_size": None}}, "batch_size is null (null); expected a whole number"),
    "epochs true": ({"recipe": {"epochs": True}}, "epochs is true (true/false); expected a whole number"),
    "amp a string": ({"recipe": {"amp": "yes"}}, 'amp is "yes" (a string); expected true or false'),
    "lr NaN": ({"recipe": {"lr": float("nan")}}, "lr is NaN (a number); expected a finite number"),
    "model a number": ({"model": 5}, "model is 5; expected a string"),
    "model_args a list": ({"model": "resnet10", "model_args": [1]}, "model_args is [1]; expected a JSON object"),
    "recipe a list": ({"recipe": [1, 2]}, "recipe is [1, 2]; expected a JSON object"),
    "distill_args a list": ({"recipe": {"distill_args": [1]}}, "distill_args is [1] (a list); expected a JSON object"),
    "file a list": ([{"epochs": 2}], "a recipe is a JSON object"),
    "file a string": ("epochs", "a recipe is a JSON object"),
    "num_workers negative": ({"recipe": {"num_workers": -1}},
                             "num_workers is -1 (a whole number); expected a number greater than or equal to 0"),
    "weight_decay negative": ({"recipe": {"weight_decay": -0.1}},
                              "weight_decay is -0.1 (a number); expected a number greater than or equal to 0"),
    "limit negative": ({"recipe": {"limit": -5}}, "limit is -5"),
    "warmup negative": ({"recipe": {"warmup_epochs": -1}}, "warmup_epochs is -1"),
    "swa_epochs negative": ({"recipe": {"swa_epochs": -1}}, "swa_epochs must be between 0 and epochs"),
    "momentum negative": ({"recipe": {"momentum": -0.9}}, "momentum is -0.9"),
    "holdout 1": ({"recipe": {"holdout": 1}}, "recipe: holdout must be in [0, 1)"),
    "unknown recipe key": ({"recipe": {"epochz": 5}}, "recipe: unknown key(s) ['epochz']; did you mean 'epochs'?"),
    "hyper-parameter at the top": ({"epochs": 5}, "unknown key 'epochs'; 'epochs' is a hyper-parameter: put it under \"recipe\""),
    "unknown top-level key": ({"modle": "resnet10"}, "unknown key 'modle'; did you mean 'model'?"),
}


@pytest.mark.parametrize("case", BAD_RECIPES, ids=list(BAD_RECIPES))
def test_a_bad_recipe_file_is_one_line_naming_the_key_and_what_is_expected(fer_csv, tmp_path, case):
    content, expected = BAD_RECIPES[case]
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(content))
    result = cli("train", "resnet10", "--recipe", path, "--data", fer_csv, "--out", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {path}: ") and result.output.count("\n") == 1, result.output
    assert expected in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_recipe_file_that_is_not_utf8(fer_csv, tmp_path):
    path = tmp_path / "recipe.json"
    path.write_bytes(b'{"model": "r\xe9snet"}')
    result = cli("train", "--recipe", path, "--data", fer_csv, "--out", tmp_path / "out")
    assert result.exit_code == 1 and result.output == f"Error: {path}: not UTF-8 text (byte 12); save the recipe as UTF-8 JSON\n"


BAD_OPTIONS = {
    "--num-workers -1": (["--num-workers", -1], "recipe: num_workers is -1"),
    "--weight-decay -1": (["--weight-decay", -1], "recipe: weight_decay is -1"),
    "--limit -1": (["--limit", -1], "recipe: limit is -1"),
    "--warmup-epochs -1": (["--warmup-epochs", -1], "recipe: warmup_epochs is -1"),
    "--holdout 0.999": (["--holdout", 0.999], "--holdout 0.999 of the 320 training images leaves none to train on"),
}


@pytest.mark.parametrize("case", BAD_OPTIONS, ids=list(BAD_OPTIONS))
def test_a_bad_recipe_option_is_one_line(fer_csv, tmp_path, case):
    options, expected = BAD_OPTIONS[case]
    result = cli("train", "resnet10", "--data", fer_csv, "--out", tmp_path / "out", "--num-workers", 0, *options)
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert expected in result.output, result.output


def test_a_recipe_built_in_python_is_checked_too():
    from emozoo.train import Recipe

    with pytest.raises(EmozooError, match="recipe: epochs is \"3\""):
        Recipe(epochs="3")
