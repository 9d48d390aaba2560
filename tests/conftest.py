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


@pytest.fixture
def plugin():
    """Register plugin objects for one test: ``plugin(obj, name)``; all are removed afterwards."""
    from emozoo.plugins import register_plugin, unregister_plugin

    names = []

    def add(obj, name):
        register_plugin(obj, name)
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
