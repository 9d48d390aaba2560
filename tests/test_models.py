"""Every registered member, fusion and loss runs; create() and save/load behave as documented."""
import json
import os
import stat
from pathlib import Path

import pytest
import torch

import emozoo
from emozoo._checkpoint import save_checkpoint
from emozoo._registry import DISTILL_LOSSES

SHAPES = [(1, 48, 48), (3, 112, 112)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", emozoo.list_backbones())
def test_every_backbone_forward_backward(name, shape):
    torch.manual_seed(0)
    model = emozoo.create(name, in_chans=shape[0], input_size=shape[1:])
    x = torch.randn(2, *shape)
    out = model(x)
    assert out.shape == (2, 8)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features)
    assert torch.allclose(model.forward_head(feats), out, atol=1e-5) or model.training  # dropout in train mode


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fusion", emozoo.list_fusions())
def test_every_fusion_in_an_ensemble_forward_backward(fusion, shape):
    model = emozoo.create("emoxnet", members=["mini_xception", "resnet10", ("mini_xception", {"width": 1.0})],
                          fusion=fusion, in_chans=shape[0], input_size=shape[1:])
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 8)
    probs = out.softmax(-1)
    assert torch.allclose(probs.sum(-1), torch.ones(2), atol=1e-5)
    out.sum().backward()
    assert any(p.grad is not None for p in model.members.parameters())
    if getattr(model.fusion, "trainable", False):
        assert any(p.grad is not None for p in model.fusion.parameters())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("loss_name", emozoo.list_distill_losses())
def test_every_distill_loss_trains_a_student(loss_name, shape):
    torch.manual_seed(0)
    teacher = emozoo.create("emoxnet", members=["mini_xception", "resnet10"], in_chans=shape[0], input_size=shape[1:])
    student = emozoo.create("emoxnetlite", in_chans=shape[0], input_size=shape[1:])
    loss_fn = DISTILL_LOSSES.get(loss_name).factory()
    x = torch.randn(4, *shape)
    with torch.no_grad():
        t = teacher.eval()(x)
    for target in (torch.tensor([0, 1, 2, 3]), torch.softmax(torch.randn(4, 8), -1)):
        loss = loss_fn(student(x), t, target)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
    assert all(p.grad is not None for p in student.parameters())


def test_timm_architectures_are_members():
    model = emozoo.create("emoxnet", members=["timm/resnet10t", "mini_xception"], fusion="mean_logit")
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, 8)
    assert emozoo.create("timm/mobilenetv3_small_050")(torch.randn(1, 1, 48, 48)).shape == (1, 8)
    with pytest.raises(emozoo.UnknownBackboneError, match="timm/resnet18"):
        emozoo.create("timm/resnet19")


def test_config_carries_labels_and_input_spec():
    model = emozoo.create("emoxnetlite")
    assert model.config.label_names == emozoo.FERPLUS_LABELS
    assert model.config.input.shape == (1, 48, 48)
    assert model.config.model_args == {"student": {"backbone": "resnet10", "args": {"width": 0.5}}}
    model = emozoo.create("resnet18", label_names=["a", "b", "c"], in_chans=3)
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 3)
    assert model.config.input.mean == (emozoo._config.FER_MEAN,) * 3
    assert emozoo.create("vgg13", num_classes=5).config.label_names == tuple(f"class_{i}" for i in range(5))


def test_list_models():
    names = emozoo.list_models()
    assert {"emoxnet", "emoxnetlite", "resnet18", "vgg13", "mini_xception", "mobilenetv2", "convnext_pico"} <= set(names)
    assert emozoo.list_models("resnet*") == ["resnet10", "resnet18"]  # natural sort
    assert emozoo.list_models(["vgg*", "mini*"]) == ["mini_xception", "vgg13"]
    assert "vgg13" not in emozoo.list_models(exclude="vgg*")
    assert all("." in n for n in emozoo.list_models(pretrained=True))


@pytest.mark.parametrize("bad,error,match", [
    ("emoxnett", emozoo.UnknownModelError, "Did you mean: emoxnet"),
    ("resnet18.imagenet", emozoo.UnknownModelError, "resnet18.imagenet"),
])
def test_unknown_models(bad, error, match):
    with pytest.raises(error, match=match):
        emozoo.create(bad)


