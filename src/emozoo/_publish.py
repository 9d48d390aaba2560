"""Publishing: check a model, write its Hub repo (weights, ``config.json``, model card) and push or pull it.

This sits above the builder (it builds the model it publishes, to validate it) and below the CLI;
the file transport itself is :mod:`emozoo._hub`.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from . import _hub
from ._builder import create
from ._config import CONFIG_NAME, WEIGHTS_NAME, ModelConfig
from ._modelcard import model_card
from ._profile import count_params
from ._version import __version__
from ._weights import save_pretrained, sha256_file
from .errors import WeightsError

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo
    from torch import nn

CARD_NAME = _hub.CARD_NAME


def pull(spec: str, revision: str | None = None) -> Path:
    """Download the Hub model ``ORG/NAME[@REVISION]`` into the Hugging Face cache, check that it builds
    and that its weights match their sha256, and return its snapshot folder; it then loads offline."""
    repo_id, revision = _hub.parse_repo(spec, revision)
    folder = _hub.download(repo_id, revision)
    create(folder, pretrained=True)
    return folder


def push_to_hub(model_or_dir: nn.Module | str | Path, repo_id: str, *, revision: str | None = None,
                private: bool = False, token: str | None = None, commit_message: str | None = None,
                notes: str | None = None, license: str | None = None) -> CommitInfo:
    """Publish a model to the Hub repo ``repo_id`` in one commit: weights, config and model card.

    ``model_or_dir`` is a model made by :func:`emozoo.create`, a folder written by
    :func:`emozoo.save_pretrained` (also as ``local-dir:PATH``) or the name of published weights.
    The folder is validated first (config parses, weights match the architecture and the config's
    sha256) and nothing is sent if that fails. The commit holds ``model.safetensors``,
    ``config.json`` (with ``weights_sha256`` and the plugin packages in ``requires`` filled in) and a
    ``README.md`` generated from the config, with ``notes`` (Markdown) added as its own section;
    ``license`` (an SPDX id) sets the config's licence field.
    ``revision`` commits to that branch, created from ``main`` if missing. Returns
    huggingface_hub's ``CommitInfo`` (``oid``, ``commit_url``).
    """
    with tempfile.TemporaryDirectory(prefix="emozoo-push-") as tmp:
        weights, config, card = _prepare(model_or_dir, repo_id, Path(tmp), notes, license)
        files = {WEIGHTS_NAME: weights, CONFIG_NAME: config.to_json().encode(), CARD_NAME: card.encode()}
        message = commit_message or f"Upload {config.name or config.architecture} with emozoo {__version__}"
        return _hub.upload(repo_id, files, message=message, revision=revision, private=private, token=token)


def write_repo(model_or_dir: nn.Module | str | Path, repo_id: str, out_dir: str | Path, *,
               notes: str | None = None, license: str | None = None) -> Path:
    """Write into ``out_dir`` exactly the files that :func:`push_to_hub` would commit to ``repo_id``.

    This is how the weights shipped inside emozoo (``emozoo/weights/<arch.tag>/``) are made: a local
    mirror of the Hub repo, byte for byte, so ``pretrained=True`` works offline on a fresh clone.
    """
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="emozoo-repo-") as tmp:
        weights, config, card = _prepare(model_or_dir, repo_id, Path(tmp), notes, license)
        out_dir.mkdir(parents=True, exist_ok=True)
        if weights.resolve() != (out_dir / WEIGHTS_NAME).resolve():
            shutil.copyfile(weights, out_dir / WEIGHTS_NAME)
        (out_dir / CONFIG_NAME).write_text(config.to_json())
        (out_dir / CARD_NAME).write_text(card)
    return out_dir


def _prepare(model_or_dir, repo_id: str, tmp: Path, notes: str | None,
             license: str | None) -> tuple[Path, ModelConfig, str]:
    """Validate what is to be published; return its weights file, the config to publish and the card."""
    folder = _staged(model_or_dir, tmp)
    model = create(folder, pretrained=True)  # config, architecture, tensors, sha256
    config = model.config
    config.weights_sha256 = config.weights_sha256 or sha256_file(folder / WEIGHTS_NAME)
    config.record_plugins()
    config.license = license or config.license
    published = repo_id.rsplit("/", 1)[-1]
    if config.name is None and published.startswith(config.architecture + "."):
        config.name = published  # the repo emozoo/emoxnetlite.ferplus publishes emoxnetlite.ferplus
    card = model_card(config, repo_id, params=count_params(model), notes=notes)
    return folder / WEIGHTS_NAME, config, card


def _staged(model_or_dir, tmp: Path) -> Path:
    """The folder to push: the given one, or ``tmp`` holding a model saved by save_pretrained."""
    from torch import nn

    from ._builder import LOCAL_PREFIX, as_folder

    if isinstance(model_or_dir, nn.Module):
        return save_pretrained(model_or_dir, tmp)
    folder = as_folder(model_or_dir)
    if folder is not None:
        if not folder.is_dir():
            raise WeightsError(f"{folder}: no such folder; push a folder written by emozoo.save_pretrained()")
        return folder
    assert not str(model_or_dir).startswith(LOCAL_PREFIX)
    return save_pretrained(create(str(model_or_dir), pretrained=True), tmp)
