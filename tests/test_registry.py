"""The registry and plugin manager: discovery, user registration, duplicates, broken plugins."""
import importlib.metadata
import inspect

import pytest
import torch
from conftest import TinyNet  # noqa: E402
from torch import nn

import emozoo
from emozoo import hookspecs, plugins
from emozoo._registry import ARCHITECTURES, DISTILL_LOSSES, FACE_DETECTORS, FUSIONS


def test_builtins_are_registered_through_the_hooks():
    names = {i.name: i for i in plugins.plugin_info()}
    for mod in plugins.DEFAULT_PLUGINS:
        assert names[mod].builtin and names[mod].error is None
    assert set(names["emozoo.builtins.backbones"].registered["backbone"]) >= {
        "resnet18", "vgg13", "mini_xception", "mobilenetv2", "convnext_pico"}
    assert set(names["emozoo.builtins.fusion"].registered["fusion"]) == {
        "mean_prob", "mean_logit", "learned_weights", "stacking", "majority_vote"}
    assert set(names["emozoo.builtins.distill"].registered["distillation loss"]) >= {"kd", "kd_smooth", "dist"}
    assert set(names["emozoo.builtins.detectors"].registered["face detector"]) == {"haar", "full"}
    for name in ("resnet18", "vgg13"):
        assert ARCHITECTURES.get(name).owner == "emozoo.builtins.backbones"


def test_importing_emozoo_loads_no_plugins():
    import subprocess
    import sys

    code = "import emozoo, emozoo.plugins as p; print(p._loaded)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_register_backbone_call_and_decorator(user_registrations):
    emozoo.register_backbone("tiny_call", TinyNet)

    @emozoo.register_backbone("tiny_deco", description="decorated")
    def make(num_classes=8, in_chans=1):
        return TinyNet(num_classes, in_chans)

    assert ARCHITECTURES.get("tiny_call").owner == "user"
    assert ARCHITECTURES.get("tiny_deco").description == "decorated"
    assert "tiny_deco" in emozoo.list_models("tiny*")
    model = emozoo.create("emoxnet", members=["tiny_call", "tiny_deco", "mini_xception"], fusion="mean_prob")
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, 8)


def test_duplicate_name_names_both_owners(user_registrations):
    with pytest.raises(emozoo.DuplicateNameError, match="emozoo.builtins.backbones.*user"):
        emozoo.register_backbone("resnet18", TinyNet)


def test_duplicate_from_a_plugin_is_refused_and_rolled_back(plugin):
    class Clash:
        @emozoo.hookimpl
        def register_backbones(self, register):
            register("clash_ok", TinyNet)
            register("vgg13", TinyNet)

    with pytest.raises(emozoo.DuplicateNameError, match="'vgg13'.*emozoo.builtins.backbones.*clash"):
        plugin(Clash(), "clash")
    assert "clash_ok" not in ARCHITECTURES  # nothing of the failed plugin stays registered
    assert ARCHITECTURES.get("vgg13").owner == "emozoo.builtins.backbones"


@pytest.mark.parametrize("registry,error,name", [
    (ARCHITECTURES, emozoo.UnknownModelError, "resnet19"),
    (FUSIONS, emozoo.UnknownFusionError, "mean_probs"),
    (DISTILL_LOSSES, emozoo.UnknownDistillLossError, "kd_smoth"),
    (FACE_DETECTORS, emozoo.UnknownFaceDetectorError, "hair"),
])
def test_unknown_names_list_close_matches(registry, error, name):
    with pytest.raises(error) as info:
        registry.get(name)
    assert isinstance(info.value, emozoo.EmozooError) and isinstance(info.value, LookupError)
    assert info.value.matches, str(info.value)
    assert "Did you mean" in str(info.value) and not str(info.value).startswith("'")


def test_invalid_names_and_factories_are_refused(user_registrations):
    with pytest.raises(emozoo.PluginError, match="invalid model name"):
        emozoo.register_backbone("bad.name", TinyNet)
    with pytest.raises(emozoo.PluginError, match="not callable"):
        emozoo.register_backbone("notcallable", 3)


def test_plugin_whose_hook_raises_is_reported_and_others_still_load(plugin):
    class Broken:
        @emozoo.hookimpl
        def register_fusions(self, register):
            raise RuntimeError("boom")

    with pytest.raises(emozoo.PluginError, match="broken.*boom"), pytest.warns(RuntimeWarning, match="broken"):
        plugin(Broken(), "broken")
    assert "mean_prob" in FUSIONS


def test_misspelled_hookimpl_is_rejected(plugin):
    class Typo:
        @emozoo.hookimpl
        def register_backbone(self, register):  # singular: not a hook
            pass

    with pytest.raises(emozoo.PluginError, match="invalid plugin"), pytest.warns(RuntimeWarning, match="typo"):
        plugin(Typo(), "typo")


