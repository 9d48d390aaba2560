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


LOAD_TAG = """
    import json, torch, emozoo
    model = emozoo.create("squeezenet.ferplus_w25", pretrained=True, revision={revision!r}).eval()
    with torch.no_grad():
        probs = model(torch.zeros(1, *model.config.input.shape)).softmax(-1)
    print(json.dumps({{"name": model.config.name, "origin": model.weights_origin, "width": model.config.model_args,
                      "sum": float(probs.sum()), "sha": model.config.weights_sha256}}))
"""


def test_the_plugins_pretrained_tag_loads_offline_from_the_installed_package(installed, tmp_path):
    env = {**installed, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hub")}
    data = json.loads(run_python(env, LOAD_TAG.format(revision=None)))
    assert data["name"] == "squeezenet.ferplus_w25" and data["origin"] == "shipped with emozoo-extras"
    assert data["width"] == {"width": 0.25} and abs(data["sum"] - 1) < 1e-5
    listed = run_python(env, "import emozoo; print(emozoo.list_models('squeezenet*', pretrained=True))")
    assert listed.strip() == "['squeezenet.ferplus_w25']"


@pytest.mark.hub_server
def test_the_plugins_pretrained_tag_loads_through_the_hub(installed, tmp_path):
    """The same tag from its Hub repo (the local olah server the Hub tests use), into an empty cache."""
    from pathlib import Path

    from olah_server import OlahHub

    shipped = Path(run_python(installed, "import emozoo_extras; print(emozoo_extras.WEIGHTS)").strip())
    hub = OlahHub(tmp_path / "olah").start()
    try:
        sha = hub.publish("emozoo/squeezenet.ferplus_w25", shipped / "squeezenet.ferplus_w25")
        env = {**installed, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"),
               "HF_HUB_CACHE": str(tmp_path / "hub")}
        data = json.loads(run_python(env, LOAD_TAG.format(revision="main")))
    finally:
        hub.stop()
    assert data["origin"] == "Hugging Face Hub (emozoo/squeezenet.ferplus_w25)"
    assert (tmp_path / "hub" / "models--emozoo--squeezenet.ferplus_w25" / "snapshots" / sha).is_dir()
