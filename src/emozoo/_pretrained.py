"""Published weights: which ``arch.tag`` names exist and where their files are found.

Resolution order for ``pretrained=True``: the Hugging Face cache, then the copy shipped inside this
package (laid out exactly like the Hub repo it mirrors, so a fresh clone works offline), then a
download from the Hub.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import _hub
from ._config import CONFIG_NAME, WEIGHTS_NAME
from .errors import WeightsError

SHIPPED_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class PretrainedCfg:
    """One published set of weights."""

    name: str  # arch.tag
    hf_hub_id: str
    description: str = ""

    @property
    def architecture(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def shipped_dir(self) -> Path:
        return SHIPPED_DIR / self.name

    def is_shipped(self) -> bool:
        return (self.shipped_dir / CONFIG_NAME).is_file() and (self.shipped_dir / WEIGHTS_NAME).is_file()


#: Published weights, first tag of an architecture = its default. Filled as models are trained.
PRETRAINED: dict[str, PretrainedCfg] = {
    cfg.name: cfg for cfg in (
        PretrainedCfg("emoxnetlite.ferplus", "emozoo/emoxnetlite.ferplus",
                      "EmoXNetLite (ResNet-10 width 0.5) distilled on FER+; 8 expressions from 48x48 grayscale faces"),
        PretrainedCfg("emoxnet.ferplus", "emozoo/emoxnet.ferplus",
                      "EmoXNet ensemble trained on FER+; 8 expressions from 48x48 grayscale faces"),
    )
}


def default_tag(architecture: str) -> str | None:
    for cfg in PRETRAINED.values():
        if cfg.architecture == architecture:
            return cfg.tag
    return None


def resolve(cfg: PretrainedCfg, revision: str | None = None) -> tuple[Path, str]:
    """Folder holding ``config.json`` + ``model.safetensors`` for ``cfg``, and where it came from."""
    cached = _hub.cached(cfg.hf_hub_id, revision)
    if cached is not None:
        return cached, f"Hugging Face cache ({cfg.hf_hub_id})"
    if revision is None and cfg.is_shipped():
        return cfg.shipped_dir, "shipped with emozoo"
    try:
        return _hub.download(cfg.hf_hub_id, revision), f"Hugging Face Hub ({cfg.hf_hub_id})"
    except WeightsError as exc:
        raise WeightsError(f"pretrained weights for {cfg.name!r}: {exc}") from None
