"""The command line, through click's CliRunner."""
import json

import pytest


@pytest.fixture
def run(cli):
    return cli


def test_models_list(run):
    result = run("models", "list")
    assert result.exit_code == 0
    names = result.output.split()
    assert "emoxnetlite" in names and "resnet18" in names
    result = run("models", "list", "resnet*", "--json")
    assert json.loads(result.output) == ["resnet10", "resnet18"]
    result = run("models", "list", "nothing*")
    assert result.exit_code == 0 and "No models match" in result.output


def test_models_list_pretrained_json(run):
    result = run("models", "list", "--pretrained", "--json")
    assert result.exit_code == 0
    assert all("." in n for n in json.loads(result.output))


def test_info_text_and_json(run):
    result = run("info", "emoxnetlite")
    assert result.exit_code == 0, result.output
    for field in ("architecture:  emoxnetlite", "parameters:", "MACs:", "labels:        neutral, happiness",
                  "input:         1 channel(s), 48x48", "weights:"):
        assert field in result.output
    data = json.loads(run("info", "emoxnet", "--json").output)
    assert data["architecture"] == "emoxnet" and data["params"] > 0 and data["macs"] > 0
    assert [m["backbone"] for m in data["model_args"]["members"]] == ["resnet18", "vgg13", "convnext_pico"]
    assert data["label_names"][0] == "neutral" and data["input"]["size"] == [48, 48]
    assert "test-time flip" not in result.output
    assert "test-time flip: on" in run("info", "emoxnetlite.ferplus").output  # published with flip
    assert "test-time flip: on" in run("info", "emoxnet.ferplus").output  # the search chose it with


def test_info_on_a_saved_folder(run, tmp_path):
    import emozoo
    folder = tmp_path / "my.model"  # a dot in the folder name is not read as arch.tag
    emozoo.save_pretrained(emozoo.create("resnet10", width=0.25), folder)
    result = run("info", str(folder), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["architecture"] == "resnet10" and data["weights"] == f"local-dir:{folder}"


def test_missing_folder_is_named_as_a_folder(run, tmp_path):
    result = run("info", str(tmp_path / "no" / "such.model"))  # not read as the architecture before a dot
    assert result.exit_code == 1
    assert "such.model/config.json: not found" in result.output and "Unknown model" not in result.output


def test_unknown_name_is_one_clear_line(run):
    result = run("info", "emoxnett")
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: Unknown model 'emoxnett'. Did you mean: emoxnet, emoxnetlite, emoxnet.ferplus? "
                                     "`emozoo models list` shows them; timm architectures work as 'timm/<name>'.")
    assert "Traceback" not in result.output


def test_plugins(run):
    result = run("plugins", "--json")
    assert result.exit_code == 0
    data = {p["name"]: p for p in json.loads(result.output)}
    assert data["emozoo.builtins.backbones"]["builtin"]
    assert data["emozoo.builtins.backbones"]["distribution"] == "emozoo"
    assert "register_backbones" in data["emozoo.builtins.backbones"]["hooks"]
    assert "mean_prob" in data["emozoo.builtins.fusion"]["registered"]["fusion"]
    text = run("plugins").output
    assert "emozoo.builtins.distill (built-in)" in text and "distillation losss" not in text


def test_version_is_the_newest_release_in_the_changelog(run):
    import re

    from conftest import REPO

    newest = re.search(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert run("--version").output == f"emozoo, version {newest[1]}\n"


def test_commands_are_module_level_and_run_on_their_own():
    from click.testing import CliRunner

    from emozoo.cli import build_cli
    from emozoo.cli.bench import bench_cmd, export_cmd
    from emozoo.cli.hub import pull_cmd, push_cmd
    from emozoo.cli.models import info_cmd, list_cmd, models_group
    from emozoo.cli.plugins import plugins_cmd
    from emozoo.cli.predict import predict_cmd
    from emozoo.cli.train import distill_cmd, ensemble_cmd, eval_cmd, train_cmd, unpack_cmd

    root = build_cli()
    for cmd in (bench_cmd, export_cmd, pull_cmd, push_cmd, info_cmd, models_group, plugins_cmd, predict_cmd,
                distill_cmd, ensemble_cmd, eval_cmd, train_cmd, unpack_cmd):
        assert root.commands[cmd.name] is cmd
    assert models_group.commands["list"] is list_cmd
    result = CliRunner().invoke(list_cmd, ["resnet*", "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == ["resnet10", "resnet18"]
