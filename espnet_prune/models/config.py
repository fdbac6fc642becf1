"""Explicit, per-layer configuration of a (possibly pruned) wav2vec2 / HuBERT / WavLM model.

Every prunable size is stored per layer, so a pruned model is just another config:
conv channels per CNN layer, attention heads per Transformer layer (0 = attention branch removed)
and FFN units per Transformer layer (0 = feed-forward branch removed); for WavLM also which of the
pretrained heads each layer kept (``head_ids``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from espnet_prune.config_schema import from_mapping

EXTRACTOR_MODES = ("group_norm", "layer_norm")
MODEL_TYPES = ("wav2vec2", "hubert", "wavlm")

# (channels, kernel, stride) of the wav2vec2 / HuBERT CNN feature extractor.
DEFAULT_CONV_LAYERS: List[Tuple[int, int, int]] = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


@dataclass
class Wav2Vec2Config:
    """Geometry and regularisation of a wav2vec2 / HuBERT / WavLM encoder.

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
        model_type: "wav2vec2" or "hubert" (same encoder, recorded for provenance), or "wavlm": attention
            with WavLM's gated relative position bias.
        num_buckets, max_distance: WavLM's relative position buckets (half per direction; distances below
            num_buckets / 4 exact, logarithmic up to max_distance).
        head_ids: WavLM only: per layer, the pretrained index of each head; None means 0..num_heads[i]-1.
            A WavLM head is not interchangeable with another: it reads its column of the bias table shared
            by all layers, and its gate reads its own head_dim-wide slice of the layer input, both by this
            index. A pruned WavLM records the heads it kept here.
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
    num_buckets: int = 320
    max_distance: int = 800
    head_ids: Optional[List[List[int]]] = None
    normalize_waveform: bool = False

    def __post_init__(self) -> None:
        self.conv_layers = [tuple(int(v) for v in layer) for layer in self.conv_layers]
        self.num_heads = [int(h) for h in self.num_heads]
        self.ffn_dims = [int(d) for d in self.ffn_dims]
        if self.head_ids is not None:
            self.head_ids = [[int(h) for h in ids] for ids in self.head_ids]
        self.validate()

    @property
    def num_layers(self) -> int:
        return len(self.num_heads)

    def layer_head_ids(self) -> List[List[int]]:
        """Per layer, the pretrained index of each of its heads (``head_ids`` or the default)."""
        if self.head_ids is not None:
            return [list(ids) for ids in self.head_ids]
        return [list(range(heads)) for heads in self.num_heads]

    def bias_table_heads(self) -> List[int]:
        """WavLM: the heads that have a column in the relative position bias table, those some layer keeps."""
        if self.model_type != "wavlm":
            return []
        return sorted(set().union(*self.layer_head_ids()))

    def validate(self) -> None:
        """Raise ValueError naming the offending key when the geometry is inconsistent."""
        if self.extractor_mode not in EXTRACTOR_MODES:
            raise ValueError(f"extractor_mode: {self.extractor_mode!r} is not one of {EXTRACTOR_MODES}")
        if not self.conv_layers:
            raise ValueError("conv_layers: at least one CNN layer is required")
        for i, layer in enumerate(self.conv_layers):
            if len(layer) != 3 or min(layer) < 1:
                raise ValueError(
                    f"conv_layers[{i}]: expected (channels >= 1, kernel >= 1, stride >= 1), got {layer}"
                )
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
            raise ValueError(
                f"pos_conv_groups: {self.pos_conv_groups} does not divide embed_dim {self.embed_dim}"
            )
        for key in ("dropout", "attention_dropout", "activation_dropout", "projection_dropout", "layer_drop"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"{key}: must be in [0, 1), got {getattr(self, key)}")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type: {self.model_type!r} is not one of {MODEL_TYPES}")
        if self.model_type == "wavlm":
            self._validate_wavlm()
        elif self.head_ids is not None:
            raise ValueError(
                f"head_ids: only WavLM heads have an identity; model_type is {self.model_type!r}"
            )

    def _validate_wavlm(self) -> None:
        if self.num_buckets < 4 or self.max_distance <= self.num_buckets // 4:
            raise ValueError(
                f"num_buckets, max_distance: need num_buckets >= 4 and max_distance > num_buckets / 4 (the last "
                f"exact distance), got {self.num_buckets} and {self.max_distance}"
            )
        if self.embed_dim % self.head_dim:
            raise ValueError(
                f"head_dim: {self.head_dim} does not divide embed_dim {self.embed_dim}; a WavLM head's gate reads "
                "its head_dim-wide slice of the layer input"
            )
        slots = self.embed_dim // self.head_dim
        if self.head_ids is not None and len(self.head_ids) != self.num_layers:
            raise ValueError(f"head_ids: {len(self.head_ids)} entries but there are {self.num_layers} layers")
        for i, (ids, heads) in enumerate(zip(self.layer_head_ids(), self.num_heads)):
            if len(ids) != heads:
                raise ValueError(f"head_ids[{i}]: {len(ids)} heads but num_heads[{i}] is {heads}")
            if ids != sorted(set(ids)) or (ids and not 0 <= ids[0] <= ids[-1] < slots):
                raise ValueError(f"head_ids[{i}]: {ids} are not distinct increasing indices in [0, {slots})")

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["conv_layers"] = [list(layer) for layer in self.conv_layers]
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str = "config") -> Wav2Vec2Config:
        """Build from a plain dict; unknown keys and mistyped values are an error naming the key and the source."""
        return from_mapping(cls, data, source)

    def save_yaml(self, path: Union[str, Path]) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: Union[str, Path]) -> Wav2Vec2Config:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a YAML file ({type(exc).__name__})") from None
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes: Any) -> Wav2Vec2Config:
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
    """wav2vec2-large-lv60k / XLSR geometry: pre-LN, layer-norm extractor with conv bias, normalised input."""
    params: Dict[str, Any] = dict(
        embed_dim=1024,
        num_heads=[16] * 24,
        ffn_dims=[4096] * 24,
        extractor_mode="layer_norm",
        conv_bias=True,
        layer_norm_first=True,
        normalize_waveform=True,
    )
    params.update(overrides)
    return Wav2Vec2Config(**params)