def test_bad_arguments_are_config_errors():
    with pytest.raises(emozoo.ConfigError, match="rejected its arguments.*widht"):
        emozoo.create("resnet18", widht=2)
    with pytest.raises(emozoo.ConfigError, match="emoxnet takes members="):
        emozoo.create("emoxnet", member=["resnet18"])
    with pytest.raises(emozoo.UnknownFusionError, match="mean_prob"):
        emozoo.create("emoxnet", members=["resnet10"], fusion="mean_probs")
    with pytest.raises(emozoo.UnknownBackboneError, match="resnet18"):
        emozoo.create("emoxnet", members=["resnet81"])
    with pytest.raises(emozoo.ConfigError, match="invalid member"):
        emozoo.create("emoxnet", members=[3])
    with pytest.raises(emozoo.ConfigError, match="num_classes=3 but 2 label_names"):
        emozoo.create("resnet10", num_classes=3, label_names=["a", "b"])
    with pytest.raises(emozoo.WeightsError, match="no pretrained weights are published for 'vgg13'"):
        emozoo.create("vgg13", pretrained=True)


@pytest.mark.parametrize("kwargs", [
    {"name": "resnet10"},
    {"name": "emoxnetlite"},
    {"name": "emoxnet", "members": ["mini_xception", "resnet10", "timm/resnet10t"], "fusion": "stacking"},
    {"name": "emoxnet", "members": ["convnext_pico", "vgg13"], "fusion": "learned_weights", "in_chans": 3},
    {"name": "emoxnet", "members": ["mini_xception", "resnet10"], "fusion": "learned_weights", "flip": True},
])
def test_save_and_load_round_trip(tmp_path, kwargs):
    torch.manual_seed(0)
    model = emozoo.create(**kwargs).eval()
    # make BN statistics and fusion parameters non-default so a lost tensor would show
    for buf in model.buffers():
        if buf.is_floating_point():
            buf.add_(torch.rand_like(buf))
    emozoo.save_pretrained(model, tmp_path / "m", metrics={"acc": 0.5})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = emozoo.create(f"local-dir:{tmp_path / 'm'}", pretrained=True).eval()
    x = torch.randn(3, *model.config.input.shape)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.config.metrics == {"acc": 0.5}
    assert loaded.config.model_args == model.config.model_args


def test_half_precision_storage(tmp_path):
    model = emozoo.create("resnet10").eval()
    emozoo.save_pretrained(model, tmp_path, dtype=torch.float16)
    loaded = emozoo.create(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-2)


