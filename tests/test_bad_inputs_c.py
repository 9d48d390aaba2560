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