def test_entry_point_that_fails_to_import_is_skipped(monkeypatch):
    """A broken installed plugin warns with its name and distribution; the built-ins still load."""
    class FakeDist:
        name, version = "emozoo-broken", "9.9"

    class FakeEP:
        name, value, group, dist = "broken_ep", "no_such_module_xyz", "emozoo", FakeDist()

        def load(self):
            raise ImportError("No module named 'no_such_module_xyz'")

    plugins._reset_for_tests()
    monkeypatch.setenv("EMOZOO_LOAD_PLUGINS", "broken_ep")
    monkeypatch.setattr(plugins, "entry_points", lambda group: [FakeEP()])
    try:
        with pytest.warns(RuntimeWarning, match="broken_ep.*emozoo-broken 9.9.*no_such_module_xyz"):
            plugins.load_plugins()
        info = {i.name: i for i in plugins.plugin_info()}
        assert "failed to import" in info["broken_ep"].error
        assert "resnet18" in ARCHITECTURES
    finally:
        monkeypatch.setenv("EMOZOO_LOAD_PLUGINS", "")
        plugins._reset_for_tests()
        plugins.load_plugins()


def test_emozoo_load_plugins_selects_entry_points(monkeypatch):
    class EP:
        def __init__(self, name):
            self.name, self.value, self.dist = name, name, None

    monkeypatch.setattr(plugins, "entry_points", lambda group: [EP("a"), EP("b"), EP("c")])
    monkeypatch.setenv("EMOZOO_LOAD_PLUGINS", "a, c")
    assert [e.name for e in plugins._selected_entry_points()] == ["a", "c"]
    monkeypatch.setenv("EMOZOO_LOAD_PLUGINS", "")
    assert plugins._selected_entry_points() == []
    monkeypatch.delenv("EMOZOO_LOAD_PLUGINS")
    assert len(plugins._selected_entry_points()) == 3


# -- datasette-style meta-tests: every hook is documented and has its own test ---------------------
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]


def test_every_hookspec_is_documented_and_tested():
    assert set(HOOKS) == {"register_backbones", "register_architectures", "register_fusions",
                          "register_distill_losses", "register_face_detectors", "register_commands",
                          "register_datasets"}
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc) > 40, f"hookspec {name} needs a docstring"
        assert f"test_hook_{name}" in globals(), f"hook {name} has no test_hook_{name}"


def test_hook_register_backbones(plugin):
    class P:
        @emozoo.hookimpl
        def register_backbones(self, register):
            register("hooktiny", TinyNet)

    plugin(P(), "p_backbones")
    assert ARCHITECTURES.get("hooktiny").owner == "p_backbones"
    assert emozoo.create("hooktiny")(torch.randn(1, 1, 48, 48)).shape == (1, 8)


def test_hook_register_architectures(plugin, tmp_path):
    """A plugin's architecture declares its input, labels, flip, card text and published weights, as the
    built-in EmoXNet and EmoXNetLite do; nothing outside its own module names it."""

    class Wrapped(nn.Module):
        def __init__(self, num_classes=3, in_chans=3):
            super().__init__()
            self.net = TinyNet(num_classes, in_chans)

        def forward(self, x):
            return self.net(x)

    cfg = emozoo.ArchitectureCfg(
        backbone=False, input=emozoo.InputSpec(in_chans=3, size=(32, 32)), label_names=("calm", "joy", "anger"),
        describe=lambda config: "A wrapped tiny network", card_tags=("wrapped",),
        pretrained={"demo": emozoo.PretrainedCfg(folder=tmp_path / "wrapped.demo")})

    class P:
        @emozoo.hookimpl
        def register_architectures(self, register):
            register("wrapped", Wrapped, cfg=cfg)

    plugin(P(), "p_arch", distribution="emozoo-wrapped")
    assert "wrapped" in emozoo.list_models() and "wrapped" not in emozoo.list_backbones()
    assert "wrapped.demo" in emozoo.list_models(pretrained=True)
    model = emozoo.create("wrapped")
    assert model.config.label_names == ("calm", "joy", "anger") and model.config.input.shape == (3, 32, 32)
    with pytest.raises(emozoo.ConfigError, match="flip= is an option of emoxnet and emoxnetlite, not of 'wrapped'"):
        emozoo.create("wrapped", flip=True)
    with pytest.raises(emozoo.ConfigError, match="'wrapped' is not a backbone"):
        emozoo.create("emoxnet", members=["wrapped"])
    with pytest.raises(emozoo.WeightsError, match="wrapped.demo.*no config.json"):
        emozoo.create("wrapped", pretrained=True)  # the tag's folder is still empty
    emozoo.save_pretrained(model, tmp_path / "wrapped.demo", name="wrapped.demo")
    loaded = emozoo.create("wrapped", pretrained=True).eval()
    assert loaded.config.name == "wrapped.demo" and loaded.weights_origin == "shipped with emozoo-wrapped"
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), model.eval()(x))
    assert loaded.config.requires == {"model wrapped": "emozoo-wrapped"}


