"""Bad inputs a user can give (configs, create() arguments, data files, plugins): each one a one-line
EmozooError whose message names the problem, never a traceback, and never a huge allocation first."""
from __future__ import annotations

import pytest

import emozoo
from emozoo._config import ModelConfig


def _config(**over):
    return {"architecture": "resnet18", **over}


CONFIG_CASES = [
    ("architecture is a number", _config(architecture=5), "'architecture' must be a model name"),
    ("architecture is empty", _config(architecture=""), "'architecture' must be a model name"),
    ("input is a string", _config(input="x"), "'input' must be an object"),
    ("input is a list", _config(input=[48, 48]), "'input' must be an object"),
    ("input.size is a string", _config(input={"size": "48"}), "input.size must be"),
    ("input.size is huge", _config(input={"size": [100000, 100000]}), "limit of 1024 pixels"),
    ("label_names is a string", _config(label_names="abc"), "label_names must be a list"),
    ("label_names has a number", _config(label_names=["a", 3]), "distinct names"),
    ("model_args is a list", _config(model_args=[1]), "'model_args' must be an object"),
]


@pytest.mark.parametrize("what,data,match", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_json(what, data, match):
    with pytest.raises(emozoo.ConfigError, match=match) as info:
        ModelConfig.from_dict(data, source="config.json")
    assert "\n" not in str(info.value)


CREATE_CASES = [
    ("num_classes=0", ("resnet18",), {"num_classes": 0}, "num_classes must be a positive integer"),
    ("num_classes=-2", ("resnet18",), {"num_classes": -2}, "num_classes must be a positive integer"),
    ("num_classes=2.5", ("resnet18",), {"num_classes": 2.5}, "num_classes must be a positive integer"),
    ("label_names a string", ("resnet18",), {"label_names": "abc"}, "label_names must be a list"),
    ("in_chans=2", ("resnet18",), {"in_chans": 2}, "in_chans must be 1 or 3"),
    ("input_size=(4, 4)", ("resnet18",), {"input_size": (4, 4)}, "at least 8 pixels"),
    ("pretrained input_size=(4, 4)", ("emoxnetlite",), {"pretrained": True, "input_size": (4, 4)},
     "at least 8 pixels"),
    ("pretrained input_size huge", ("emoxnetlite",), {"pretrained": True, "input_size": (5000, 5000)},
     "limit of 1024"),
    ("input_size a number", ("resnet18",), {"input_size": 48}, "input_size must be"),
    ("width=0", ("resnet18",), {"width": 0}, "width must be a positive number"),
    ("width=-1", ("vgg13",), {"width": -1.0}, "width must be a positive number"),
    ("width=512", ("resnet18",), {"width": 512}, "over emozoo's limit of 500,000,000 .*EMOZOO_MAX_PARAMS"),
    ("members a string", ("emoxnet",), {"members": "resnet18"}, "members must be a non-empty list"),
    ("members empty", ("emoxnet",), {"members": []}, "members must be a non-empty list"),
    ("a huge member", ("emoxnet",), {"members": ["resnet18", ("resnet18", {"width": 400})]}, "EMOZOO_MAX_PARAMS"),
    ("timm checkpoint_path", ("timm/resnet18",), {"checkpoint_path": "/etc/passwd"}, "checkpoint_path.*refused"),
    ("timm pretrained", ("timm/resnet18",), {"pretrained_cfg_overlay": {"file": "/etc/passwd"}}, "refused"),
    ("member checkpoint_path", ("emoxnet",), {"members": [("timm/resnet18", {"checkpoint_path": "/x"})]}, "refused"),
    ("backbone pretrained", ("resnet18",), {"pretrained_path": "/x"}, "refused"),
    ("fusion checkpoint_path", ("emoxnet",), {"members": ["resnet18"], "fusion": "stacking",
                                              "fusion_args": {"checkpoint_path": "/x"}}, "refused"),
]


@pytest.mark.parametrize("what,args,kwargs,match", CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_bad_create_arguments(what, args, kwargs, match):
    with pytest.raises(emozoo.ConfigError, match=match) as info:
        emozoo.create(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_a_config_over_the_parameter_budget_is_refused_before_allocating(tmp_path, monkeypatch):
    """A 1 KB config asking for width 512 would allocate tens of GB: refused from the meta-device count."""
    (tmp_path / "config.json").write_text(ModelConfig("resnet18", {"width": 512}).to_json())
    with pytest.raises(emozoo.ConfigError, match="parameters, over emozoo's limit"):
        emozoo.create(tmp_path)
    monkeypatch.setenv("EMOZOO_MAX_PARAMS", "1000")
    with pytest.raises(emozoo.ConfigError, match="limit of 1,000 .EMOZOO_MAX_PARAMS"):
        emozoo.create("resnet18")
    monkeypatch.setenv("EMOZOO_MAX_PARAMS", "lots")
    with pytest.raises(emozoo.ConfigError, match="EMOZOO_MAX_PARAMS must be a number"):
        emozoo.create("resnet18")


def test_checkpoint_path_in_a_saved_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(ModelConfig("timm/resnet18", {"checkpoint_path": "/etc/passwd"}).to_json())
    with pytest.raises(emozoo.ConfigError, match="checkpoint_path"):
        emozoo.create(tmp_path)


# ------------------------------------------------------------------------------------------------- data files
def _npz(path, n=6, images=None, **over):
    import numpy as np

    arrays = {"images": np.zeros((n if images is None else images, 48, 48), np.uint8),
              "fer_label": np.zeros(n, np.int64), "ferplus_votes": np.tile(np.eye(10, dtype=np.int64)[0] * 10, (n, 1)),
              "usage": np.array(["Training"] * n), "row_index": np.arange(n), "row_index_exact": np.ones(n, bool)}
    np.savez(path, **{**arrays, **over})
    return path


def _truncated(path):
    _npz(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


NPZ_CASES = [
    ("empty file", lambda p: (p.write_bytes(b""), p)[1], "the file is empty"),
    ("not a zip", lambda p: (p.write_text("hello, not a zip"), p)[1], "not a readable .npz file: not a zip"),
    ("truncated zip", _truncated, "not a zip archive, or a truncated one"),
    ("fewer images than labels", lambda p: _npz(p, images=4), "lengths differ .images: 4, fer_label: 6"),
    ("fewer labels than images", lambda p: _npz(p, fer_label=__import__("numpy").zeros(2, "int64")),
     "lengths differ"),
    ("a missing array", lambda p: __import__("numpy").savez(p, images=__import__("numpy").zeros((2, 48, 48))) or p,
     "missing arrays"),
]


@pytest.mark.parametrize("labels", ["ferplus", "fer2013"])
@pytest.mark.parametrize("what,make,match", NPZ_CASES, ids=[c[0] for c in NPZ_CASES])
def test_bad_npz_files(tmp_path, what, make, match, labels):
    from emozoo.data import open_dataset

    path = make(tmp_path / "faces.npz")
    with pytest.raises(emozoo.DataError, match=match) as info:
        open_dataset(f"{labels}:{path}", "Training")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("what,make,match", NPZ_CASES[:4], ids=[c[0] for c in NPZ_CASES[:4]])
def test_bad_npz_files_in_the_cli_are_one_error_line(cli, tmp_path, what, make, match):
    path = make(tmp_path / "faces.npz")
    result = cli("train", "resnet10", "--model-arg", "width=0.25", "--data", f"ferplus:{path}", "--epochs", 1,
                 "--out", tmp_path / "out")
    assert result.exit_code == 1 and "Aborted" not in result.output
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize("command,option,pair,match", [
    ("train", "--model-arg", 'label_names=["a","b"]', "label_names is not an argument of the architecture; the classes"),
    ("train", "--model-arg", "pretrained=true", "pretrained is not an argument"),
    ("train", "--model-arg", "name=resnet18", "name is not an argument"),
    ("distill", "--student-arg", 'label_names=["a"]', "label_names is not an argument"),
    ("bench", "--model-arg", "flip=true", "use the command's --flip"),
    ("bench", "--model-arg", "pretrained=true", "pretrained is not an argument"),
])
def test_create_arguments_given_as_model_args_are_one_line(cli, tmp_path, command, option, pair, match):
    data = _npz(tmp_path / "faces.npz")
    args = {"train": ["train", "resnet10", "--data", f"ferplus:{data}", "--out", tmp_path / "o", "--epochs", 1],
            "distill": ["distill", "--teacher", "resnet10", "--student", "resnet10", "--data", f"ferplus:{data}",
                        "--out", tmp_path / "o", "--epochs", 1],
            "bench": ["bench", "resnet10", "--max-time", "0.1", "--min-runs", "1", "--batch-size", "1"]}[command]
    result = cli(*args, option, pair)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and match in result.stderr.replace("\n", " ")
