"""Parameters and MACs of a wav2vec2 / HuBERT / WavLM encoder: exact for a config, expected for a gated model.

One set of formulas serves both uses. ``UnitCounts`` holds how many units of every prunable structure
are kept; with python numbers (a concrete config) the formulas give exact integer counts, with 0-dim
tensors (keep probabilities of the hard-concrete gates) they give the expected cost, differentiable in
every ``log_alpha``. Gates are treated as independent, so the expectation of a product of unit counts
(adjacent conv layers, in-channels x out-channels) is the product of the expectations.

What is counted:
- params: every parameter of the model (gates excluded), so that ``exact_cost(config).params`` equals
  ``sum(p.numel())`` of a model built from that config.
- MACs: multiply-accumulates of the convolutions, linear layers and the two attention matmuls
  (QK^T and AV: 2 * T^2 * heads * head_dim per layer), i.e. what ``torch.utils.flop_counter`` counts,
  divided by 2. Biases, norms, activations, softmax and weight normalisation are not counted.
  Attention grows with T^2, so MACs always refer to a stated duration (default 10 s at 16 kHz).
- WavLM: its gated-relative-position unit is a Linear(head_dim, 8) applied to every head's input slice at
  every frame (8 * head_dim * T MACs per head). The relative position bias itself is a table lookup, and
  its gating and addition to the logits are elementwise: no MACs, as for norms and softmax.

Where the LayerNorms belong:
- ``cnn``: the CNN's own norms (GroupNorm of layer 0, or the LayerNorm after every conv).
- ``feature_projection``: the LayerNorm over CNN channels before the projection.
- ``attention`` / ``ffn``: an encoder layer's ``layer_norm`` / ``final_layer_norm``. In post-LN mode they
  stay when their branch is removed (so a layer with 0 heads still has 2 * embed_dim attention params);
  in pre-LN mode they go with the branch.
- ``encoder_norm``: the Transformer's own LayerNorm.

WavLM's attention parameters (component ``attention``) add, per layer, the gated-relative-position unit
(a Linear(head_dim, 8) while the branch exists, one constant per head) and, once for the model, the
relative position bias table: ``num_buckets`` values per head that some layer keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from espnet_prune.constants import SAMPLE_RATE
from espnet_prune.models.config import Wav2Vec2Config
from espnet_prune.models.model import Wav2Vec2Model

Number = Union[int, float, Tensor]

CNN_COMPONENTS = ("cnn",)
TRANSFORMER_COMPONENTS = ("feature_projection", "pos_conv", "attention", "ffn", "encoder_norm")
COMPONENTS = CNN_COMPONENTS + TRANSFORMER_COMPONENTS


class ComponentCost(NamedTuple):
    """Parameters and MACs of one component (ints when exact, 0-dim tensors when expected)."""

    params: Number
    macs: Number


@dataclass(frozen=True)
class CostBreakdown:
    """Params and MACs per component, with totals for the CNN, the Transformer and the whole model.

    ``transformer`` means everything that is not the CNN (feature projection included).
    """

    cnn: ComponentCost
    feature_projection: ComponentCost
    pos_conv: ComponentCost
    attention: ComponentCost
    ffn: ComponentCost
    encoder_norm: ComponentCost
    seconds: float
    sample_rate: int

    def components(self) -> Dict[str, ComponentCost]:
        return {name: getattr(self, name) for name in COMPONENTS}

    def _total(self, names: Tuple[str, ...], kind: str) -> Number:
        return sum(getattr(getattr(self, name), kind) for name in names)

    @property
    def params(self) -> Number:
        return self._total(COMPONENTS, "params")

    @property
    def macs(self) -> Number:
        return self._total(COMPONENTS, "macs")

    @property
    def cnn_params(self) -> Number:
        return self._total(CNN_COMPONENTS, "params")

    @property
    def cnn_macs(self) -> Number:
        return self._total(CNN_COMPONENTS, "macs")

    @property
    def transformer_params(self) -> Number:
        return self._total(TRANSFORMER_COMPONENTS, "params")

    @property
    def transformer_macs(self) -> Number:
        return self._total(TRANSFORMER_COMPONENTS, "macs")

    def to_dict(self) -> Dict[str, Any]:
        """Flat plain numbers (tensors become floats), e.g. for training stats and JSON reports."""
        out: Dict[str, Any] = {"seconds": self.seconds, "sample_rate": self.sample_rate}
        for name in ("params", "macs", "transformer_params", "transformer_macs"):
            out[name] = _plain(getattr(self, name))
        for name, cost in self.components().items():
            out[f"{name}_params"] = _plain(cost.params)
            out[f"{name}_macs"] = _plain(cost.macs)
        return out

    def table(self) -> str:
        """Human-readable table: params in M, MACs in G at the reference duration."""
        rows = [(name, cost.params, cost.macs) for name, cost in self.components().items()]
        rows += [
            ("total", self.params, self.macs),
            ("  cnn", self.cnn_params, self.cnn_macs),
            ("  transformer", self.transformer_params, self.transformer_macs),
        ]
        header = f"{'component':<20}{'params (M)':>12}{f'GMACs @ {self.seconds:g} s':>16}"
        lines = [header, "-" * len(header)]
        lines += [
            f"{name:<20}{_plain(params) / 1e6:>12.3f}{_plain(macs) / 1e9:>16.3f}"
            for name, params, macs in rows
        ]
        return "\n".join(lines)


class ExactCost(CostBreakdown):
    """Exact cost of a concrete config (python ints)."""


class ExpectedCost(CostBreakdown):
    """Expected cost of a gated model (float32 0-dim tensors, differentiable in the gates' log_alpha)."""


@dataclass
class UnitCounts:
    """Kept units of every prunable structure: python numbers (exact) or 0-dim tensors (expected).

    ``attention_kept`` / ``ffn_kept`` are 1 where the branch exists and 0 where it was removed, or the
    probability that it survives; they decide the output bias and, in pre-LN mode, the branch's LayerNorm.
    ``bias_table_heads``: WavLM's relative position bias table columns (0 for other models).
    """

    conv_channels: List[Number]
    heads: List[Number]
    attention_kept: List[Number]
    ffn_units: List[Number]
    ffn_kept: List[Number]
    bias_table_heads: Number

    @classmethod
    def from_config(cls, config: Wav2Vec2Config) -> UnitCounts:
        return cls(
            conv_channels=[channels for channels, _, _ in config.conv_layers],
            heads=list(config.num_heads),
            attention_kept=[int(heads > 0) for heads in config.num_heads],
            ffn_units=list(config.ffn_dims),
            ffn_kept=[int(units > 0) for units in config.ffn_dims],
            bias_table_heads=_expected_table_columns({head: [1] for head in config.bias_table_heads()}),
        )

    @classmethod
    def expected(cls, model: Wav2Vec2Model) -> UnitCounts:
        """Expected kept units under the model's gates; an ungated structure counts in full."""
        config = model.config
        conv_channels: List[Number] = []
        for block, (channels, _, _) in zip(model.feature_extractor.conv_layers, config.conv_layers):
            probs = _keep_probs(block.channel_gate)
            conv_channels.append(channels if probs is None else probs.sum())
        heads, attention_kept, ffn_units, ffn_kept = [], [], [], []
        head_keep: Dict[
            int, List[Number]
        ] = {}  # WavLM: per pretrained head, P(kept) in each layer that has it
        wavlm = config.model_type == "wavlm"
        for layer, num_heads, ffn_dim, head_ids in zip(
            model.encoder.layers, config.num_heads, config.ffn_dims, config.layer_head_ids()
        ):
            attention = layer.attention
            units, kept = _expected_branch(
                num_heads,
                attention.head_gate if attention is not None else None,
                attention.layer_gate if attention is not None else None,
            )
            heads.append(units)
            attention_kept.append(kept)
            if wavlm and attention is not None:
                for head, prob in zip(
                    head_ids, _head_keep_probs(num_heads, attention.head_gate, attention.layer_gate)
                ):
                    head_keep.setdefault(head, []).append(prob)
            feed_forward = layer.feed_forward
            units, kept = _expected_branch(
                ffn_dim,
                feed_forward.unit_gate if feed_forward is not None else None,
                feed_forward.layer_gate if feed_forward is not None else None,
            )
            ffn_units.append(units)
            ffn_kept.append(kept)
        return cls(
            conv_channels, heads, attention_kept, ffn_units, ffn_kept, _expected_table_columns(head_keep)
        )


def _keep_probs(gate: Optional[nn.Module]) -> Optional[Tensor]:
    """The gate's P(unit kept) in float32 (half-precision sums of thousands of units are too coarse)."""
    return None if gate is None else gate.keep_prob().float()


def _expected_branch(
    num_units: int, unit_gate: Optional[nn.Module], layer_gate: Optional[nn.Module]
) -> Tuple[Number, Number]:
    """Expected kept units of a branch, and the probability that it survives.

    A branch survives when its layer gate is open and at least one of its units is kept.
    """
    if num_units == 0:
        return 0, 0
    layer_probs = _keep_probs(layer_gate)
    layer_prob: Number = 1 if layer_probs is None else layer_probs.squeeze(0)
    unit_probs = _keep_probs(unit_gate)
    if unit_probs is None:
        return num_units * layer_prob, layer_prob
    return layer_prob * unit_probs.sum(), layer_prob * (1 - torch.prod(1 - unit_probs))


def _head_keep_probs(
    num_heads: int, head_gate: Optional[nn.Module], layer_gate: Optional[nn.Module]
) -> List[Number]:
    """P(head kept) for each head of an attention branch: its own gate's times the layer gate's."""
    layer_probs = _keep_probs(layer_gate)
    layer_prob: Number = 1 if layer_probs is None else layer_probs.squeeze(0)
    head_probs = _keep_probs(head_gate)
    return [layer_prob * (1 if head_probs is None else head_probs[h]) for h in range(num_heads)]


def _expected_table_columns(head_keep: Dict[int, List[Number]]) -> Number:
    """Expected columns of WavLM's relative position bias table: a head's column stays while any layer keeps
    that head (``head_keep``: P(kept) of the head in each layer that has it; gates independent)."""
    columns: Number = 0
    for probs in head_keep.values():
        dropped: Number = 1
        for prob in probs:
            dropped = dropped * (1 - prob)
        columns = columns + (1 - dropped)
    return columns


def frame_counts(config: Wav2Vec2Config, seconds: float = 10.0, sample_rate: int = SAMPLE_RATE) -> List[int]:
    """Input samples followed by the frames after each CNN layer: floor((L - k) / s) + 1."""
    frames = [int(round(seconds * sample_rate))]
    for _, kernel, stride in config.conv_layers:
        frames.append((frames[-1] - kernel) // stride + 1)
    if frames[-1] < 1:
        raise ValueError(
            f"seconds: {seconds} s at {sample_rate} Hz ({frames[0]} samples) is too short for the CNN, "
            "which produces no frame from it"
        )
    return frames


def component_costs(config: Wav2Vec2Config, units: UnitCounts, frames: List[int]) -> Dict[str, ComponentCost]:
    """Params and MACs per component for the geometry of ``config`` with the kept ``units``.

    Generic over the number type: python numbers give exact counts, tensors expected ones.
    ``frames`` is ``frame_counts(config, ...)``.
    """
    embed = config.embed_dim
    cnn_params: Number = 0
    cnn_macs: Number = 0
    in_channels: Number = 1
    for i, ((_, kernel, _), out_channels, out_frames) in enumerate(
        zip(config.conv_layers, units.conv_channels, frames[1:])
    ):
        weights = in_channels * out_channels * kernel
        has_norm = config.extractor_mode == "layer_norm" or i == 0
        bias = out_channels if config.conv_bias else 0
        norm = 2 * out_channels if has_norm else 0
        cnn_params = cnn_params + weights + bias + norm
        cnn_macs = cnn_macs + weights * out_frames
        in_channels = out_channels

    time = frames[-1]
    projection_weights = in_channels * embed
    feature_projection = ComponentCost(
        2 * in_channels + projection_weights + embed, projection_weights * time
    )

    kernel, groups = config.pos_conv_kernel, config.pos_conv_groups
    pos_weights = embed * (embed // groups) * kernel
    pos_frames = time + 2 * (kernel // 2) - kernel + 1  # before the trim of an even kernel's extra frame
    # Weight norm over dim 2: v has the conv weight's shape, g one value per kernel tap.
    pos_conv = ComponentCost(pos_weights + kernel + embed, pos_weights * pos_frames)

    def branch_norm(kept: Number) -> Number:
        return 2 * embed * (kept if config.layer_norm_first else 1)

    wavlm = config.model_type == "wavlm"
    attention_params: Number = config.num_buckets * units.bias_table_heads if wavlm else 0
    attention_macs: Number = 0
    for heads, kept in zip(units.heads, units.attention_kept):
        inner = heads * config.head_dim
        attention_params = attention_params + 4 * embed * inner + 3 * inner + embed * kept + branch_norm(kept)
        attention_macs = attention_macs + 4 * time * embed * inner + 2 * time * time * inner
        if (
            wavlm
        ):  # gated-relative-position unit: Linear(head_dim, 8) on every head's slice, a constant per head
            attention_params = attention_params + (8 * config.head_dim + 8) * kept + heads
            attention_macs = attention_macs + 8 * inner * time

    ffn_params: Number = 0
    ffn_macs: Number = 0
    for ffn_units, kept in zip(units.ffn_units, units.ffn_kept):
        ffn_params = ffn_params + 2 * embed * ffn_units + ffn_units + embed * kept + branch_norm(kept)
        ffn_macs = ffn_macs + 2 * time * embed * ffn_units

    return {
        "cnn": ComponentCost(cnn_params, cnn_macs),
        "feature_projection": feature_projection,
        "pos_conv": pos_conv,
        "attention": ComponentCost(attention_params, attention_macs),
        "ffn": ComponentCost(ffn_params, ffn_macs),
        "encoder_norm": ComponentCost(2 * embed, 0),
    }


def exact_cost(config: Wav2Vec2Config, seconds: float = 10.0, sample_rate: int = SAMPLE_RATE) -> ExactCost:
    """Exact params and MACs of a model built from ``config``, MACs for one ``seconds``-long input."""
    costs = component_costs(
        config, UnitCounts.from_config(config), frame_counts(config, seconds, sample_rate)
    )
    return ExactCost(**costs, seconds=seconds, sample_rate=sample_rate)


def expected_cost(
    model: Wav2Vec2Model, seconds: float = 10.0, sample_rate: int = SAMPLE_RATE
) -> ExpectedCost:
    """Expected params and MACs of a gated model; gradients flow to every gate's log_alpha.

    With every gate fully open this equals ``exact_cost(model.config)``.
    """
    config = model.config
    costs = component_costs(config, UnitCounts.expected(model), frame_counts(config, seconds, sample_rate))
    device = next(model.parameters()).device

    def as_tensor(value: Number) -> Tensor:
        return torch.as_tensor(value, dtype=torch.float32, device=device)

    tensors = {name: ComponentCost(as_tensor(c.params), as_tensor(c.macs)) for name, c in costs.items()}
    return ExpectedCost(**tensors, seconds=seconds, sample_rate=sample_rate)


def _plain(value: Number) -> Union[int, float]:
    return value.item() if isinstance(value, Tensor) else value


# --- measurement with torch's flop counter -----------------------------------------------------------


def _attention_flops(
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    *args: Any,
    **kwargs: Any,
) -> int:
    """FLOPs of softmax(QK^T)V: two batched matmuls (torch's formula for the GPU kernels).

    Called by the flop counter with the op's argument shapes; the rest (dropout, scale, out_shape) is unused.
    """
    batch, heads, query_len, head_dim = query_shape
    key_len, value_dim = key_shape[2], value_shape[3]
    return 2 * batch * heads * query_len * key_len * (head_dim + value_dim)


def make_flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts scaled-dot-product attention on CPU.

    torch (checked with 2.11) registers FLOP formulas only for the GPU attention kernels (flash,
    memory-efficient, cuDNN); on CPU ``F.scaled_dot_product_attention`` runs
    ``aten._scaled_dot_product_flash_attention_for_cpu``, which it would count as 0.
    """
    custom = {}
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        custom[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _attention_flops
    return FlopCounterMode(display=False, custom_mapping=custom)


def measure_macs(model: nn.Module, seconds: float = 10.0, sample_rate: int = SAMPLE_RATE) -> int:
    """MACs (FLOPs / 2) that torch's flop counter sees in an eval-mode forward of one random waveform."""
    parameter = next(model.parameters())
    waveform = torch.randn(
        1, int(round(seconds * sample_rate)), dtype=parameter.dtype, device=parameter.device
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), make_flop_counter() as counter:
            model(waveform)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def measure_params(model: nn.Module) -> int:
    """Number of parameter elements (gates' log_alpha included when attached)."""
    return sum(p.numel() for p in model.parameters())
