"""The prunable wav2vec2 / HuBERT / WavLM model in plain PyTorch (no ESPnet import)."""

from espnet_prune.models.config import PRESETS, Wav2Vec2Config
from espnet_prune.models.model import Wav2Vec2Model, Wav2Vec2Output

__all__ = ["PRESETS", "Wav2Vec2Config", "Wav2Vec2Model", "Wav2Vec2Output"]
