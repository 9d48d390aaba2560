"""Published weights: which ``arch.tag`` names exist and where their files are found.

Every architecture declares its tags in its :class:`~emozoo.ArchitectureCfg` (``pretrained=``), so a
plugin publishes weights the same way the built-ins do. Resolution order for ``pretrained=True``: the
Hugging Face cache, then the copy shipped inside the package that registered the tag (laid out
exactly like the Hub repo it mirrors, so a fresh clone works offline), then a download from the Hub.
"""
from __future__ import annotations

from pathlib import Path

from . import _hub
from ._models import PretrainedCfg
from ._registry import ARCHITECTURES
from .errors import WeightsError


def published() -> dict[str, PretrainedCfg]:
    """Every published ``arch.tag`` and its :class:`PretrainedCfg`, in registry order (plugins loaded by
    the caller)."""
    return {f"{entry.name}.{tag}": cfg for entry in ARCHITECTURES.entries()
            for tag, cfg in entry.meta["cfg"].pretrained.items()}


def _package_of(cfg: PretrainedCfg) -> str:
    """The top-level package whose folder ships ``cfg``'s weights (``emozoo`` for the built-in ones)."""
    for entry in ARCHITECTURES.entries():
        if cfg in entry.meta["cfg"].pretrained.values():
            return entry.distribution or "emozoo"
    return "its package"


def resolve(name: str, cfg: PretrainedCfg, revision: str | None = None) -> tuple[Path, str, bool]:
    """The folder holding ``config.json`` + ``model.safetensors`` of the weights ``name`` (``arch.tag``),
    where it came from, and whether it lies in the Hugging Face cache (so it can be evicted if corrupt)."""
    if cfg.hf_hub_id:
        cached = _hub.cached(cfg.hf_hub_id, revision)
        if cached is not None:
            return cached, f"Hugging Face cache ({cfg.hf_hub_id})", True
    if revision is None and cfg.is_shipped():
        return Path(cfg.folder), f"shipped with {_package_of(cfg)}", False
    if not cfg.hf_hub_id:
        raise WeightsError(f"pretrained weights for {name!r}: the folder {cfg.folder} that should hold them has no "
                           "config.json and model.safetensors; reinstall the package that provides them")
    try:
        return _hub.download(cfg.hf_hub_id, revision), f"Hugging Face Hub ({cfg.hf_hub_id})", True
    except WeightsError as exc:
        raise WeightsError(f"pretrained weights for {name!r}: {exc}") from None
