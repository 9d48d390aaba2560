"""Hugging Face Hub access (downloads). Every failure becomes a :class:`WeightsError` with a fix."""
from __future__ import annotations

from pathlib import Path

from ._config import CONFIG_NAME, WEIGHTS_NAME
from .errors import WeightsError

LIBRARY_NAME = "emozoo"
REPO_FILES = [CONFIG_NAME, WEIGHTS_NAME, "README.md"]


def download(repo_id: str, revision: str | None = None, local_files_only: bool = False) -> Path:
    """Fetch a model repo into the standard Hugging Face cache and return its snapshot folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    from . import __version__

    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=REPO_FILES,
                                 local_files_only=local_files_only, library_name=LIBRARY_NAME,
                                 library_version=__version__)
    except RepositoryNotFoundError:
        raise WeightsError(f"Hub repo {repo_id!r} not found (or private: pass a token / run `hf auth login`)") from None
    except RevisionNotFoundError:
        raise WeightsError(f"Hub repo {repo_id!r} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise WeightsError(
            f"{repo_id!r} is not in the Hugging Face cache and the Hub cannot be reached (offline or "
            f"HF_HUB_OFFLINE=1). Connect and run `emozoo pull {repo_id}` once; it then loads offline."
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise WeightsError(f"downloading {repo_id!r} failed: {exc}. Nothing partial was kept; try again.") from None
    path = Path(path)
    if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        raise WeightsError(f"Hub repo {repo_id!r} has no {CONFIG_NAME} + {WEIGHTS_NAME}: not an emozoo model repo")
    return path


def cached(repo_id: str, revision: str | None = None) -> Path | None:
    """The cached snapshot of ``repo_id`` if it is complete, else ``None`` (never touches the network)."""
    try:
        return download(repo_id, revision, local_files_only=True)
    except WeightsError:
        return None
