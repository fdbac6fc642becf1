"""Import ``torchaudio.models.Wav2Vec2Model`` state dicts (wav2vec2 / HuBERT built by ``wav2vec2_model``).

A torchaudio state dict carries no config. Pass ours, or let ``infer_torchaudio_config`` read what the
shapes determine:

- from the shapes: CNN channels and kernels, extractor mode (a norm on the first conv only: group norm;
  on every conv: layer norm), conv bias, embedding width, number of layers, FFN units per layer,
  positional-conv kernel and groups;
- not in the shapes, so given by the caller: attention heads, pre-/post-LN (``layer_norm_first``) and
  the CNN strides (when omitted, the standard wav2vec2 strides, but only for the standard kernels);
- regularisation (dropout, layer drop) takes our config's defaults, and model_type is "wav2vec2"
  (HuBERT has the same encoder; pass a config to record it).
"""

from __future__ import annotations

import re
from typing import List, Mapping, Optional, Sequence, Tuple

from torch import Tensor

from espnet_prune.models.config import DEFAULT_CONV_LAYERS, Wav2Vec2Config
from espnet_prune.models.importers.common import (
    KeyMap,
    KeyRule,
    PathLike,
    build_model,
    load_torch_file,
    pos_conv_rules,
)
from espnet_prune.models.model import Wav2Vec2Model

# torchaudio's names are ours under other prefixes: its Encoder holds the feature projection and the
# Transformer, which are top-level and ``encoder`` here.
_RULES = (
    *pos_conv_rules("encoder.transformer.pos_conv_embed.conv"),
    KeyRule("encoder.transformer.{rest}", "encoder.{rest}"),
    KeyRule("encoder.feature_projection.{rest}", "feature_projection.{rest}"),
    KeyRule("feature_extractor.{rest}", "feature_extractor.{rest}"),
)
KEY_MAP = KeyMap(_RULES, dropped=(r"aux\.",))  # the optional CTC head


def _indices(state_dict: Mapping[str, Tensor], pattern: str) -> List[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for m in map(regex.fullmatch, state_dict) if m})


def is_torchaudio_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and any(
        isinstance(k, str) and k.startswith(("encoder.transformer.", "encoder.feature_projection."))
        for k in obj
    )


