"""The wav2vec2 / HuBERT encoder assembled from its components and a config."""

from __future__ import annotations

from typing import List, NamedTuple, Optional

import torch
from torch import Tensor, nn

from espnet_prune.models.components import (
    EncoderLayer,
    FeatureExtractor,
    FeatureProjection,
    Transformer,
    conv_output_lengths,
    init_weights,
)
from espnet_prune.models.config import Wav2Vec2Config


class Wav2Vec2Output(NamedTuple):
    """What one forward pass returns.

    last_hidden_state: (B, T, C) encoder output (after the final LayerNorm of a pre-LN model).
    hidden_states: [input of layer 1, output of layer 1, ..., output of layer N], each (B, T, C).
    lengths: (B,) valid frames per utterance, or None when no input lengths were given.
    padding_mask: (B, T) True at padded frames, or None.
    """

    last_hidden_state: Tensor
    hidden_states: List[Tensor]
    lengths: Optional[Tensor]
    padding_mask: Optional[Tensor]


class Wav2Vec2Model(nn.Module):
    """wav2vec2 / HuBERT encoder: CNN feature extractor, feature projection and Transformer."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.config = config
        self.feature_extractor = FeatureExtractor(
            config.conv_layers, config.extractor_mode, config.conv_bias, config.layer_norm_eps
        )
        self.feature_projection = FeatureProjection(
            config.conv_layers[-1][0], config.embed_dim, config.projection_dropout, config.layer_norm_eps
        )
        layers = [
            EncoderLayer(
                config.embed_dim,
                heads,
                config.head_dim,
                ffn,
                config.layer_norm_first,
                config.layer_norm_eps,
                config.dropout,
                config.attention_dropout,
                config.activation_dropout,
            )
            for heads, ffn in zip(config.num_heads, config.ffn_dims)
        ]
        self.encoder = Transformer(
            config.embed_dim,
            layers,
            config.pos_conv_kernel,
            config.pos_conv_groups,
            config.layer_norm_first,
            config.layer_norm_eps,
            config.dropout,
            config.layer_drop,
        )
        init_weights(self)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames produced for waveforms of ``lengths`` samples."""
        for block in self.feature_extractor.conv_layers:
            lengths = conv_output_lengths(lengths, block.kernel, block.stride)
        return lengths

    def forward(self, waveform: Tensor, lengths: Optional[Tensor] = None) -> Wav2Vec2Output:
        """waveform: (B, samples) raw 16 kHz audio; lengths: (B,) valid samples per utterance."""
        features, frame_lengths, last_mask = self.feature_extractor(waveform, lengths)
        x = self.feature_projection(features, last_mask)
        padding_mask: Optional[Tensor] = None
        if frame_lengths is not None:
            padding_mask = torch.arange(x.shape[1], device=x.device)[None, :] >= frame_lengths[:, None]
        last, hidden_states = self.encoder(x, padding_mask)
        return Wav2Vec2Output(last, hidden_states, frame_lengths, padding_mask)