def test_architecture_fields_are_checked_when_registered(plugin):
    class P:
        @emozoo.hookimpl
        def register_backbones(self, register):
            register("badcfg", TinyNet, pretrianed={})

    with pytest.raises(emozoo.PluginError, match=r"unknown field\(s\) \['pretrianed'\]"):
        plugin(P(), "p_badcfg")
    assert "badcfg" not in emozoo.list_models()


def test_hook_register_fusions(plugin):
    class MaxFusion(nn.Module):
        trainable = False

        def __init__(self, num_members, num_classes, feature_dims):
            super().__init__()

        def forward(self, logits, features):
            return logits.max(0).values

    class P:
        @emozoo.hookimpl
        def register_fusions(self, register):
            register("max_logit", MaxFusion)

    plugin(P(), "p_fusions")
    model = emozoo.create("emoxnet", members=["mini_xception", "resnet10"], fusion="max_logit")
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, 8)


def test_hook_register_distill_losses(plugin):
    class L1(nn.Module):
        def forward(self, s, t, target):
            return (s - t).abs().mean()

    class P:
        @emozoo.hookimpl
        def register_distill_losses(self, register):
            register("l1", L1)

    plugin(P(), "p_losses")
    loss = DISTILL_LOSSES.get("l1").factory()
    assert loss(torch.ones(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])).item() == 1.0


def test_hook_register_face_detectors(plugin):
    class Centre:
        """The middle half of the image."""

        def __init__(self, score=0.5):
            self.score = score

        def detect(self, image):
            h, w = image.shape[:2]
            return [emozoo.Face((w / 4, h / 4, 3 * w / 4, 3 * h / 4), self.score)]

    class P:
        @emozoo.hookimpl
        def register_face_detectors(self, register):
            register("centre", Centre)

    assert emozoo.create_detector("auto").__class__.__name__ == "HaarDetector"   # no blazeface here
    plugin(P(), "p_detectors")
    assert FACE_DETECTORS.get("centre").owner == "p_detectors" and "centre" in emozoo.list_detectors()
    assert emozoo.create_detector("centre", score=0.9).detect(torch.zeros(8, 4, 3).numpy())[0].box == (1, 2, 3, 6)
    pred = emozoo.predict(torch.zeros(40, 40, 3, dtype=torch.uint8).numpy(), emozoo.create("emoxnetlite"), "centre")[0]
    assert pred.faces[0].box == (10, 10, 30, 30) and pred.faces[0].confidence == 0.5


def test_auto_detector_prefers_blazeface_when_registered(plugin):
    class P:
        @emozoo.hookimpl
        def register_face_detectors(self, register):
            register("blazeface", lambda: "the blazeface detector")

    plugin(P(), "p_fake_blazeface")
    assert emozoo.create_detector() == "the blazeface detector"


def test_hook_register_commands(plugin):
    import click
    from click.testing import CliRunner

    from emozoo.cli import build_cli

    class P:
        @emozoo.hookimpl
        def register_commands(self, cli):
            @cli.command()
            def hello():
                click.echo("hello from a plugin")

    plugin(P(), "p_commands")
    result = CliRunner().invoke(build_cli(), ["hello"])
    assert result.exit_code == 0 and "hello from a plugin" in result.output


