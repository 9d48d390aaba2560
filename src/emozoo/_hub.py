"""Hugging Face Hub transport: download a model repo into the standard cache, upload files in one commit.

This module moves files and never builds a model: :func:`emozoo.create` checks what it downloads
(``config.json`` parsed once, the weights' sha256 checked once as they load), and
:mod:`emozoo._publish` prepares what it uploads. A model repo holds ``config.json``,
``model.safetensors`` and a generated ``README.md`` model card, at its top level. Downloads go through
``huggingface_hub`` (``HfApi.model_info``, ``hf_hub_download``) into the Hugging Face cache, so
``HF_ENDPOINT``, ``HF_HOME``/``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` work as usual. Every
failure becomes a :class:`WeightsError` whose message names the fix.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from ._config import CONFIG_NAME, WEIGHTS_NAME
from ._version import __version__
from .errors import ConfigError, WeightsError

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

LIBRARY_NAME = "emozoo"
HUB_PREFIX = "hf-hub:"
CARD_NAME = "README.md"
REPO_FILES = [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME]
_COMMIT = re.compile(r"[0-9a-f]{40}")


def parse_repo(spec: str, revision: str | None = None) -> tuple[str, str | None]:
    """Split ``[hf-hub:]ORG/NAME[@REVISION]`` into the repo id and the revision (``revision`` if none given)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id, at, pinned = spec.removeprefix(HUB_PREFIX).partition("@")
    if at and not pinned:
        raise ConfigError(f"{spec!r}: nothing after '@'; write ORG/NAME@REVISION (a branch, tag or commit sha)")
    if pinned and revision and pinned != revision:
        raise ConfigError(f"{spec!r} pins revision {pinned!r} but revision={revision!r} was also given; give one")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ConfigError(f"{spec!r} is not a Hub repo: {_first_line(exc)} Write ORG/NAME[@REVISION].") from None
    return repo_id, pinned or revision


def download(repo_id: str, revision: str | None = None, local_files_only: bool = False) -> Path:
    """Fetch a model repo into the standard Hugging Face cache and return its snapshot folder.

    A branch or tag is resolved to its commit with one API call, and every file is then fetched at
    that commit, so a snapshot never mixes two commits; a commit sha already in the cache loads
    without network. With ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` only the cache is read.
    An interrupted download leaves no partial file behind, so a retry starts clean; the partial files of a
    client killed mid-pull are removed by the next download of the repo (:func:`clean_incomplete`). The weights are
    checked against the sha256 in ``config.json`` when they load (:func:`emozoo.create`), which
    removes a corrupt copy from the cache with :func:`evict`.
    """
    from huggingface_hub import constants

    offline = local_files_only or constants.is_offline_mode()
    where = f"{repo_id}@{revision}" if revision else repo_id
    folder = _from_cache(repo_id, revision) if offline or _COMMIT.fullmatch(revision or "") else None
    if folder is None and offline:
        raise WeightsError(
            f"{where} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and downloads are off "
            f"(HF_HUB_OFFLINE=1 or local_files_only). Run `emozoo pull {where}` once with a connection "
            "and HF_HUB_OFFLINE unset; it then loads offline.")
    if folder is None:
        try:
            folder = _from_hub(repo_id, revision)
        except (*_hub_errors(), ValueError) as exc:  # ValueError: an answer that is not JSON
            raise _download_error(exc, repo_id, revision) from None
    return folder


def cached(repo_id: str, revision: str | None = None) -> Path | None:
    """The cached snapshot of ``repo_id`` if it is complete, else ``None`` (never touches the network)."""
    try:
        return download(repo_id, revision, local_files_only=True)
    except (WeightsError, ConfigError):
        return None


def upload(repo_id: str, files: dict[str, Path | bytes], *, message: str, revision: str | None = None,
           private: bool = False, token: str | None = None) -> CommitInfo:
    """Commit ``files`` (repo path -> local file or bytes) to ``repo_id`` in one commit, creating the repo
    (and the branch ``revision``, from ``main``) when missing. Every failure is a one-line WeightsError."""
    from huggingface_hub import CommitOperationAdd, HfApi

    operations = [CommitOperationAdd(name, str(data) if isinstance(data, Path) else data)
                  for name, data in files.items()]
    api = HfApi(token=token, library_name=LIBRARY_NAME, library_version=__version__)
    try:
        api.create_repo(repo_id, private=private or None, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.create_commit(repo_id, operations, commit_message=message, revision=revision)
    except _hub_errors() as exc:
        raise _push_error(exc, repo_id) from None


def is_cached(folder: Path) -> bool:
    """Whether ``folder`` is a snapshot inside the Hugging Face cache."""
    from huggingface_hub import constants

    try:
        Path(folder).resolve().relative_to(Path(constants.HF_HUB_CACHE).resolve())
    except ValueError:
        return False
    return True


def evict(folder: Path, names: tuple[str, ...] = (WEIGHTS_NAME,)) -> None:
    """Remove files of a cached snapshot (each link and its blob; by default the weights), so the next load
    downloads them anew. :func:`emozoo.create` evicts the whole snapshot when its config does not parse."""
    for name in names:
        link = Path(folder) / name
        blob = link.resolve()
        link.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)


