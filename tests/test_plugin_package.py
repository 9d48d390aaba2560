"""plugins/emozoo-extras installed for real (pip, into a temporary target) and discovered by entry point."""
import json
import subprocess
import sys
import textwrap

import pytest

from conftest import install_plugin_package


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return install_plugin_package(tmp_path_factory, "emozoo-extras")


def run_python(env, code):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_installed_plugin_is_discovered_and_works_in_an_emoxnet(installed):
    out = run_python(installed, """
        import json, torch, emozoo
        from emozoo._registry import ARCHITECTURES, FUSIONS, DISTILL_LOSSES
        emozoo.load_plugins()
        owners = [ARCHITECTURES.get("squeezenet").owner, FUSIONS.get("geometric_mean").owner,
                  DISTILL_LOSSES.get("logit_mse").owner]
        teacher = emozoo.create("emoxnet", members=["squeezenet", "mini_xception"], fusion="geometric_mean")
        student = emozoo.create("emoxnetlite", student="squeezenet")
        x = torch.randn(4, 1, 48, 48)
        loss = DISTILL_LOSSES.get("logit_mse").factory()(student(x), teacher(x).detach(), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        print(json.dumps({"owners": owners, "shape": list(teacher(x).shape), "loss": loss.item(),
                          "grad": all(p.grad is not None for p in student.parameters())}))
    """)
    data = json.loads(out)
    assert data["owners"] == ["extras"] * 3
    assert data["shape"] == [4, 8] and data["loss"] > 0 and data["grad"]


def test_cli_lists_the_installed_plugin_with_its_distribution(installed):
    out = subprocess.run([sys.executable, "-m", "emozoo.cli", "plugins", "--json"], env=installed,
                         capture_output=True, text=True, check=True).stdout
    extras = {p["name"]: p for p in json.loads(out)}["extras"]
    assert extras["distribution"] == "emozoo-extras" and extras["version"] == "0.1.0"
    assert extras["registered"] == {"backbone": ["squeezenet"], "fusion": ["geometric_mean"],
                                    "distillation loss": ["logit_mse"]}


def test_emozoo_load_plugins_empty_disables_it(installed):
    env = {**installed, "EMOZOO_LOAD_PLUGINS": ""}
    out = run_python(env, "import emozoo; print('squeezenet' in emozoo.list_models())")
    assert out.strip() == "False"
