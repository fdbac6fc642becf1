"""Explicit, per-layer configuration of a (possibly pruned) wav2vec2 / HuBERT model.

Every prunable size is stored per layer, so a pruned model is just another config:
conv channels per CNN layer, attention heads per Transformer layer (0 = attention branch removed)
and FFN units per Transformer layer (0 = feed-forward branch removed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import yaml

from espnet_prune.config_schema import from_mapping

EXTRACTOR_MODES = ("group_norm", "layer_norm")

# (channels, kernel, stride) of the wav2vec2 / HuBERT CNN feature extractor.
DEFAULT_CONV_LAYERS: List[Tuple[int, int, int]] = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


@dataclass
class Wav2Vec2Config:
    """Geometry and regularisation of a wav2vec2 / HuBERT encoder.

    Attributes:
        conv_layers: (out_channels, kernel, stride) per CNN layer.
        extractor_mode: "group_norm" (base: GroupNorm on the first conv only) or
            "layer_norm" (large: LayerNorm over channels after every conv).
        conv_bias: whether the CNN convolutions have a bias.
        embed_dim: Transformer width.
        num_heads: attention heads per Transformer layer (0 = attention removed).
        head_dim: width of one attention head.
        ffn_dims: feed-forward units per Transformer layer (0 = feed-forward removed).
        layer_norm_first: pre-LN Transformer (large) instead of post-LN (base).
        pos_conv_kernel, pos_conv_groups: convolutional relative positional embedding.
        dropout, attention_dropout, activation_dropout, projection_dropout, layer_drop: regularisation
            used in training only (projection_dropout is applied after the feature projection).
        model_type: "wav2vec2" or "hubert" (same encoder, recorded for provenance).
        normalize_waveform: the model expects each waveform at zero mean and unit variance (fairseq
            ``normalize: true``: wav2vec2-large-lv60k, XLS-R, ...); the model normalises its input itself.
    """

    conv_layers: List[Tuple[int, int, int]] = field(default_factory=lambda: list(DEFAULT_CONV_LAYERS))
    extractor_mode: str = "group_norm"
    conv_bias: bool = False
    embed_dim: int = 768
    num_heads: List[int] = field(default_factory=lambda: [12] * 12)
    head_dim: int = 64
    ffn_dims: List[int] = field(default_factory=lambda: [3072] * 12)
    layer_norm_first: bool = False
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    projection_dropout: float = 0.1
    layer_drop: float = 0.05
    model_type: str = "wav2vec2"
    normalize_waveform: bool = False

    def __post_init__(self) -> None:
        self.conv_layers = [tuple(int(v) for v in layer) for layer in self.conv_layers]
        self.num_heads = [int(h) for h in self.num_heads]
        self.ffn_dims = [int(d) for d in self.ffn_dims]
        self.validate()

    @property
    def num_layers(self) -> int:
        return len(self.num_heads)

    def validate(self) -> None:
        """Raise ValueError naming the offending key when the geometry is inconsistent."""
        if self.extractor_mode not in EXTRACTOR_MODES:
            raise ValueError(f"extractor_mode: {self.extractor_mode!r} is not one of {EXTRACTOR_MODES}")
        if not self.conv_layers:
            raise ValueError("conv_layers: at least one CNN layer is required")
        for i, layer in enumerate(self.conv_layers):
            if len(layer) != 3 or min(layer) < 1:
                raise ValueError(f"conv_layers[{i}]: expected (channels >= 1, kernel >= 1, stride >= 1), got {layer}")
        if len(self.ffn_dims) != len(self.num_heads):
            raise ValueError(
                f"ffn_dims: {len(self.ffn_dims)} entries but num_heads has {len(self.num_heads)}; "
                "both need one entry per Transformer layer"
            )
        for key in ("num_heads", "ffn_dims"):
            for i, value in enumerate(getattr(self, key)):
                if value < 0:
                    raise ValueError(f"{key}[{i}]: must be >= 0, got {value}")
        for key in ("embed_dim", "head_dim", "pos_conv_kernel", "pos_conv_groups"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.embed_dim % self.pos_conv_groups:
            raise ValueError(f"pos_conv_groups: {self.pos_conv_groups} does not divide embed_dim {self.embed_dim}")
        for key in ("dropout", "attention_dropout", "activation_dropout", "projection_dropout", "layer_drop"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"{key}: must be in [0, 1), got {getattr(self, key)}")
        if self.model_type not in ("wav2vec2", "hubert"):
            raise ValueError(f"model_type: {self.model_type!r} is not 'wav2vec2' or 'hubert'")

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["conv_layers"] = [list(layer) for layer in self.conv_layers]
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str = "config") -> "Wav2Vec2Config":
        """Build from a plain dict; unknown keys and mistyped values are an error naming the key and the source."""
        return from_mapping(cls, data, source)

    def save_yaml(self, path: Union[str, Path]) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: Union[str, Path]) -> "Wav2Vec2Config":
        return cls.from_dict(yaml.safe_load(Path(path).read_text()), source=str(path))

    def replace(self, **changes: Any) -> "Wav2Vec2Config":
        return dataclasses.replace(self, **changes)


def wav2vec2_base(**overrides: Any) -> Wav2Vec2Config:
    """wav2vec2-base / HuBERT-base geometry (94.4 M parameters)."""
    return Wav2Vec2Config(**overrides)


def wav2vec2_large(**overrides: Any) -> Wav2Vec2Config:
    """wav2vec2-large (LibriSpeech 960 h) geometry: post-LN, group-norm extractor."""
    params: Dict[str, Any] = dict(embed_dim=1024, num_heads=[16] * 24, ffn_dims=[4096] * 24)
    params.update(overrides)
    return Wav2Vec2Config(**params)


def wav2vec2_large_lv60k(**overrides: Any) -> Wav2Vec2Config:
    """wav2vec2-large-lv60k / XLSR geometry: pre-LN, layer-norm extractor with conv bias."""
    params: Dict[str, Any] = dict(
        embed_dim=1024,
        num_heads=[16] * 24,
        ffn_dims=[4096] * 24,
        extractor_mode="layer_norm",
        conv_bias=True,
        layer_norm_first=True,
    )
    params.update(overrides)
    return Wav2Vec2Config(**params)


def hubert_base(**overrides: Any) -> Wav2Vec2Config:
    """HuBERT-base geometry (same encoder as wav2vec2-base)."""
    params: Dict[str, Any] = dict(model_type="hubert")
    params.update(overrides)
    return Wav2Vec2Config(**params)


def hubert_large(**overrides: Any) -> Wav2Vec2Config:
    """HuBERT-large geometry: pre-LN, layer-norm extractor without conv bias."""
    params: Dict[str, Any] = dict(
        model_type="hubert",
        embed_dim=1024,
        num_heads=[16] * 24,
        ffn_dims=[4096] * 24,
        extractor_mode="layer_norm",
        layer_norm_first=True,
    )
    params.update(overrides)
    return Wav2Vec2Config(**params)


PRESETS = {
    "wav2vec2_base": wav2vec2_base,
    "wav2vec2_large": wav2vec2_large,
    "wav2vec2_large_lv60k": wav2vec2_large_lv60k,
    "hubert_base": hubert_base,
    "hubert_large": hubert_large,
}