def clean_incomplete(repo_id: str) -> list[Path]:
    """Remove the ``blobs/*.incomplete`` files that a killed download of ``repo_id`` left in the cache.

    huggingface_hub downloads into a uniquely named ``<etag>.<id>.incomplete`` file and never resumes one,
    so a file left by a client killed mid-pull is dead weight (tens of MB) until removed. A download still
    running holds the lock ``.locks/<repo folder>/<etag>.lock``; a file whose lock is free is stale.
    Returns the removed files.
    """
    from filelock import FileLock, Timeout
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = repo_folder_name(repo_id=repo_id, repo_type="model")
    blobs = Path(constants.HF_HUB_CACHE) / folder / "blobs"
    removed = []
    for partial in sorted(blobs.glob("*.incomplete")) if blobs.is_dir() else []:
        etag = partial.name.split(".")[0]
        lock_path = Path(constants.HF_HUB_CACHE) / ".locks" / folder / f"{etag}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(lock_path, timeout=0):
                partial.unlink(missing_ok=True)
                removed.append(partial)
        except (Timeout, OSError):  # a download in progress (or an unreadable lock): leave it
            continue
    return removed


def _from_cache(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    paths = [try_to_load_from_cache(repo_id, name, revision=revision) for name in (CONFIG_NAME, WEIGHTS_NAME)]
    return Path(paths[0]).parent if all(isinstance(p, str) for p in paths) else None


def _from_hub(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import HfApi, constants, hf_hub_download

    api = HfApi(library_name=LIBRARY_NAME, library_version=__version__)
    clean_incomplete(repo_id)
    info = api.model_info(repo_id, revision=revision or constants.DEFAULT_REVISION,
                          timeout=constants.HF_HUB_ETAG_TIMEOUT)
    present = {s.rfilename for s in info.siblings or []}
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if name not in present]
    if missing:
        raise WeightsError(f"Hub repo {repo_id!r} has no {' or '.join(missing)} at {info.sha}: not an emozoo "
                           "model repo (publish one with `emozoo push`)")
    paths = [hf_hub_download(repo_id, name, revision=info.sha, etag_timeout=constants.HF_HUB_ETAG_TIMEOUT,
                             library_name=LIBRARY_NAME, library_version=__version__)
             for name in REPO_FILES if name in present]
    folder = Path(paths[0]).parent
    if revision != info.sha:
        _remember_ref(folder, revision or constants.DEFAULT_REVISION)
    return folder


def _remember_ref(snapshot: Path, revision: str) -> None:
    """Point ``refs/<revision>`` at the snapshot's commit (the cache layout huggingface_hub reads offline).

    Written only once every file is in place, so a branch name never resolves to a partial snapshot.
    """
    ref = snapshot.parents[1] / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(ref.name + ".tmp")
    tmp.write_text(snapshot.name)
    tmp.replace(ref)


def _download_error(exc: Exception, repo_id: str, revision: str | None) -> WeightsError:
    """A failed download (huggingface_hub or transport error) as a one-line WeightsError with the fix."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    where = f"{repo_id}@{revision}" if revision else repo_id
    retry = "Nothing partial was kept in the cache; try again."
    if isinstance(exc, RevisionNotFoundError):
        return WeightsError(f"Hub repo {repo_id!r} has no revision {revision!r} (a branch, tag or commit sha)")
    if isinstance(exc, RepositoryNotFoundError):
        return WeightsError(f"Hub repo {where!r} not found at {constants.ENDPOINT}, or it is private or gated: "
                            "check the name and revision, or log in (`hf auth login` or HF_TOKEN)")
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return WeightsError(f"downloading {where} failed: {constants.ENDPOINT} answered HTTP "
                            f"{exc.response.status_code}. {retry}")
    if isinstance(exc, ValueError):  # json.JSONDecodeError: an API answer that is no JSON
        return WeightsError(f"downloading {where} failed: {constants.ENDPOINT} answered with something that is not "
                            "JSON (an HTML page? a proxy, captive portal or login page answered instead of the Hub); "
                            f"check HF_ENDPOINT and your network. {retry}")
    if isinstance(exc, _httpx().TimeoutException):
        return WeightsError(f"downloading {where} from {constants.ENDPOINT} timed out (no answer within "
                            f"HF_HUB_ETAG_TIMEOUT={constants.HF_HUB_ETAG_TIMEOUT} s / HF_HUB_DOWNLOAD_TIMEOUT="
                            f"{constants.HF_HUB_DOWNLOAD_TIMEOUT} s). {retry}")
    return WeightsError(f"downloading {where} from {constants.ENDPOINT} failed ({type(exc).__name__}: "
                        f"{_first_line(exc)}). {retry}")


def _push_error(exc: Exception, repo_id: str) -> WeightsError:
    """A failed push as a one-line WeightsError with the fix."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return WeightsError(f"pushing to {repo_id!r} needs the network: unset HF_HUB_OFFLINE")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HfHubHTTPError) and status in (401, 403):
        return WeightsError(f"the Hub refused to let you write to {repo_id!r} (HTTP {status}): log in with "
                            "`hf auth login`, set HF_TOKEN or pass a token with write access to that namespace")
    return WeightsError(f"pushing to {repo_id!r} at {constants.ENDPOINT} failed ({type(exc).__name__}: "
                        f"{_first_line(exc)}). Nothing was committed; try again.")


def _httpx():
    """The HTTP client module huggingface_hub uses (httpx2 from version 2, httpx before)."""
    try:
        import httpx2
        return httpx2
    except ImportError:
        import httpx
        return httpx


def _hub_errors() -> tuple[type[Exception], ...]:
    """What huggingface_hub raises when the Hub or the connection fails."""
    from huggingface_hub.errors import HfHubHTTPError

    return (HfHubHTTPError, OSError, _httpx().HTTPError)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