@pytest.mark.skipif(not hasattr(os, "umask") or os.name == "nt", reason="POSIX file modes")
def test_saved_weights_and_checkpoints_follow_the_umask(tmp_path):
    # safetensors' save_file creates owner-only (0o600) files; shared model folders need the usual mode
    old = os.umask(0o022)
    try:
        model = emozoo.create("resnet10")
        folder = emozoo.save_pretrained(model, tmp_path / "m")
        (tmp_path / "ckpt").mkdir()
        save_checkpoint(tmp_path / "ckpt", model, torch.optim.SGD(model.parameters(), lr=0.1),
                        {"epoch": 1, "step": 1})
    finally:
        os.umask(old)
    for path in (folder / "model.safetensors", folder / "config.json", tmp_path / "ckpt" / "checkpoint.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert not list(tmp_path.rglob("*.tmp"))


def _saved(tmp_path, name="resnet10"):
    emozoo.save_pretrained(emozoo.create(name), tmp_path)
    return tmp_path


def test_malformed_config_names_the_key(tmp_path):
    d = _saved(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    for mutate, match in [
        (lambda c: c.pop("architecture"), "missing key 'architecture'"),
        (lambda c: c.update(colour="red"), r"unknown key\(s\) \['colour'\]"),
        (lambda c: c["input"].update(in_chans=2), "in_chans must be 1 or 3"),
        (lambda c: c.update(num_classes=7), "num_classes is 7 but label_names has 8"),
        (lambda c: c["input"].update(std=[0.0]), "std must be positive"),
        (lambda c: c.update(config_version=99), "newer than this emozoo"),
    ]:
        bad = json.loads(json.dumps(cfg))
        mutate(bad)
        (d / "config.json").write_text(json.dumps(bad))
        with pytest.raises(emozoo.ConfigError, match=match):
            emozoo.create(f"local-dir:{d}", pretrained=True)
    (d / "config.json").write_text("{not json")
    with pytest.raises(emozoo.ConfigError, match="not valid JSON"):
        emozoo.create(f"local-dir:{d}")


def test_weights_that_do_not_match_the_config_name_the_tensor(tmp_path):
    d = _saved(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_args"] = {"width": 0.5}
    cfg["weights_sha256"] = None
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(emozoo.WeightsError, match=r"shape mismatch stem.0.weight: file \(64, 1, 3, 3\) vs model \(32, 1, 3, 3\)"):
        emozoo.create(f"local-dir:{d}", pretrained=True)
    cfg["architecture"], cfg["model_args"] = "resnet18", {}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(emozoo.WeightsError, match="missing tensors stages.0.1"):
        emozoo.create(f"local-dir:{d}", pretrained=True)


def test_corrupt_weights_are_detected(tmp_path):
    d = _saved(tmp_path)
    data = bytearray((d / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(emozoo.WeightsError, match="sha256 .* does not match"):
        emozoo.create(f"local-dir:{d}", pretrained=True)
    (d / "model.safetensors").write_bytes(b"garbage")
    cfg = json.loads((d / "config.json").read_text())
    cfg["weights_sha256"] = None
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(emozoo.WeightsError, match="not a readable safetensors file"):
        emozoo.create(f"local-dir:{d}", pretrained=True)


def test_no_pickle_loading_anywhere_in_the_package():
    from pathlib import Path

    src = Path(emozoo.__file__).parent
    for path in src.rglob("*.py"):
        text = path.read_text()
        for forbidden in ("torch.load(", "import pickle", "pickle.load", "allow_pickle=True", "weights_only=False"):
            assert forbidden not in text, f"{path}: {forbidden}"


@pytest.mark.parametrize("fusion", ["mean_prob", "learned_weights", "stacking"])
def test_flip_averages_each_member_over_the_image_and_its_mirror(fusion):
    torch.manual_seed(0)
    model = emozoo.create("emoxnet", members=["mini_xception", "resnet10"], fusion=fusion, flip=True).eval()
    assert model.config.model_args["flip"] is True
    x = torch.randn(4, 1, 48, 48)
    x[0] = x[0].flip(-1).clone()  # an asymmetric batch: each view must be scored separately
    with torch.no_grad():
        logits, features = model.forward_members(x)
        for i, member in enumerate(model.members):
            want = (member(x) + member(x.flip(-1))) / 2
            torch.testing.assert_close(logits[i], want, rtol=1e-4, atol=1e-5)
        # mirror-invariant by construction, and not the same as the unflipped ensemble
        torch.testing.assert_close(model(x), model(x.flip(-1)), rtol=1e-4, atol=1e-5)
        model.flip = False
        assert not torch.allclose(model(x), model(x.flip(-1)), atol=1e-5)
    macs_flip = emozoo.count_macs(emozoo.create("emoxnet", members=["mini_xception"], flip=True), (1, 48, 48))
    macs = emozoo.count_macs(emozoo.create("emoxnet", members=["mini_xception"]), (1, 48, 48))
    assert 1.9 * macs < macs_flip < 2.1 * macs
    with pytest.raises(emozoo.ConfigError, match="flip= must be true or false"):
        emozoo.create("emoxnet", flip="yes")


def test_count_macs_and_params():
    model = emozoo.create("mini_xception")
    assert emozoo.count_params(model) == sum(p.numel() for p in model.parameters())
    macs = emozoo.count_macs(model, (1, 48, 48))
    assert 5e6 < macs < 1e8
    assert emozoo.count_macs(model, (1, 96, 96)) > 3 * macs


def test_face_transform_follows_the_model_input_spec():
    import numpy as np
    from PIL import Image

    gray = emozoo.create("emoxnetlite")
    colour = emozoo.create("resnet10", in_chans=3, input_size=(112, 112))
    rgb = np.random.default_rng(0).integers(0, 256, (100, 80, 3), dtype=np.uint8)
    for face in (Image.fromarray(rgb), rgb, rgb[..., 0], Image.fromarray(rgb).convert("L")):
        x = emozoo.face_transform(gray)(face)
        assert x.shape == (1, 48, 48) and x.dtype == torch.float32
        assert emozoo.face_transform(colour)(face).shape == (3, 112, 112)
    flat = np.full((48, 48), 255, np.uint8)  # white: (1 - mean) / std after scaling to [0, 1]
    expected = (1 - emozoo._config.FER_MEAN) / emozoo._config.FER_STD
    assert torch.allclose(emozoo.face_transform(gray)(flat), torch.full((1, 48, 48), expected), atol=1e-5)
    with pytest.raises(emozoo.ConfigError, match="emozoo.create"):
        emozoo.face_transform(torch.nn.Linear(2, 2))


def test_model_card_says_when_an_ensemble_flips():
    from emozoo._modelcard import model_card

    flipped = emozoo.create("emoxnet", members=["mini_xception", "resnet10"], flip=True)
    plain = emozoo.create("emoxnet", members=["mini_xception", "resnet10"])
    assert "Test-time flip (`flip: true`)" in model_card(flipped.config, "org/flipped")
    assert "flip" not in model_card(plain.config, "org/plain").lower()


def test_emoxnetlite_flip_averages_the_student_over_the_face_and_its_mirror(tmp_path):
    torch.manual_seed(0)
    plain = emozoo.create("emoxnetlite").eval()
    flipped = emozoo.create("emoxnetlite", flip=True).eval()
    assert flipped.config.model_args["flip"] is True and "flip" not in plain.config.model_args
    assert list(flipped.state_dict()) == list(plain.state_dict())  # no wrapper prefix: same weights file
    flipped.load_state_dict(plain.state_dict())
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(flipped(x), (plain(x) + plain(x.flip(-1))) / 2, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(plain(x), plain(x.flip(-1)), atol=1e-5)
    macs, macs_flip = (emozoo.count_macs(m, (1, 48, 48)) for m in (plain, flipped))
    assert 1.9 * macs < macs_flip < 2.1 * macs
    # saved without flip, loaded with it (and back): the override changes only the config
    folder = emozoo.save_pretrained(plain, tmp_path / "lite")
    again = emozoo.create(f"local-dir:{folder}", pretrained=True, flip=True).eval()
    assert again.config.model_args["flip"] is True
    with torch.no_grad():
        torch.testing.assert_close(again(x), flipped(x))
    folder = emozoo.save_pretrained(again, tmp_path / "lite_flip")
    assert emozoo.create(f"local-dir:{folder}", pretrained=True).config.model_args["flip"] is True
    off = emozoo.create(f"local-dir:{folder}", pretrained=True, flip=False).eval()
    assert "flip" not in off.config.model_args
    with torch.no_grad():
        torch.testing.assert_close(off(x), plain(x))


def test_flip_override_drops_metrics_measured_with_the_other_setting():
    stored = emozoo.create("emoxnetlite.ferplus", pretrained=True).config
    assert stored.model_args["flip"] is True and stored.metrics["PublicTest"]["accuracy"] > 0.8
    assert emozoo.create("emoxnetlite.ferplus", pretrained=True, flip=True).config.metrics == stored.metrics
    assert emozoo.create("emoxnetlite.ferplus", pretrained=True, flip=False).config.metrics == {}


def test_flip_override_is_refused_where_it_has_no_meaning():
    with pytest.raises(emozoo.ConfigError, match="flip= is an option of emoxnet and emoxnetlite"):
        emozoo.create("resnet18", flip=True)
    with pytest.raises(emozoo.ConfigError, match="emoxnetlite's flip= must be true or false"):
        emozoo.create("emoxnetlite", student="resnet10", **{"flip": 1})


def test_model_card_says_when_emoxnetlite_flips():
    from emozoo._modelcard import model_card

    card = model_card(emozoo.create("emoxnetlite", flip=True).config, "org/lite")
    assert "Test-time flip (`flip: true`)" in card and "flip=False" in card
    assert "flip" not in model_card(emozoo.create("emoxnetlite").config, "org/lite").lower()


@pytest.mark.parametrize("name,heads", [
    ("emoxnetlite.ferplus", {"head.fc"}),
    pytest.param("emoxnet.ferplus", {"members.0.heads.0.fc", "members.0.heads.1.fc", "members.1.head.fc"},
                 marks=pytest.mark.ensemble_weights),  # the two-branch ESR and the distilled ResNet-10
])
def test_pretrained_with_other_classes_keeps_all_but_the_heads(name, heads, caplog):
    """timm's fine-tuning convention: create(..., pretrained=True, num_classes=N or label_names=...) loads every
    weight except the classifier head(s), which start fresh, and says so in one log line."""
    import logging

    reference = emozoo.create(name, pretrained=True).state_dict()
    with caplog.at_level(logging.INFO, logger="emozoo"):
        model = emozoo.create(name, pretrained=True, label_names=["calm", "joy", "anger"])
    assert model.config.label_names == ("calm", "joy", "anger") and model.config.name is None
    assert model.config.metrics == {} and model.config.recipe["init"] == name
    state = model.state_dict()
    fresh = {k for k in state if k.rsplit(".", 1)[0] in heads}
    assert fresh and all(state[k].shape[0] == 3 for k in fresh if k.endswith(".weight"))
    assert all(torch.equal(v, reference[k]) for k, v in state.items() if k not in fresh)
    [line] = [r.getMessage() for r in caplog.records if "start fresh" in r.getMessage()]
    assert all(h in line for h in heads) and "calm, joy, anger" in line
    assert emozoo.create(name, pretrained=True, num_classes=2).config.label_names == ("class_0", "class_1")
    assert emozoo.create(name, pretrained=True, num_classes=8).config.name == name  # same classes: as published


def test_a_saved_folder_loads_from_a_path_string_or_pathlib(tmp_path):
    model = emozoo.create("resnet10", width=0.25).eval()
    folder = emozoo.save_pretrained(model, tmp_path / "saved")
    x = torch.randn(2, 1, 48, 48)
    for spec in (folder, str(folder), f"local-dir:{folder}"):
        assert torch.equal(emozoo.create(spec, pretrained=True).eval()(x), model(x))
    with pytest.raises(emozoo.ConfigError, match="not found"):
        emozoo.create(tmp_path / "missing", pretrained=True)


def test_a_bare_model_name_is_the_model_unless_a_folder_of_that_name_holds_a_saved_model(tmp_path, monkeypatch):
    from emozoo._builder import as_folder

    monkeypatch.chdir(tmp_path)
    (tmp_path / "esr").mkdir()  # e.g. a scratch folder of experiments
    (tmp_path / "notes").mkdir()
    assert as_folder("esr") is None and type(emozoo.create("esr", branches=1, width=0.25)).__name__ == "ESR"
    assert as_folder("notes") == Path("notes")  # not a model's name: a folder, reported as one
    with pytest.raises(emozoo.ConfigError, match="config.json: not found"):
        emozoo.create("notes", pretrained=True)
    assert as_folder("local-dir:esr") == Path("esr")
    model = emozoo.create("resnet10", width=0.25)
    emozoo.save_pretrained(model, tmp_path / "resnet10")  # a saved model takes the name over
    assert as_folder("resnet10") == Path("resnet10")
    assert emozoo.create("resnet10", pretrained=True).config.model_args == {"width": 0.25}


def test_members_at_their_own_input_size_see_the_input_resized(tmp_path):
    import torch.nn.functional as F

    from emozoo.workflows.ensemble import assemble_ensemble, unpack_ensemble

    torch.manual_seed(0)
    small = emozoo.create("resnet10", width=0.25)
    large = emozoo.create("resnet10", width=0.25, input_size=(64, 64))  # trained on upsampled faces
    model = assemble_ensemble([large, small], "mean_logit").eval()
    assert tuple(model.config.input.size) == (48, 48)  # the smallest member's size
    assert model.config.model_args["members"][0]["input_size"] == [64, 64]
    assert "input_size" not in model.config.model_args["members"][1]
    x = torch.randn(2, 1, 48, 48)
    logits, _ = model.forward_members(x)
    with torch.no_grad():
        assert torch.allclose(logits[0], large.eval()(F.interpolate(x, size=(64, 64), mode="bilinear")), atol=1e-5)
        assert torch.allclose(logits[1], small.eval()(x), atol=1e-5)
    emozoo.save_pretrained(model, tmp_path / "ens")
    again = emozoo.create(f"local-dir:{tmp_path / 'ens'}", pretrained=True).eval()
    assert torch.allclose(again(x), model(x), atol=1e-5)
    from emozoo._modelcard import model_card

    assert "| 0 | `resnet10` | `{\"width\": 0.25}` | 64x64 (resized) |" in model_card(again.config, "emozoo/x")
    unpacked = unpack_ensemble(f"local-dir:{tmp_path / 'ens'}", tmp_path / "members")
    assert [tuple(emozoo.create(f"local-dir:{d}", pretrained=True).config.input.size) for d in unpacked] == [
        (64, 64), (48, 48)]
    with pytest.raises(emozoo.ConfigError, match="input spec"):
        assemble_ensemble([small, emozoo.create("resnet10", width=0.25, in_chans=3)])
    with pytest.raises(emozoo.ConfigError, match=r"member 'resnet10': input.size must be \[height, width\]"):
        emozoo.create("emoxnet", members=[{"backbone": "resnet10", "input_size": [64]}])
    with pytest.raises(emozoo.ConfigError, match=r"member 'resnet10': input.size must be \[height, width\]"):
        emozoo.create("emoxnet", members=[{"backbone": "resnet10", "input_size": "64x64"}])