def test_the_version_is_released_in_the_changelog_and_installed_metadata():
    """The one version string (``emozoo/_version.py``) has its dated CHANGELOG section, and the installed
    package metadata, which pyproject.toml reads from that file, agrees."""
    import re
    from pathlib import Path

    changelog = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(emozoo.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    assert importlib.metadata.version("emozoo") == emozoo.__version__


def test_hook_register_datasets(plugin, tmp_path):
    """A plugin adds a data format (a company CSV of ``path,label`` rows): open_dataset and --data find it by name."""
    import json
    from pathlib import Path

    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from emozoo.cli import build_cli
    from emozoo.data import DATASETS, FaceDataset, open_dataset
    from emozoo.errors import DataError, UnknownDatasetError

    class CompanyCsv(FaceDataset):
        """path,label rows; one file per split, e.g. faces.csv."""

        def __init__(self, path, split, transform=None, label_names=None):
            lines = Path(path).read_text().split()[1:]
            self.files = [Path(path).parent / line.split(",")[0] for line in lines]
            labels = [line.split(",")[1] for line in lines]
            names = sorted(set(labels))
            self.split, self.transform = split, transform
            self._set_labels(names, np.array([names.index(x) for x in labels]), label_names, str(path))

        def load_image(self, index):
            return Image.open(self.files[index]).convert("L")

    class P:
        @emozoo.hookimpl
        def register_datasets(self, register):
            register("mycsv", CompanyCsv)

    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{'happiness' if i % 2 else 'neutral'}")
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    plugin(P(), "p_datasets")
    assert DATASETS.get("mycsv").owner == "p_datasets"
    data = open_dataset(f"mycsv:{tmp_path / 'faces.csv'}", "test")
    assert type(data) is CompanyCsv and len(data) == 6 and data.label_names == ("happiness", "neutral")

    folder = tmp_path / "tiny"
    emozoo.save_pretrained(emozoo.create("resnet10", width=0.25), folder)
    result = CliRunner().invoke(build_cli(), ["eval", str(folder), "--data", f"mycsv:{tmp_path / 'faces.csv'}",
                                              "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["n"] == 6 and doc["data"] == f"mycsv:{tmp_path / 'faces.csv'}"

    with pytest.raises(UnknownDatasetError, match="unknown data spec prefix 'mycvs'; did you mean mycsv") as info:
        open_dataset(f"mycvs:{tmp_path / 'faces.csv'}", "test")
    assert isinstance(info.value, DataError) and "\n" not in str(info.value)
    result = CliRunner().invoke(build_cli(), ["eval", str(folder), "--data", "mycvs:faces.csv"])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "Error: " + str(UnknownDatasetError("mycvs", DATASETS.names()))]


def test_a_name_clash_at_load_skips_only_the_culprit(monkeypatch):
    """Entry points sorted after a plugin whose name clashes still load; the culprit is named and skipped."""
    class Clash:
        @emozoo.hookimpl
        def register_backbones(self, register):
            register("resnet18", TinyNet)

    class Later:
        @emozoo.hookimpl
        def register_backbones(self, register):
            register("later_net", TinyNet)

    class EP:
        def __init__(self, name, obj):
            self.name, self.value, self.group, self.dist, self.obj = name, name, "emozoo", None, obj

        def load(self):
            return self.obj

    plugins._reset_for_tests()
    monkeypatch.setenv("EMOZOO_LOAD_PLUGINS", "a_clash,b_later")
    monkeypatch.setattr(plugins, "entry_points", lambda group: [EP("a_clash", Clash()), EP("b_later", Later())])
    try:
        with pytest.warns(RuntimeWarning, match="a_clash.*resnet18"):
            plugins.load_plugins()
        assert "later_net" in ARCHITECTURES
        assert ARCHITECTURES.get("resnet18").owner == "emozoo.builtins.backbones"
        assert "resnet18" in plugins._info["a_clash"].error
    finally:
        monkeypatch.setenv("EMOZOO_LOAD_PLUGINS", "")
        plugins._reset_for_tests()
        plugins.load_plugins()


def test_plugin_commands_cannot_break_or_replace_the_builtins(plugin):
    import click
    from click.testing import CliRunner

    from emozoo.cli import build_cli

    class Broken:
        @emozoo.hookimpl
        def register_commands(self, cli):
            @cli.command()
            def half():
                pass
            raise RuntimeError("boom")

    class Hijack:
        @emozoo.hookimpl
        def register_commands(self, cli):
            @cli.command()
            def predict():
                click.echo("hijacked")

            @cli.command()
            def fine():
                click.echo("fine")

    plugin(Broken(), "p_broken_cmds")
    plugin(Hijack(), "p_hijack")
    with pytest.warns(RuntimeWarning) as caught:
        group = build_cli()
    messages = " ".join(str(w.message) for w in caught)
    assert "p_broken_cmds" in messages and "boom" in messages
    assert "p_hijack" in messages and "'predict'" in messages
    runner = CliRunner()
    assert "half" not in group.commands
    assert runner.invoke(group, ["fine"]).output == "fine\n"
    assert "hijacked" not in runner.invoke(group, ["predict", "--help"]).output
    assert runner.invoke(group, ["plugins"]).exit_code == 0


@pytest.mark.parametrize("exc", [ValueError("bad value"), RuntimeError("CUDA went away"), ZeroDivisionError("x")])
def test_a_factory_that_raises_is_named_in_one_line(user_registrations, exc):
    def factory(num_classes=8, in_chans=1):
        raise exc

    emozoo.register_backbone("raises_net", factory)
    with pytest.raises(emozoo.PluginError, match=f"'raises_net' .*user.*{type(exc).__name__}: {exc}"):
        emozoo.create("raises_net")
    with pytest.raises(emozoo.PluginError, match="raises_net"):
        emozoo.create("emoxnet", members=["raises_net"])


def test_a_factory_interrupted_is_not_wrapped(user_registrations):
    def factory(num_classes=8, in_chans=1):
        raise KeyboardInterrupt

    emozoo.register_backbone("interrupted_net", factory)
    with pytest.raises(KeyboardInterrupt):
        emozoo.create("interrupted_net")
