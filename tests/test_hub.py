"""Hub I/O: pulls go through the real huggingface_hub client to olah (a local Hub serving git repos).

olah has no upload API, so pushes are checked at the ``HfApi`` boundary (what would be committed, in
one commit) and the pushed files are then served back by olah. The live-Hub test needs HF_TOKEN.
"""
import hashlib
import json
import os
import subprocess
import sys
import uuid

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import CommitInfo, HfApi, ModelCard, constants, scan_cache_dir, snapshot_download
from olah_server import FaultyProxy, OlahHub, free_port
from safetensors.torch import load as load_safetensors

import emozoo
from emozoo._publish import push_to_hub
from emozoo.cli import build_cli
from emozoo.plugins import unregister_plugin

OID = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def olah(tmp_path_factory):
    hub = OlahHub(tmp_path_factory.mktemp("olah")).start()
    yield hub
    hub.stop()


@pytest.fixture
def hf(monkeypatch, tmp_path):
    """``hf(endpoint, offline=False)`` points huggingface_hub at ``endpoint`` with an empty cache; returns the cache.

    huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE into ``constants`` when it is
    imported, and reads those constants on every call, so patching them is setting the variables.
    """
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))

    def use(endpoint, offline=False):
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        return tmp_path / "hf-cache"

    return use


