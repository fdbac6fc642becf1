"""Building blocks of the prunable wav2vec2 / HuBERT / WavLM encoder (plain PyTorch).

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
A mask scales the weights that consume the gated units (the input channels of the next conv, the columns of
an output projection) rather than the activations:
the same function, at the cost of a weight-sized product instead of an activation-sized one. Two rules keep
the later physical removal of zero units exact:
where a gate meets a LayerNorm, the norm's statistics are taken over the kept units only (mask > 0);
and a branch whose units are all zero contributes nothing, its output bias included.

WavLM differs from wav2vec2 only in its attention (``WavLMSelfAttention``): a relative position bias,
one table shared by all layers (``RelativePositionBias``, held by the ``Transformer``), is added to every
head's attention logits, scaled per frame by the head's gated-relative-position unit (gru_rel_pos).
A head gate removes a head together with its gate constant; the table keeps the columns of the heads
that some layer keeps.
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


def normalize_waveform(waveform: Tensor, lengths: Optional[Tensor], eps: float = 1e-5) -> Tensor:
    """Zero mean, unit variance per utterance over its valid samples (fairseq's ``normalize: true``);
    padding stays zero, so a padded batch gives each utterance what it gets alone."""
    if lengths is None:
        lengths = torch.full(waveform.shape[:1], waveform.shape[1], device=waveform.device)
    valid = (torch.arange(waveform.shape[1], device=waveform.device)[None, :] < lengths[:, None]).to(
        waveform.dtype
    )
    count = valid.sum(1, keepdim=True).clamp(min=1.0)
    mean = (waveform * valid).sum(1, keepdim=True) / count
    var = ((waveform - mean).square() * valid).sum(1, keepdim=True) / count
    return (waveform - mean) * torch.rsqrt(var + eps) * valid


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


def _time_group_norm(
    x: Tensor, lengths: Optional[Tensor], weight: Tensor, bias: Tensor, eps: float
) -> Tensor:
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
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        bias: bool,
        norm: Optional[str],
        eps: float,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.norm_type, self.eps = kernel, stride, norm, eps
        self.channels_last = norm == "layer"  # the memory layout between layers (see forward)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=bias)
        # Named as in torchaudio and Hugging Face, whichever norm it is.
        self.layer_norm: Optional[nn.Module] = None
        if norm == "group":
            self.layer_norm = nn.GroupNorm(out_channels, out_channels, eps=eps)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(out_channels, eps=eps)
        self.channel_gate: Optional[nn.Module] = None

    def forward(
        self,
        x: Tensor,
        lengths: Optional[Tensor],
        channel_mask: Optional[Tensor] = None,
        input_mask: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """x: (B, C_in, T) -> (B, C_out, T').

        With a LayerNorm over channels (``layer_norm`` extractors) the tensors between the layers are
        laid out channels-last in memory (transposed (B, T, C) tensors) and the convolution runs as a
        2-D one on channels-last (B, C, 1, T): the norm then reads contiguous rows, no layout copies are
        made between layers, and the CPU's oneDNN kernels run forward and backward about twice as fast
        as Conv1d's on the demo's 56 channels (at 512 channels, batch 1, 10 s, eval: 1.2 times). Without it
        (``group_norm`` extractors: a norm over time in layer 0 only) channels-first Conv1d is faster.
        ``input_mask`` (the previous layer's channel gate) scales the input channels of the conv weight;
        ``channel_mask`` (this layer's gate) only restricts the LayerNorm statistics to kept channels.
        """
        weight = self.conv.weight
        if input_mask is not None:
            weight = weight * input_mask[None, :, None]
        if self.channels_last:
            x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
            x = F.conv2d(x, weight.unsqueeze(2), self.conv.bias, stride=(1, self.stride)).squeeze(2)
        elif input_mask is None:  # the module's own call, which tracers and hooks see (bench/magnitude.py)
            x = self.conv(x)
        else:
            x = F.conv1d(x, weight, self.conv.bias, stride=self.stride)
        if lengths is not None:
            lengths = conv_output_lengths(lengths, self.kernel, self.stride)
        if self.layer_norm is None:  # no norm: the only path TorchScript compiles for this block
            return F.gelu(x), lengths
        if self.norm_type == "group":
            x = _time_group_norm(x, lengths, self.layer_norm.weight, self.layer_norm.bias, self.eps)
        elif self.norm_type == "layer":
            x = x.transpose(1, 2)
            if channel_mask is None:
                x = self.layer_norm(x)
            else:
                keep = (channel_mask > 0).to(x.dtype)
                x = masked_layer_norm(x, keep, self.layer_norm.weight, self.layer_norm.bias, self.eps)
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

    def forward(
        self, waveform: Tensor, lengths: Optional[Tensor]
    ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
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
            x = (
                masked_layer_norm(x, keep, self.layer_norm.weight, self.layer_norm.bias, self.eps)
                * channel_mask
            )
        return self.dropout(self.projection(x))


class ConvPositionalEmbedding(nn.Module):
    """Grouped, weight-normalised convolution over time that adds relative position information."""

    def __init__(self, embed_dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
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
        return (None if unit_gate is None else unit_gate.sample()), (
            None if layer_gate is None else layer_gate.sample()
        )
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

    def forward(
        self, x: Tensor, attention_mask: Optional[Tensor], position_bias: Optional[Tensor] = None
    ) -> Tensor:
        """x: (B, T, C); attention_mask: (B, 1, 1, T) bool, True where a key may be attended;
        position_bias: WavLM's relative position bias (see ``WavLMSelfAttention``), unused here."""
        batch, frames, _ = x.shape
        shape = (batch, frames, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        logit_mask = self.logit_mask(x, attention_mask, position_bias)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=logit_mask, dropout_p=dropout)
        context = context.transpose(1, 2).reshape(batch, frames, self.num_heads * self.head_dim)
        if self.head_gate is None and self.layer_gate is None:  # ungated: the only path TorchScript compiles
            return self.out_proj(context)
        head_mask, layer_value = branch_masks(self.head_gate, self.layer_gate)
        unit_mask = None if head_mask is None else head_mask.repeat_interleave(self.head_dim)
        return gated_output_projection(context, self.out_proj, unit_mask, layer_value)

    def logit_mask(
        self, x: Tensor, attention_mask: Optional[Tensor], position_bias: Optional[Tensor]
    ) -> Optional[Tensor]:
        """What restricts or is added to the attention logits: here only the padding mask."""
        return attention_mask


def relative_position_buckets(offsets: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """WavLM's (and T5's) bucket of each key-minus-query offset.

    Half of the buckets serve each direction (positive offsets the upper half). Within a direction,
    distances below a quarter of ``num_buckets`` have a bucket each; longer ones share buckets that widen
    logarithmically up to ``max_distance``, beyond which all fall into the last one.
    """
    half = num_buckets // 2
    exact = half // 2
    distance = offsets.abs()
    # clamp: no log(0) for the distances below ``exact``, which the where takes from ``distance``
    scaled = (
        torch.log(distance.clamp(min=exact).float() / exact) / math.log(max_distance / exact) * (half - exact)
    )
    far = torch.clamp(exact + scaled.long(), max=half - 1)
    return torch.where(distance < exact, distance, far) + (offsets > 0).long() * half


class RelativePositionBias(nn.Module):
    """WavLM's relative position bias table: a learned value per (distance bucket, head).

    One table serves every layer; it has a column for each head that some layer keeps, and every layer
    picks its heads' columns (``WavLMSelfAttention.bias_columns``).
    """

    def __init__(self, num_buckets: int, max_distance: int, num_heads: int) -> None:
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.weight = nn.Parameter(
            nn.init.xavier_normal_(torch.empty(num_buckets, num_heads))
        )  # WavLM's init

    def forward(self, frames: int) -> Tensor:
        """(num_heads, frames, frames): the bias of each head for every (query, key) pair."""
        positions = torch.arange(frames, device=self.weight.device)
        offsets = positions[None, :] - positions[:, None]
        buckets = relative_position_buckets(offsets, self.num_buckets, self.max_distance)
        return F.embedding(buckets, self.weight).permute(2, 0, 1)


class WavLMSelfAttention(SelfAttention):
    """Self-attention with WavLM's gated relative position bias.

    Head h adds its column of the shared bias table to its logits, scaled for each query frame by a gate
    computed from the head's own ``head_dim``-wide slice of the layer input: with a Linear(head_dim, 8)
    shared by the heads (gru_rel_pos_linear), a = sigmoid(sum of its first 4 outputs), b = sigmoid(sum of
    the last 4), gate = a * (b * c_h - 1) + 2, where c_h (gru_rel_pos_const) is the head's constant.
    ``head_ids``: the pretrained index of each head (its input slice); ``bias_columns``: its table column.
    """

    def __init__(
        self, embed_dim: int, head_dim: int, dropout: float, head_ids: List[int], bias_columns: List[int]
    ) -> None:
        super().__init__(embed_dim, len(head_ids), head_dim, dropout)
        self.gru_rel_pos_linear = nn.Linear(head_dim, 8)
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, len(head_ids), 1, 1))
        # Structure, not weights: they follow from the config, so they are not saved.
        self.register_buffer("head_ids", torch.tensor(head_ids, dtype=torch.long), persistent=False)
        self.register_buffer("bias_columns", torch.tensor(bias_columns, dtype=torch.long), persistent=False)

    def logit_mask(
        self, x: Tensor, attention_mask: Optional[Tensor], position_bias: Optional[Tensor]
    ) -> Optional[Tensor]:
        """(B, heads, T, T): the gated relative position bias, -inf at padded keys."""
        assert position_bias is not None, "WavLM attention needs the Transformer's relative position bias"
        batch, frames, _ = x.shape
        slices = x.view(batch, frames, -1, self.head_dim)[:, :, self.head_ids].transpose(1, 2)  # (B, H, T, d)
        halves = self.gru_rel_pos_linear(slices).view(batch, self.num_heads, frames, 2, 4).sum(-1)
        a, b = torch.sigmoid(halves).chunk(2, dim=-1)
        gate = a * (b * self.gru_rel_pos_const - 1.0) + 2.0  # (B, H, T, 1)
        bias = gate * position_bias[self.bias_columns]
        if attention_mask is not None:
            bias = bias.masked_fill(~attention_mask, float("-inf"))
        return bias


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
    """One Transformer layer; either branch may be absent (None: pruned away).

    Post-LN (base): x = LN(x + attn(x)); x = LN(x + ffn(x)). The norms stay when a branch is removed.
    Pre-LN (large): x = x + attn(LN(x)); x = x + ffn(LN(x)). A removed branch takes its norm with it.
    ``embed_dim`` is given on its own because both branches may be absent.
    """

    __constants__ = ["layer_norm_first"]  # TorchScript then compiles only the layout in use

    def __init__(
        self,
        attention: Optional[SelfAttention],
        feed_forward: Optional[FeedForward],
        embed_dim: int,
        layer_norm_first: bool,
        eps: float,
        dropout: float,
    ) -> None:
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.attention = attention
        self.feed_forward = feed_forward
        keep_attention_norm = attention is not None or not layer_norm_first
        keep_ffn_norm = feed_forward is not None or not layer_norm_first
        self.layer_norm = nn.LayerNorm(embed_dim, eps=eps) if keep_attention_norm else None
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=eps) if keep_ffn_norm else None
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, attention_mask: Optional[Tensor], position_bias: Optional[Tensor] = None
    ) -> Tensor:
        """x: (B, T, C); attention_mask, position_bias: see ``SelfAttention.forward``."""
        if self.layer_norm_first:
            if self.attention is not None:
                x = x + self.dropout(self.attention(self.layer_norm(x), attention_mask, position_bias))
            if self.feed_forward is not None:
                x = x + self.feed_forward(self.final_layer_norm(x))
            return x
        if self.attention is not None:
            x = x + self.dropout(self.attention(x, attention_mask, position_bias))
        x = self.layer_norm(x)
        if self.feed_forward is not None:
            x = x + self.feed_forward(x)
        return self.final_layer_norm(x)


class Transformer(nn.Module):
    """Positional convolution, a stack of encoder layers and the encoder LayerNorm; for WavLM also the
    relative position bias table that all layers share (here, so that it outlives any layer's attention)."""

    def __init__(
        self,
        pos_conv_embed: ConvPositionalEmbedding,
        layers: List[EncoderLayer],
        layer_norm_first: bool,
        eps: float,
        dropout: float,
        layer_drop: float,
        rel_attn_embed: Optional[RelativePositionBias] = None,
    ) -> None:
        super().__init__()
        self.pos_conv_embed = pos_conv_embed
        self.layer_norm = nn.LayerNorm(pos_conv_embed.embed_dim, eps=eps)
        self.layers = nn.ModuleList(layers)
        self.layer_norm_first = layer_norm_first
        self.dropout = nn.Dropout(dropout)
        self.layer_drop = layer_drop
        self.rel_attn_embed = rel_attn_embed

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
        position_bias = None if self.rel_attn_embed is None else self.rel_attn_embed(x.shape[1])
        hidden_states = [x]
        for layer in self.layers:
            if not (self.training and self.layer_drop > 0 and torch.rand(()) < self.layer_drop):
                x = layer(x, attention_mask, position_bias)
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
