"""Building blocks of the prunable wav2vec2 / HuBERT encoder (plain PyTorch).

Each prunable structure has a named insertion point, an attribute that holds a gate module or None:

- ``ConvLayerBlock.channel_gate``      output channels of one CNN layer
- ``SelfAttention.head_gate``          per-head context, before the output projection
- ``SelfAttention.layer_gate``         the whole attention branch
- ``FeedForward.unit_gate``            intermediate activations, before the output projection
- ``FeedForward.layer_gate``           the whole feed-forward branch

A gate is a module with ``sample()`` (a training mask, one value per unit), ``deterministic(count_scale)``
(the eval mask), ``keep_prob()`` and ``test_values()``; its call gives the mask of its mode (the CNN's
channel gates), and ``branch_masks`` combines the unit and layer gates of a branch. With no gate
attached the blocks run the plain dense computation, the only code ``torch.jit.script`` compiles for an
ungated (e.g. mask-removed) model: its gate slots, absent norms and removed branches are None there.
A mask scales the weights that consume the gated units (the input channels of the next conv, the columns of an output projection) rather than the activations:
the same function, at the cost of a weight-sized product instead of an activation-sized one. Two rules keep the later physical removal of zero units exact:
where a gate meets a LayerNorm, the norm's statistics are taken over the kept units only (mask > 0);
and a branch whose units are all zero contributes nothing, its output bias included.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_output_lengths(lengths: Tensor, kernel: int, stride: int) -> Tensor:
    """Number of frames an unpadded convolution produces from ``lengths`` input frames."""
    return torch.clamp(torch.div(lengths - kernel, stride, rounding_mode="floor") + 1, min=0)


def masked_layer_norm(x: Tensor, keep: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LayerNorm over the last dim whose mean and variance cover only the channels where ``keep`` is 1.

    With ``keep`` all ones this is ``F.layer_norm``; after the other channels are removed it is
    ``F.layer_norm`` over the remaining ones, which makes channel removal exact.
    """
    count = keep.sum().clamp(min=1.0)
    mean = (x * keep).sum(-1, keepdim=True) / count
    centred = x - mean
    var = (centred.square() * keep).sum(-1, keepdim=True) / count
    return centred * torch.rsqrt(var + eps) * weight + bias