def wav2vec2_xlsr_300m(**overrides: Any) -> Wav2Vec2Config:
    """XLS-R 300M geometry: the wav2vec2-large-lv60k encoder (pre-LN, layer-norm extractor with conv bias)."""
    return wav2vec2_large_lv60k(**overrides)


def hubert_base(**overrides: Any) -> Wav2Vec2Config:
    """HuBERT-base geometry (same encoder as wav2vec2-base)."""
    params: Dict[str, Any] = dict(model_type="hubert")
    params.update(overrides)
    return Wav2Vec2Config(**params)


def hubert_large(**overrides: Any) -> Wav2Vec2Config:
    """HuBERT-large geometry: pre-LN, layer-norm extractor without conv bias, normalised input."""
    params: Dict[str, Any] = dict(
        model_type="hubert",
        embed_dim=1024,
        num_heads=[16] * 24,
        ffn_dims=[4096] * 24,
        extractor_mode="layer_norm",
        layer_norm_first=True,
        normalize_waveform=True,
    )
    params.update(overrides)
    return Wav2Vec2Config(**params)


def wavlm_base(**overrides: Any) -> Wav2Vec2Config:
    """WavLM-base geometry: the wav2vec2-base encoder (post-LN, group-norm extractor) with WavLM's attention."""
    params: Dict[str, Any] = dict(model_type="wavlm", num_buckets=320, max_distance=800)
    params.update(overrides)
    return Wav2Vec2Config(**params)


def wavlm_base_plus(**overrides: Any) -> Wav2Vec2Config:
    """WavLM-base-plus geometry: WavLM-base's (it differs in its training data only)."""
    return wavlm_base(**overrides)


def wavlm_large(**overrides: Any) -> Wav2Vec2Config:
    """WavLM-large geometry: the HuBERT-large encoder (pre-LN, layer-norm extractor without conv bias) with
    WavLM's attention."""
    params: Dict[str, Any] = dict(model_type="wavlm", num_buckets=320, max_distance=800)
    params.update(overrides)
    return hubert_large(**params)


PRESETS = {
    "wav2vec2_base": wav2vec2_base,
    "wav2vec2_large": wav2vec2_large,
    "wav2vec2_large_lv60k": wav2vec2_large_lv60k,
    "wav2vec2_xlsr_300m": wav2vec2_xlsr_300m,
    "hubert_base": hubert_base,
    "hubert_large": hubert_large,
    "wavlm_base": wavlm_base,
    "wavlm_base_plus": wavlm_base_plus,
    "wavlm_large": wavlm_large,
}