def infer_torchaudio_config(
    state_dict: Mapping[str, Tensor],
    num_heads: int,
    layer_norm_first: bool,
    conv_strides: Optional[Sequence[int]] = None,
    source: PathLike = "state dict",
) -> Wav2Vec2Config:
    """Our config from a torchaudio state dict's shapes plus what they do not determine (see module doc)."""

    def weight(key: str) -> Tensor:
        if key not in state_dict:
            raise ValueError(f"{source}: missing parameter {key!r}")
        return state_dict[key]

    num_convs = len(_indices(state_dict, r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight"))
    num_layers = len(_indices(state_dict, r"encoder\.transformer\.layers\.(\d+)\.final_layer_norm\.weight"))
    if not num_convs or not num_layers:
        raise ValueError(
            f"{source}: no CNN or Transformer layers found; not a torchaudio wav2vec2 state dict"
        )
    convs = [weight(f"feature_extractor.conv_layers.{i}.conv.weight") for i in range(num_convs)]
    kernels = [int(w.shape[2]) for w in convs]
    if conv_strides is None:
        if kernels != [kernel for _, kernel, _ in DEFAULT_CONV_LAYERS]:
            raise ValueError(f"{source}: CNN kernels {kernels} are not the standard ones; give conv_strides")
        conv_strides = [stride for _, _, stride in DEFAULT_CONV_LAYERS]
    if len(conv_strides) != len(convs):
        raise ValueError(f"{source}: {len(conv_strides)} conv_strides for {len(convs)} CNN layers")
    normed = _indices(state_dict, r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.weight")
    if normed == [0] and len(convs) > 1:
        extractor_mode = "group_norm"
    elif normed == list(range(len(convs))) and len(convs) > 1:
        extractor_mode = "layer_norm"
    else:
        raise ValueError(f"{source}: CNN norms on layers {normed} fit neither extractor mode; give a config")
    embed_dim = int(weight("encoder.feature_projection.projection.weight").shape[0])
    if num_heads < 1 or embed_dim % num_heads:
        raise ValueError(f"{source}: num_heads={num_heads} does not divide the embedding width {embed_dim}")
    pos_conv = state_dict.get(
        "encoder.transformer.pos_conv_embed.conv.weight_v",
        state_dict.get("encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1"),
    )
    if pos_conv is None:
        raise ValueError(f"{source}: missing parameter 'encoder.transformer.pos_conv_embed.conv.weight_v'")
    ffn_dims = [
        int(weight(f"encoder.transformer.layers.{i}.feed_forward.intermediate_dense.weight").shape[0])
        for i in range(num_layers)
    ]
    return Wav2Vec2Config(
        conv_layers=[(int(w.shape[0]), k, s) for w, k, s in zip(convs, kernels, conv_strides)],
        extractor_mode=extractor_mode,
        conv_bias="feature_extractor.conv_layers.0.conv.bias" in state_dict,
        embed_dim=embed_dim,
        num_heads=[num_heads] * len(ffn_dims),
        head_dim=embed_dim // num_heads,
        ffn_dims=ffn_dims,
        layer_norm_first=layer_norm_first,
        pos_conv_kernel=int(pos_conv.shape[2]),
        pos_conv_groups=embed_dim // int(pos_conv.shape[1]),
    )


def import_torchaudio_state_dict(
    state_dict: Mapping[str, Tensor],
    source: PathLike = "torchaudio state dict",
    config: Optional[Wav2Vec2Config] = None,
    *,
    num_heads: Optional[int] = None,
    layer_norm_first: Optional[bool] = None,
    conv_strides: Optional[Sequence[int]] = None,
) -> Tuple[Wav2Vec2Model, Wav2Vec2Config]:
    """Build our model (eval mode) from a torchaudio wav2vec2 / HuBERT state dict in memory.

    With ``config`` the geometry is taken from it; otherwise ``num_heads`` and ``layer_norm_first``
    are required and the rest is inferred (see ``infer_torchaudio_config``). ``source`` names the
    state dict in errors.
    """
    hints = (num_heads, layer_norm_first, conv_strides)
    if config is not None and any(hint is not None for hint in hints):
        raise ValueError(
            f"{source}: give either a config or num_heads/layer_norm_first/conv_strides, not both"
        )
    if config is None:
        if num_heads is None or layer_norm_first is None:
            raise ValueError(
                f"{source}: a torchaudio state dict records neither the attention heads nor pre-/post-LN; "
                "give a config, or num_heads and layer_norm_first"
            )
        config = infer_torchaudio_config(state_dict, num_heads, layer_norm_first, conv_strides, source)
    return build_model(config, state_dict, KEY_MAP, source)


def load_torchaudio_state_dict(
    path: PathLike,
    config: Optional[Wav2Vec2Config] = None,
    *,
    num_heads: Optional[int] = None,
    layer_norm_first: Optional[bool] = None,
    conv_strides: Optional[Sequence[int]] = None,
) -> Tuple[Wav2Vec2Model, Wav2Vec2Config]:
    """Load a file holding a torchaudio state dict (``torch.save(model.state_dict(), path)``); see
    ``import_torchaudio_state_dict`` for the arguments."""
    state_dict = load_torch_file(path)
    if not is_torchaudio_state_dict(state_dict):
        raise ValueError(
            f"{path}: not a torchaudio wav2vec2 state dict (no 'encoder.transformer.*' parameters)"
        )
    return import_torchaudio_state_dict(
        state_dict,
        path,
        config,
        num_heads=num_heads,
        layer_norm_first=layer_norm_first,
        conv_strides=conv_strides,
    )
