import os

# Tests see the built-ins and what they register themselves, never plugins that happen to be installed
# on the machine; tests of installed plugins set EMOZOO_LOAD_PLUGINS in a subprocess.
os.environ["EMOZOO_LOAD_PLUGINS"] = ""
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]

#: fixtures that make a test one of the long kinds, and the marker each gets (see pyproject.toml), so that
#: ``-m "not hub_server and not pip_install"`` gives a quick run
FIXTURE_MARKERS = {"olah": "hub_server", "installed": "pip_install"}


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


def softmax(z, T=1.0):
    """Reference softmax of a list of floats at temperature ``T``, written out to check the library against."""
    import math

    e = [math.exp(v / T) for v in z]
    return [v / sum(e) for v in e]


def _tiny_net():
    from torch import nn

    import emozoo

    class TinyNet(emozoo.BackboneBase):
        """A 4-channel backbone small enough to build, save and push in milliseconds."""

        def __init__(self, num_classes=8, in_chans=1):
            super().__init__()
            self.conv = nn.Conv2d(in_chans, 4, 3, 2, 1)
            self.num_features, self.num_classes = 4, num_classes
            self.fc = nn.Linear(4, num_classes)

        def forward_features(self, x):
            return self.conv(x).mean((2, 3))

        def forward_head(self, f):
            return self.fc(f)

    return TinyNet


TinyNet = _tiny_net()


@pytest.fixture(scope="module")
def cli():
    """``cli(*args)``: run the emozoo command line in-process (click's CliRunner); arguments may be paths."""
    from click.testing import CliRunner

    from emozoo.cli import build_cli

    runner, group = CliRunner(), build_cli()
    return lambda *args: runner.invoke(group, [str(a) for a in args])


@pytest.fixture
def plugin():
    """Register plugin objects for one test: ``plugin(obj, name, distribution=None)`` (the distribution as if
    installed from that pip package); all are removed afterwards."""
    from emozoo.plugins import register_plugin, unregister_plugin

    names = []

    def add(obj, name, distribution=None):
        register_plugin(obj, name, distribution=distribution)
        names.append(name)
        return obj

    yield add
    for name in names:
        unregister_plugin(name)


@pytest.fixture
def user_registrations():
    """Undo ``emozoo.register_*`` calls made by a test."""
    from emozoo._registry import HOOK_REGISTRIES, USER_OWNER

    yield
    for registry in HOOK_REGISTRIES.values():
        registry.remove_owner(USER_OWNER)


@pytest.fixture(scope="session")
def fer_csv(tmp_path_factory):
    """A small fer2013.csv (Training 320 rows, PublicTest 64) in the Kaggle format, with learnable labels:
    class k's faces are brighter in band k, so a model can fit them in a few steps."""
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("fer") / "fer2013.csv"
    lines = ["emotion,pixels,Usage"]
    for usage, n in (("Training", 320), ("PublicTest", 64)):
        for i in range(n):
            label = i % 7
            img = rng.integers(0, 120, (48, 48))
            img[label * 6:(label + 1) * 6] += 120
            lines.append(f"{label},{' '.join(map(str, img.ravel()))},{usage}")
    path.write_text("\n".join(lines) + "\n")
    return path


def install_plugin_package(tmp_path_factory, name: str) -> dict:
    """pip-install ``plugins/<name>`` for real (no deps) into a temporary target; return the env that sees it."""
    import subprocess
    import sys

    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO / "plugins" / name)], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    env.pop("EMOZOO_LOAD_PLUGINS")
    return env
