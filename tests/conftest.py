"""Shared test fixtures: the tiny wav2vec2 geometries the ESPnet-free tests build."""

from __future__ import annotations

from typing import Any

from espnet_prune.models import Wav2Vec2Config


def tiny_config(**overrides: Any) -> Wav2Vec2Config:
    """A tiny pre-LN wav2vec2 (layer-norm CNN with bias): about 0.2 M parameters, builds in milliseconds.

    Its CNN holds about 15% of the parameters, so totals and Transformer-only counts differ visibly.
    """
    settings: Any = dict(
        conv_layers=[(32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 2, 2)],
        extractor_mode="layer_norm",
        conv_bias=True,
        embed_dim=32,
        num_heads=[4] * 4,
        head_dim=8,
        ffn_dims=[128] * 4,
        layer_norm_first=True,
        pos_conv_kernel=16,
        pos_conv_groups=4,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        projection_dropout=0.0,
        layer_drop=0.0,
    )
    settings.update(overrides)
    return Wav2Vec2Config(**settings)