def _time_group_norm(x: Tensor, lengths: Optional[Tensor], weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Per-channel normalisation over time (GroupNorm with one group per channel).

    The statistics cover only the valid frames of each utterance, so a padded batch gives the same
    per-utterance result as one utterance at a time (fairseq and torchaudio include the padding).
    """
    channels, frames = x.shape[1], x.shape[2]
    if lengths is None or bool((lengths == frames).all()):
        return F.group_norm(x, channels, weight, bias, eps)
    valid = (torch.arange(frames, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[:, None, :]
    count = lengths.to(x.dtype).clamp(min=1.0)[:, None, None]
    mean = (x * valid).sum(-1, keepdim=True) / count
    centred = x - mean
    var = (centred.square() * valid).sum(-1, keepdim=True) / count
    return centred * torch.rsqrt(var + eps) * weight[None, :, None] + bias[None, :, None]


class ConvLayerBlock(nn.Module):
    """Conv1d -> optional norm (group: per channel over time, layer: over channels) -> GELU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, bias: bool, norm: Optional[str], eps: float
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.norm_type, self.eps = kernel, stride, norm, eps
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=bias)
        self.norm: Optional[nn.Module] = None
        if norm == "group":
            self.norm = nn.GroupNorm(out_channels, out_channels, eps=eps)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_channels, eps=eps)
        self.channel_gate: Optional[nn.Module] = None

    def forward(
        self,
        x: Tensor,
        lengths: Optional[Tensor],
        channel_mask: Optional[Tensor] = None,
        input_mask: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """x: (B, C_in, T) -> (B, C_out, T').

        ``input_mask`` (the previous layer's channel gate) scales the input channels of the conv weight;
        ``channel_mask`` (this layer's gate) only restricts the LayerNorm statistics to kept channels.
        """
        if input_mask is None:
            x = self.conv(x)
        else:
            weight = self.conv.weight * input_mask[None, :, None]
            x = F.conv1d(x, weight, self.conv.bias, stride=self.stride)
        if lengths is not None:
            lengths = conv_output_lengths(lengths, self.kernel, self.stride)
        if self.norm is None:  # no norm: the only path TorchScript compiles for this block
            return F.gelu(x), lengths
        if self.norm_type == "group":
            x = _time_group_norm(x, lengths, self.norm.weight, self.norm.bias, self.eps)
        elif self.norm_type == "layer":
            x = x.transpose(1, 2)
            if channel_mask is None:
                x = self.norm(x)
            else:
                keep = (channel_mask > 0).to(x.dtype)
                x = masked_layer_norm(x, keep, self.norm.weight, self.norm.bias, self.eps)
            x = x.transpose(1, 2)
        return F.gelu(x), lengths


class FeatureExtractor(nn.Module):
    """The CNN that turns raw audio into frames (20 ms hop for the standard geometry)."""

    def __init__(self, conv_layers: List[Tuple[int, int, int]], mode: str, bias: bool, eps: float) -> None:
        super().__init__()
        blocks = []
        in_channels = 1
        for i, (channels, kernel, stride) in enumerate(conv_layers):
            if mode == "layer_norm":
                norm: Optional[str] = "layer"
            else:
                norm = "group" if i == 0 else None
            blocks.append(ConvLayerBlock(in_channels, channels, kernel, stride, bias, norm, eps))
            in_channels = channels
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, waveform: Tensor, lengths: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """waveform: (B, T) -> features (B, frames, C), frame lengths, and the last layer's channel mask.

        The last layer's mask is returned rather than applied: the feature projection's LayerNorm
        consumes it (statistics over kept channels, soft values after the norm).
        """
        x = waveform.unsqueeze(1)
        mask: Optional[Tensor] = None
        for block in self.conv_layers:
            previous = mask
            mask = block.channel_gate() if block.channel_gate is not None else None
            x, lengths = block(x, lengths, mask, previous)
        return x.transpose(1, 2), lengths, mask


class FeatureProjection(nn.Module):
    """LayerNorm over CNN channels -> Linear to the Transformer width -> dropout."""

    def __init__(self, in_features: int, out_features: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.layer_norm = nn.LayerNorm(in_features, eps=eps)
        self.projection = nn.Linear(in_features, out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, channel_mask: Optional[Tensor] = None) -> Tensor:
        if channel_mask is None:
            x = self.layer_norm(x)
        else:
            keep = (channel_mask > 0).to(x.dtype)
            x = masked_layer_norm(x, keep, self.layer_norm.weight, self.layer_norm.bias, self.eps) * channel_mask
        return self.dropout(self.projection(x))


class ConvPositionalEmbedding(nn.Module):
    """Grouped, weight-normalised convolution over time that adds relative position information."""

    def __init__(self, embed_dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        conv = nn.Conv1d(embed_dim, embed_dim, kernel, padding=kernel // 2, groups=groups)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim_last = kernel % 2 == 0

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        x = self.conv(x.transpose(1, 2))
        if self.trim_last:
            x = x[..., :-1]
        return F.gelu(x).transpose(1, 2)


def branch_masks(
    unit_gate: Optional[nn.Module], layer_gate: Optional[nn.Module], deterministic: Optional[bool] = None
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """The unit mask and the layer value of a prunable branch (attention, FFN); None where ungated.

    ``deterministic``: the eval masks (True), training samples (False), or as the gates' mode says (None).
    Sampled, each gate draws on its own. Deterministic, when the branch has both gates, the unit gate
    keeps its expected number of units counting the layer gate's keep probability (about
    p_layer * sum p_units, what the cost model expects the branch to keep: ``count_scale``) and the layer
    gate contributes its test-time value (``test_values()``); the branch vanishes when that count rounds to
    0 or the value is 0. Rounding the layer gate on its own instead would keep the whole branch that the
    expected cost counts as 30% gone at keep probability 0.7.
    """
    gate = unit_gate if unit_gate is not None else layer_gate
    if gate is None:
        return None, None
    if deterministic is None:
        deterministic = not gate.training
    if not deterministic:
        return (None if unit_gate is None else unit_gate.sample()), (None if layer_gate is None else layer_gate.sample())
    if unit_gate is None or layer_gate is None:
        return (None if unit_gate is None else unit_gate.deterministic()), (
            None if layer_gate is None else layer_gate.deterministic().squeeze(0)
        )
    return unit_gate.deterministic(layer_gate.keep_prob().squeeze(0)), layer_gate.test_values().squeeze(0)


def gated_output_projection(
    x: Tensor, projection: nn.Linear, unit_mask: Optional[Tensor], layer_value: Optional[Tensor]
) -> Tensor:
    """``projection(x * unit_mask) * scale`` computed with a masked weight.

    ``scale`` is the branch's layer value, times 0 when no unit is left: a branch without units then
    contributes nothing, its bias included, like the removed branch.
    """
    if unit_mask is None and layer_value is None:
        return projection(x)
    weight, bias = projection.weight, projection.bias
    scale = layer_value
    if unit_mask is not None:
        weight = weight * unit_mask[None, :]
        alive = (unit_mask > 0).any().to(weight.dtype)
        scale = alive if scale is None else scale * alive
    return F.linear(x, weight * scale, bias * scale)


class SelfAttention(nn.Module):
    """Multi-head self-attention with any number of heads of a fixed width."""

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = num_heads, head_dim, dropout
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)
        self.head_gate: Optional[nn.Module] = None
        self.layer_gate: Optional[nn.Module] = None

    def forward(self, x: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
        """x: (B, T, C); attention_mask: (B, 1, 1, T) bool, True where a key may be attended."""
        batch, frames, _ = x.shape
        shape = (batch, frames, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout)
        context = context.transpose(1, 2).reshape(batch, frames, self.num_heads * self.head_dim)
        if self.head_gate is None and self.layer_gate is None:  # ungated: the only path TorchScript compiles
            return self.out_proj(context)
        head_mask, layer_value = branch_masks(self.head_gate, self.layer_gate)
        unit_mask = None if head_mask is None else head_mask.repeat_interleave(self.head_dim)
        return gated_output_projection(context, self.out_proj, unit_mask, layer_value)


class FeedForward(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout."""

    def __init__(self, embed_dim: int, ffn_dim: int, activation_dropout: float, dropout: float) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.dropout = nn.Dropout(dropout)
        self.unit_gate: Optional[nn.Module] = None
        self.layer_gate: Optional[nn.Module] = None

    def forward(self, x: Tensor) -> Tensor:
        x = self.activation_dropout(F.gelu(self.intermediate_dense(x)))
        if self.unit_gate is None and self.layer_gate is None:  # ungated: the only path TorchScript compiles
            return self.dropout(self.output_dense(x))
        unit_mask, layer_value = branch_masks(self.unit_gate, self.layer_gate)
        return self.dropout(gated_output_projection(x, self.output_dense, unit_mask, layer_value))


class EncoderLayer(nn.Module):
    """One Transformer layer; either branch may be absent (pruned away).

    Post-LN (base): x = LN(x + attn(x)); x = LN(x + ffn(x)). The norms stay when a branch is removed.
    Pre-LN (large): x = x + attn(LN(x)); x = x + ffn(LN(x)). A removed branch takes its norm with it.
    """

    __constants__ = ["layer_norm_first"]  # TorchScript then compiles only the layout in use

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        ffn_dim: int,
        layer_norm_first: bool,
        eps: float,
        dropout: float,
        attention_dropout: float,
        activation_dropout: float,
    ) -> None:
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.attention = SelfAttention(embed_dim, num_heads, head_dim, attention_dropout) if num_heads else None
        self.feed_forward = FeedForward(embed_dim, ffn_dim, activation_dropout, dropout) if ffn_dim else None
        keep_attention_norm = num_heads > 0 or not layer_norm_first
        keep_ffn_norm = ffn_dim > 0 or not layer_norm_first
        self.layer_norm = nn.LayerNorm(embed_dim, eps=eps) if keep_attention_norm else None
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=eps) if keep_ffn_norm else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
        if self.layer_norm_first:
            if self.attention is not None:
                x = x + self.dropout(self.attention(self.layer_norm(x), attention_mask))
            if self.feed_forward is not None:
                x = x + self.feed_forward(self.final_layer_norm(x))
            return x
        if self.attention is not None:
            x = x + self.dropout(self.attention(x, attention_mask))
        x = self.layer_norm(x)
        if self.feed_forward is not None:
            x = x + self.feed_forward(x)
        return self.final_layer_norm(x)


class Transformer(nn.Module):
    """Positional convolution, a stack of encoder layers and the encoder LayerNorm."""

    def __init__(
        self,
        embed_dim: int,
        layers: List[EncoderLayer],
        pos_conv_kernel: int,
        pos_conv_groups: int,
        layer_norm_first: bool,
        eps: float,
        dropout: float,
        layer_drop: float,
    ) -> None:
        super().__init__()
        self.pos_conv_embed = ConvPositionalEmbedding(embed_dim, pos_conv_kernel, pos_conv_groups)
        self.layer_norm = nn.LayerNorm(embed_dim, eps=eps)
        self.layers = nn.ModuleList(layers)
        self.layer_norm_first = layer_norm_first
        self.dropout = nn.Dropout(dropout)
        self.layer_drop = layer_drop

    def forward(self, x: Tensor, padding_mask: Optional[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """x: (B, T, C), padding_mask: (B, T) True at padded frames.

        Returns the final output and the hidden states [input of layer 1, output of layer 1, ...,
        output of the last layer] (before the final LayerNorm of a pre-LN model).
        """
        attention_mask: Optional[Tensor] = None
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
            attention_mask = ~padding_mask[:, None, None, :]
        x = x + self.pos_conv_embed(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        hidden_states = [x]
        for layer in self.layers:
            if not (self.training and self.layer_drop > 0 and torch.rand(()) < self.layer_drop):
                x = layer(x, attention_mask)
            hidden_states.append(x)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x, hidden_states


def init_weights(module: nn.Module) -> None:
    """BERT-style initialisation used by fairseq for a model trained from scratch."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, std=0.02)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Conv1d) and not hasattr(sub, "parametrizations"):
            # The bias keeps PyTorch's uniform init, as in fairseq: a zero bias makes every channel equal
            # on digital silence, and a LayerNorm over channels then divides by sqrt(eps).
            nn.init.kaiming_normal_(sub.weight)
        elif isinstance(sub, ConvPositionalEmbedding):
            conv = sub.conv
            std = math.sqrt(4.0 / (conv.kernel_size[0] * conv.in_channels))
            with torch.no_grad():
                weight = torch.randn_like(conv.weight) * std
                conv.weight = weight
