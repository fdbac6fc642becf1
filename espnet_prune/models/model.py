"""The wav2vec2 / HuBERT / WavLM encoder assembled from its components and a config."""

from __future__ import annotations

from typing import List, NamedTuple, Optional

import torch
from torch import Tensor, nn

from espnet_prune.models.components import (
    ConvPositionalEmbedding,
    EncoderLayer,
    FeatureExtractor,
    FeatureProjection,
    FeedForward,
    RelativePositionBias,
    SelfAttention,
    Transformer,
    WavLMSelfAttention,
    conv_output_lengths,
    init_weights,
    normalize_waveform,
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


def _encoder_layer(config: Wav2Vec2Config, index: int) -> EncoderLayer:
    """Transformer layer ``index`` of ``config`` with its own sizes; a branch of size 0 is left out."""
    num_heads, ffn_dim = config.num_heads[index], config.ffn_dims[index]
    attention: Optional[SelfAttention] = None
    if num_heads and config.model_type == "wavlm":
        head_ids = config.layer_head_ids()[index]
        table = config.bias_table_heads()
        attention = WavLMSelfAttention(
            embed_dim=config.embed_dim,
            head_dim=config.head_dim,
            dropout=config.attention_dropout,
            head_ids=head_ids,
            bias_columns=[table.index(head) for head in head_ids],
        )
    elif num_heads:
        attention = SelfAttention(
            embed_dim=config.embed_dim,
            num_heads=num_heads,
            head_dim=config.head_dim,
            dropout=config.attention_dropout,
        )
    feed_forward = None
    if ffn_dim:
        feed_forward = FeedForward(
            embed_dim=config.embed_dim,
            ffn_dim=ffn_dim,
            activation_dropout=config.activation_dropout,
            dropout=config.dropout,
        )
    return EncoderLayer(
        attention=attention,
        feed_forward=feed_forward,
        embed_dim=config.embed_dim,
        layer_norm_first=config.layer_norm_first,
        eps=config.layer_norm_eps,
        dropout=config.dropout,
    )


class Wav2Vec2Model(nn.Module):
    """wav2vec2 / HuBERT / WavLM encoder: CNN feature extractor, feature projection and Transformer."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.config = config
        self.normalize_waveform = (
            config.normalize_waveform
        )  # a plain attribute: TorchScript reads no dataclass
        self.feature_extractor = FeatureExtractor(
            conv_layers=config.conv_layers,
            mode=config.extractor_mode,
            bias=config.conv_bias,
            eps=config.layer_norm_eps,
        )
        self.feature_projection = FeatureProjection(
            in_features=config.conv_layers[-1][0],
            out_features=config.embed_dim,
            dropout=config.projection_dropout,
            eps=config.layer_norm_eps,
        )
        layers = [_encoder_layer(config, index) for index in range(config.num_layers)]
        bias_table_heads = config.bias_table_heads()
        self.encoder = Transformer(
            pos_conv_embed=ConvPositionalEmbedding(
                embed_dim=config.embed_dim, kernel=config.pos_conv_kernel, groups=config.pos_conv_groups
            ),
            layers=layers,
            layer_norm_first=config.layer_norm_first,
            eps=config.layer_norm_eps,
            dropout=config.dropout,
            layer_drop=config.layer_drop,
            rel_attn_embed=RelativePositionBias(
                num_buckets=config.num_buckets,
                max_distance=config.max_distance,
                num_heads=len(bias_table_heads),
            )
            if bias_table_heads
            else None,
        )
        init_weights(self)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames produced for waveforms of ``lengths`` samples."""
        for block in self.feature_extractor.conv_layers:
            lengths = conv_output_lengths(lengths, block.kernel, block.stride)
        return lengths

    def forward(self, waveform: Tensor, lengths: Optional[Tensor] = None) -> Wav2Vec2Output:
        """waveform: (B, samples) raw 16 kHz audio; lengths: (B,) valid samples per utterance."""
        if self.normalize_waveform:
            waveform = normalize_waveform(waveform, lengths)
        features, frame_lengths, last_mask = self.feature_extractor(waveform, lengths)
        x = self.feature_projection(features, last_mask)
        padding_mask: Optional[Tensor] = None
        if frame_lengths is not None:
            padding_mask = torch.arange(x.shape[1], device=x.device)[None, :] >= frame_lengths[:, None]
        last, hidden_states = self.encoder(x, padding_mask)
        return Wav2Vec2Output(last, hidden_states, frame_lengths, padding_mask)