@pytest.fixture
def hub_api(monkeypatch):
    """Record what a push sends through ``HfApi`` instead of sending it: a list of (method, repo_id, kwargs)."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        calls.append(("create_branch", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        files = {}
        for op in operations:
            data = op.path_or_fileobj
            files[op.path_in_repo] = data if isinstance(data, bytes) else open(data, "rb").read()
        calls.append(("create_commit", repo_id, {**kwargs, "files": files}))
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{OID}",
                          commit_message=kwargs["commit_message"], commit_description="", oid=OID)

    for fn in (create_repo, create_branch, create_commit):
        monkeypatch.setattr(HfApi, fn.__name__, fn)
    return calls


def tiny(seed=0):
    torch.manual_seed(seed)
    model = emozoo.create("resnet10", width=0.25).eval()
    for buf in model.buffers():  # non-default BN statistics, so a lost tensor would show
        if buf.is_floating_point():
            buf.add_(torch.rand_like(buf))
    return model


def saved(model, folder):
    return emozoo.save_pretrained(model, folder)


def same_outputs(a, b):
    x = torch.randn(3, *a.config.input.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def dead_endpoint():
    return f"http://127.0.0.1:{free_port()}"


# ---------------------------------------------------------------------------------------------- pull


def test_pull_fetches_a_standard_snapshot_and_builds_from_its_config(olah, hf, tmp_path):
    model = tiny()
    sha = olah.publish("acme/pull", saved(model, tmp_path / "m"))
    cache = hf(olah.url)

    loaded = emozoo.create("hf-hub:acme/pull", pretrained=True)
    assert same_outputs(model, loaded)
    assert loaded.config.model_args == {"width": 0.25}
    assert loaded.weights_origin == f"Hugging Face Hub (acme/pull@{sha})"

    # the standard Hugging Face cache layout, which huggingface_hub itself reads back
    snapshot = cache / "models--acme--pull" / "snapshots" / sha
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors"]
    assert (cache / "models--acme--pull" / "refs" / "main").read_text() == sha
    assert snapshot_download("acme/pull", local_files_only=True) == str(snapshot)
    repo = next(r for r in scan_cache_dir(cache).repos if r.repo_id == "acme/pull")
    assert [(r.commit_hash, r.refs) for r in repo.revisions] == [(sha, frozenset({"main"}))]

    result = CliRunner().invoke(build_cli(), ["pull", "hf-hub:acme/pull"])
    assert result.exit_code == 0, result.output
    assert f"pulled acme/pull@{sha} (resnet10, 8 labels)" in result.stdout


@pytest.mark.parametrize("cached", [False, True], ids=["download", "from-cache"])
def test_one_load_parses_the_config_once_and_hashes_the_weights_once(olah, hf, tmp_path, monkeypatch, cached):
    """Downloaded or served from the cache, a Hub model's config.json is read once and its weights hashed
    once per create() (before 0.2 the cache path read it twice and hashed the 77 MB ensemble twice)."""
    import emozoo._builder
    import emozoo._config
    import emozoo._weights

    folder = saved(tiny(3), tmp_path / "m")
    repo = f"acme/counted-{'cached' if cached else 'fresh'}"
    olah.publish(repo, folder)
    hf(olah.url)
    if cached:
        emozoo.pull(repo)
    counts = {"parse": 0, "hash": 0}
    real_from_dict, real_sha = emozoo.ModelConfig.from_dict.__func__, emozoo._weights.sha256_file

    def counted_from_dict(cls, *args, **kwargs):
        counts["parse"] += 1
        return real_from_dict(cls, *args, **kwargs)

    def counted_sha(path):
        counts["hash"] += 1
        return real_sha(path)

    monkeypatch.setattr(emozoo._config.ModelConfig, "from_dict", classmethod(counted_from_dict))
    for module in (emozoo._weights, emozoo._builder):
        monkeypatch.setattr(module, "sha256_file", counted_sha)
    model = emozoo.create(f"hf-hub:{repo}", pretrained=True)
    assert counts == {"parse": 1, "hash": 1}
    assert model.config.weights_sha256 == real_sha(folder / "model.safetensors")


def test_a_pinned_revision_never_changes(olah, hf, tmp_path):
    first, second = tiny(1), tiny(2)
    sha1 = olah.publish("acme/pinned", saved(first, tmp_path / "1"), "first")
    hf(olah.url)
    assert same_outputs(first, emozoo.create(f"hf-hub:acme/pinned@{sha1}", pretrained=True))

    sha2 = olah.publish("acme/pinned", saved(second, tmp_path / "2"), "second")
    assert sha2 != sha1
    assert same_outputs(second, emozoo.create("hf-hub:acme/pinned", pretrained=True))  # main moved on
    assert same_outputs(second, emozoo.create("hf-hub:acme/pinned@main", pretrained=True))
    assert same_outputs(first, emozoo.create("hf-hub:acme/pinned", pretrained=True, revision=sha1))

    hf(dead_endpoint())  # a pinned commit in the cache needs no server at all
    assert same_outputs(first, emozoo.create(f"hf-hub:acme/pinned@{sha1}", pretrained=True))

    with pytest.raises(emozoo.ConfigError, match="give one"):
        emozoo.create("hf-hub:acme/pinned@main", revision=sha1)
    with pytest.raises(emozoo.ConfigError, match="nothing after '@'"):
        emozoo.create("hf-hub:acme/pinned@")
    with pytest.raises(emozoo.ConfigError, match="not a Hub repo"):
        emozoo.create("hf-hub:acme/bad name")


def test_unknown_repo_and_revision_name_the_problem(olah, hf):
    hf(olah.url)
    with pytest.raises(emozoo.WeightsError, match="'acme/nowhere' not found .*hf auth login"):
        emozoo.create("hf-hub:acme/nowhere", pretrained=True)
    with pytest.raises(emozoo.WeightsError, match="acme/pull@no-such-branch"):
        emozoo.create("hf-hub:acme/pull@no-such-branch", pretrained=True)


def test_offline_loads_what_was_pulled_and_says_how_to_get_the_rest(olah, hf, tmp_path):
    model = tiny(3)
    sha = olah.publish("acme/offline", saved(model, tmp_path / "m"))
    cache = hf(olah.url)
    emozoo.create("hf-hub:acme/offline", pretrained=True)

    hf(dead_endpoint(), offline=True)
    for name in ("hf-hub:acme/offline", "hf-hub:acme/offline@main", f"hf-hub:acme/offline@{sha}"):
        assert same_outputs(model, emozoo.create(name, pretrained=True))
    with pytest.raises(emozoo.WeightsError, match=r"not in the Hugging Face cache .*HF_HUB_OFFLINE=1.*"
                                                  r"`emozoo pull acme/never`"):
        emozoo.create("hf-hub:acme/never", pretrained=True)
    result = CliRunner().invoke(build_cli(), ["pull", "acme/offline@v2"])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "Error: acme/offline@v2 is not in the Hugging Face cache" in result.stderr

    # a fresh process configured by the environment variables alone, as a user would run it
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_ENDPOINT": dead_endpoint(),
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "emozoo.cli", "pull", "acme/offline"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"pulled acme/offline@{sha}" in out.stdout


@pytest.mark.parametrize("mode,message", [
    ("error", "answered HTTP 500"),
    ("stall", "timed out"),
    ("cut", "failed .*ConnectError"),
])
def test_hub_faults_give_one_clear_error_leave_no_partial_file_and_a_retry_succeeds(
        olah, hf, tmp_path, monkeypatch, mode, message):
    model = tiny(4)
    repo_id = f"acme/fault-{mode}"
    sha = olah.publish(repo_id, saved(model, tmp_path / "m"))
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
    with FaultyProxy(olah.port, mode) as proxy:
        cache = hf(proxy.url)
        with pytest.raises(emozoo.WeightsError, match=f"downloading {repo_id} .*{message}") as err:
            emozoo.create(f"hf-hub:{repo_id}", pretrained=True)
    assert "\n" not in str(err.value) and "try again" in str(err.value)
    assert proxy.cut == (mode == "cut")

    storage = cache / f"models--acme--fault-{mode}"
    files = [p for p in storage.rglob("*") if p.is_file()] if storage.exists() else []
    assert not [p for p in files if ".incomplete" in p.name]
    assert not (storage / "snapshots" / sha / "model.safetensors").exists()
    assert not (storage / "refs" / "main").exists()  # no ref to a partial snapshot

    hf(olah.url)
    assert same_outputs(model, emozoo.create(f"hf-hub:{repo_id}", pretrained=True))
    weights = (storage / "snapshots" / sha / "model.safetensors").resolve()
    recorded = json.loads((tmp_path / "m" / "config.json").read_text())["weights_sha256"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == recorded


@pytest.mark.parametrize("mode", ["error", "cut"])
def test_a_hub_failure_is_one_line_in_the_cli(olah, hf, tmp_path, mode):
    olah.publish(f"acme/cli-{mode}", saved(tiny(), tmp_path / "m"))
    with FaultyProxy(olah.port, mode) as proxy:
        hf(proxy.url)
        result = CliRunner().invoke(build_cli(), ["pull", f"acme/cli-{mode}"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if "%|" not in line]  # progress bars aside
    assert len(lines) == 1 and lines[0].startswith(f"Error: downloading acme/cli-{mode}"), result.stderr


def test_weights_that_do_not_match_their_sha256_are_refused_and_evicted(olah, hf, tmp_path):
    folder = saved(tiny(5), tmp_path / "m")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    sha = olah.publish("acme/corrupt", folder)
    cache = hf(olah.url)
    with pytest.raises(emozoo.WeightsError, match="does not have the sha256 .* removed from the cache"):
        emozoo.create("hf-hub:acme/corrupt", pretrained=True)
    storage = cache / "models--acme--corrupt"
    assert not (storage / "snapshots" / sha / "model.safetensors").exists()
    assert [p.stat().st_size for p in (storage / "blobs").iterdir()] == [len((folder / "config.json").read_bytes())]


# ---------------------------------------------------------------------------------------------- push


def test_push_commits_weights_config_and_card_once_and_round_trips(olah, hf, hub_api, tmp_path):
    torch.manual_seed(6)
    model = emozoo.create("emoxnet", members=[("resnet10", {"width": 0.25}), "mini_xception"],
                          fusion="learned_weights").eval()
    with torch.no_grad():  # fitted-looking fusion weights, so losing them would show
        for p in model.fusion.parameters():
            p.add_(torch.rand_like(p))
    cfg = model.config
    cfg.dataset, cfg.license = "ferplus (Training)", "cc-by-nc-4.0"
    cfg.recipe = {"command": "emozoo ensemble ...", "fusion": "learned_weights", "holdout": 0.05}
    cfg.metrics = {"PublicTest": {"accuracy": 0.8125, "macro_f1": 0.61, "ece": 0.031, "n": 3553,
                                  "per_class_accuracy": {"neutral": 0.9, "happiness": 0.95},
                                  "members": {"0:resnet10": 0.78, "1:mini_xception": 0.74}},
                   "command": "emozoo eval runs/ens --data ferplus --split PublicTest"}

    info = push_to_hub(model, "acme/ens", revision="v1", private=True)
    assert info.oid == OID
    assert [(c[0], c[1]) for c in hub_api] == [("create_repo", "acme/ens"), ("create_branch", "acme/ens"),
                                               ("create_commit", "acme/ens")]
    assert hub_api[0][2] == {"private": True, "exist_ok": True}
    assert hub_api[1][2] == {"branch": "v1", "exist_ok": True}
    commit = hub_api[2][2]
    assert commit["revision"] == "v1" and commit["commit_message"].startswith("Upload emoxnet")
    files = commit["files"]
    assert sorted(files) == ["README.md", "config.json", "model.safetensors"]

    config = json.loads(files["config.json"])
    assert config["weights_sha256"] == hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert [m["backbone"] for m in config["model_args"]["members"]] == ["resnet10", "mini_xception"]
    assert config["requires"] == {}
    keys = load_safetensors(files["model.safetensors"]).keys()  # one file: every member and the fusion
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in keys if k.startswith("members.")} == {"members.0", "members.1"}
    assert any(k.startswith("fusion.") for k in keys)

    card = ModelCard(files["README.md"].decode())
    meta = card.data.to_dict()
    assert meta["library_name"] == "emozoo" and meta["license"] == "cc-by-nc-4.0"
    assert {"emozoo", "facial-expression-recognition", "ensemble", "arxiv:2106.16126"} <= set(meta["tags"])
    assert meta["datasets"] == ["ferplus"] and set(meta["metrics"]) == {"accuracy", "f1", "ece"}
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"]["split"] == "PublicTest" and result["metrics"][0] == {
        "type": "accuracy", "value": 0.8125, "name": "accuracy"}
    for text in ("| PublicTest | 0.8125 | 0.6100 | 0.0310 | 3553 |", "| PublicTest | 0.9000 | 0.9500 |",
                 "`1:mini_xception` 0.7400", "7 contempt", "resized to 48x48, 1 channel(s)", "`learned_weights`", "members.i.*",
                 '"holdout": 0.05', 'emozoo.create("hf-hub:acme/ens", pretrained=True)', "arXiv:2106.16126",
                 "Measured with `emozoo eval runs/ens"):
        assert text in card.text, text

    pushed = tmp_path / "pushed"
    pushed.mkdir()
    for name, data in files.items():
        (pushed / name).write_bytes(data)
    sha = olah.publish("acme/ens", pushed)
    cache = hf(olah.url)
    loaded = emozoo.create("hf-hub:acme/ens", pretrained=True)
    assert same_outputs(model, loaded)
    assert loaded.config.metrics == cfg.metrics
    assert (cache / "models--acme--ens" / "snapshots" / sha / "README.md").read_bytes() == files["README.md"]


def test_push_a_folder_from_the_cli_fills_in_the_sha256(hub_api, tmp_path):
    folder = saved(tiny(7), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["weights_sha256"] = None
    (folder / "config.json").write_text(json.dumps(config))

    result = CliRunner().invoke(build_cli(), ["push", str(folder), "--repo", "acme/cli", "-m", "first weights"])
    assert result.exit_code == 0, result.output
    assert f"pushed acme/cli@{OID}: https://huggingface.co/acme/cli/commit/{OID}" in result.stdout
    assert [c[0] for c in hub_api] == ["create_repo", "create_commit"]
    assert hub_api[0][2] == {"private": None, "exist_ok": True}
    commit = hub_api[1][2]
    assert commit["revision"] is None and commit["commit_message"] == "first weights"
    pushed = json.loads(commit["files"]["config.json"])
    assert pushed["weights_sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert json.loads((folder / "config.json").read_text())["weights_sha256"] is None  # the folder is left as it was


def _flip_a_byte(folder):
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))


def _other_architecture(folder):
    config = json.loads((folder / "config.json").read_text())
    config.update(model_args={"width": 0.5}, weights_sha256=None)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("break_it,error,match", [
    (_flip_a_byte, emozoo.WeightsError, "sha256 .* does not match"),
    (lambda d: (d / "config.json").write_text("{not json"), emozoo.ConfigError, "not valid JSON"),
    (_other_architecture, emozoo.WeightsError, "shape mismatch"),
    (lambda d: (d / "model.safetensors").unlink(), emozoo.WeightsError, "weights file not found"),
], ids=["sha256", "config", "architecture", "no-weights"])
def test_nothing_is_pushed_when_the_folder_does_not_validate(hub_api, tmp_path, break_it, error, match):
    folder = saved(tiny(8), tmp_path / "m")
    break_it(folder)
    with pytest.raises(error, match=match):
        push_to_hub(folder, "acme/broken")
    assert hub_api == []
    result = CliRunner().invoke(build_cli(), ["push", str(folder), "--repo", "acme/broken"])
    assert result.exit_code == 1 and result.stderr.startswith("Error:") and result.stderr.count("\n") == 1
    assert hub_api == []
    with pytest.raises(emozoo.WeightsError, match="no such folder"):
        push_to_hub(tmp_path / "missing", "acme/broken")


# ------------------------------------------------------------------------------------- custom models


from conftest import TinyNet  # noqa: E402


class TinyPlugin:
    @emozoo.hookimpl
    def register_backbones(self, register):
        register("hubtiny", TinyNet)


def test_a_model_from_a_missing_plugin_names_the_package_to_install(olah, hf, hub_api, plugin, monkeypatch, tmp_path):
    plugin(TinyPlugin(), "hubtiny_plugin", distribution="emozoo-hubtiny")
    model = emozoo.create("emoxnet", members=["hubtiny", ("resnet10", {"width": 0.25})])
    folder = saved(model, tmp_path / "m")
    assert json.loads((folder / "config.json").read_text())["requires"] == {"backbone hubtiny": "emozoo-hubtiny"}
    push_to_hub(folder, "acme/custom")
    card = hub_api[-1][2]["files"]["README.md"].decode()
    assert "pip install emozoo emozoo-hubtiny" in card and "`emozoo-hubtiny` (backbone hubtiny)" in card

    olah.publish("acme/custom", folder)
    unregister_plugin("hubtiny_plugin")
    hf(olah.url)
    with pytest.raises(emozoo.UnknownBackboneError, match="needs the plugin package 'emozoo-hubtiny': "
                                                          "pip install emozoo-hubtiny"):
        emozoo.create("hf-hub:acme/custom", pretrained=True)


# -------------------------------------------------------------------------------------------- live


@pytest.mark.hub_live
@pytest.mark.skipif(not os.environ.get("HF_TOKEN"), reason="needs HF_TOKEN (a token with write access)")
def test_live_hub_push_then_pull(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    api = HfApi()
    repo_id = f"{api.whoami()['name']}/emozoo-test-{uuid.uuid4().hex[:8]}"
    model = tiny(9)
    try:
        info = push_to_hub(model, repo_id, private=True)
        assert same_outputs(model, emozoo.create(f"hf-hub:{repo_id}@{info.oid}", pretrained=True))
        assert same_outputs(model, emozoo.create(f"hf-hub:{repo_id}", pretrained=True))
    finally:
        api.delete_repo(repo_id, missing_ok=True)


def test_a_poisoned_config_is_one_line_and_evicted_so_a_healthy_server_then_works(olah, hf, tmp_path):
    """A proxy or captive portal answering config.json with an HTML page (HTTP 200) must not poison the cache."""
    model = tiny(6)
    sha = olah.publish("acme/poisoned", saved(model, tmp_path / "m"))
    with FaultyProxy(olah.port, "html") as proxy:
        cache = hf(proxy.url)
        with pytest.raises(emozoo.ConfigError, match="HTML.*removed from the Hugging Face cache; try again") as err:
            emozoo.create("hf-hub:acme/poisoned", pretrained=True)
        assert "\n" not in str(err.value)
        result = CliRunner().invoke(build_cli(), ["pull", "acme/poisoned"])
        assert result.exit_code == 1 and "HTML" in result.stderr and "Traceback" not in result.output
    snapshot = cache / "models--acme--poisoned" / "snapshots" / sha
    assert not (snapshot / "config.json").exists() and not (snapshot / "model.safetensors").exists()
    hf(olah.url)
    assert same_outputs(model, emozoo.create("hf-hub:acme/poisoned", pretrained=True))
    assert same_outputs(model, emozoo.create(f"hf-hub:acme/poisoned@{sha}", pretrained=True))


def test_partial_files_of_a_killed_pull_are_removed_by_the_next_download(olah, hf, tmp_path):
    """huggingface_hub never resumes its uniquely named ``.incomplete`` files: a pull killed mid-download left
    them in blobs/ for good. The next download removes the stale ones and keeps one a live download holds."""
    from filelock import FileLock

    model = tiny(3)
    olah.publish("acme/killed", saved(model, tmp_path / "m"))
    cache = hf(olah.url)
    blobs = cache / "models--acme--killed" / "blobs"
    blobs.mkdir(parents=True)
    stale = blobs / ("a" * 64 + ".1f2e3d4c.incomplete")
    stale.write_bytes(b"\0" * 1_000_000)
    live = blobs / ("b" * 64 + ".5a6b7c8d.incomplete")
    live.write_bytes(b"\0" * 10)
    lock = cache / ".locks" / "models--acme--killed" / ("b" * 64 + ".lock")
    lock.parent.mkdir(parents=True)
    with FileLock(lock):
        assert same_outputs(model, emozoo.create("hf-hub:acme/killed", pretrained=True))
    assert not stale.exists() and live.exists()


def test_an_html_answer_to_the_api_is_one_line(olah, hf, tmp_path):
    olah.publish("acme/portal", saved(tiny(), tmp_path / "m"))
    with FaultyProxy(olah.port, "html-api") as proxy:
        hf(proxy.url)
        with pytest.raises(emozoo.WeightsError, match="downloading acme/portal .*not JSON.*HTML") as err:
            emozoo.create("hf-hub:acme/portal", pretrained=True)
        assert "\n" not in str(err.value)
