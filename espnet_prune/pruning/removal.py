"""Mask removal: turn a gated model into an ordinary, smaller model with exactly the same eval output.

The eval-mode (deterministic) gate values are folded into the weights that consume them:

- CNN layer i (not the last): its channel values scale the in-channel weights of conv layer i+1.
- the last CNN layer: its values scale the feature projection's LayerNorm weight and bias; the gated
  model normalises over the kept channels only and applies the values after the norm, so the removed
  model's plain LayerNorm over the remaining channels is the same function.
- attention heads and the attention layer gate: the out-projection columns of each head (and, for the
  layer gate, the out-projection bias).
- FFN units and the FFN layer gate: the output-dense columns (and its bias).
A branch whose units are all zero (or whose layer gate is zero) is removed; the gated model gives it
no output either (see ``components.gated_output_projection``).

WavLM: a removed head takes its gated-relative-position constant with it, and the config records the
pretrained index of every kept head (``head_ids``); the relative position bias table, shared by all
layers, keeps the columns of the heads some layer still has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from espnet_prune.models.components import branch_masks
from espnet_prune.models.config import Wav2Vec2Config
from espnet_prune.models.model import Wav2Vec2Model
from espnet_prune.pruning.gating import ungated_state_dict


@dataclass
class _Kept:
    """Indices kept by the deterministic masks and the values to fold, for one prunable structure."""

    index: Tensor
    values: Optional[Tensor]  # None where no gate exists (nothing to fold)


def _kept_units(mask: Optional[Tensor], size: int, min_keep: int = 0) -> _Kept:
    if mask is None:
        return _Kept(torch.arange(size), None)
    index = torch.nonzero(mask > 0).flatten()
    if index.numel() < min_keep:
        # A CNN layer cannot vanish: keep its best channel; its zero value still folds exactly.
        index = torch.topk(mask, min_keep).indices.sort().values
    return _Kept(index, mask)


@torch.no_grad()
def _plan(model: Wav2Vec2Model) -> Tuple[List[_Kept], List[Optional[Tuple[_Kept, Optional[Tensor]]]], List]:
    """Kept conv channels per layer, and per Transformer layer the kept heads / units with layer values,
    from the eval masks (whatever mode the model is in)."""
    conv: List[_Kept] = []
    for block in model.feature_extractor.conv_layers:
        mask = block.channel_gate.deterministic() if block.channel_gate is not None else None
        conv.append(_kept_units(mask, block.conv.out_channels, min_keep=1))
    attention: List[Optional[Tuple[_Kept, Optional[Tensor]]]] = []
    ffn: List[Optional[Tuple[_Kept, Optional[Tensor]]]] = []
    for layer in model.encoder.layers:
        for module, unit_slot, num_units, out in (
            (layer.attention, "head_gate", lambda m: m.num_heads, attention),
            (layer.feed_forward, "unit_gate", lambda m: m.intermediate_dense.out_features, ffn),
        ):
            if module is None:
                out.append(None)
                continue
            unit_mask, layer_value = branch_masks(
                getattr(module, unit_slot), module.layer_gate, deterministic=True
            )
            kept = _kept_units(unit_mask, num_units(module))
            removed = kept.index.numel() == 0 or (layer_value is not None and float(layer_value) == 0.0)
            out.append(None if removed else (kept, layer_value))
    return conv, attention, ffn


def pruned_config(model: Wav2Vec2Model) -> Wav2Vec2Config:
    """The config of the model that ``remove_masks`` would produce from the current gates."""
    conv, attention, ffn = _plan(model)
    return _config_from_plan(model.config, conv, attention, ffn)


def floor_config(model: Wav2Vec2Model) -> Wav2Vec2Config:
    """The config of the smallest model ``model``'s gates can be cut to: every gated CNN layer down to one
    channel (a layer cannot vanish), every gated attention and FFN branch removed, the rest whole."""
    config = model.config
    conv_layers = [
        (channels if block.channel_gate is None else 1, kernel, stride)
        for block, (channels, kernel, stride) in zip(model.feature_extractor.conv_layers, config.conv_layers)
    ]

    def floor(module: Optional[nn.Module], slot: str, size: int) -> int:
        gated = module is not None and (getattr(module, slot) is not None or module.layer_gate is not None)
        return 0 if gated else size

    layers = model.encoder.layers
    num_heads = [floor(layer.attention, "head_gate", n) for layer, n in zip(layers, config.num_heads)]
    head_ids = None
    if config.model_type == "wavlm":
        head_ids = [ids if heads else [] for heads, ids in zip(num_heads, config.layer_head_ids())]
    return config.replace(
        conv_layers=conv_layers,
        num_heads=num_heads,
        ffn_dims=[floor(layer.feed_forward, "unit_gate", n) for layer, n in zip(layers, config.ffn_dims)],
        head_ids=head_ids,
    )


def _config_from_plan(config: Wav2Vec2Config, conv, attention, ffn) -> Wav2Vec2Config:
    head_ids = None
    if config.model_type == "wavlm":  # the pretrained index of each kept head
        layer_ids = config.layer_head_ids()
        head_ids = [
            [] if a is None else [ids[j] for j in a[0].index.tolist()] for a, ids in zip(attention, layer_ids)
        ]
    return config.replace(
        conv_layers=[(kept.index.numel(), k, s) for kept, (_, k, s) in zip(conv, config.conv_layers)],
        num_heads=[0 if a is None else a[0].index.numel() for a in attention],
        ffn_dims=[0 if f is None else f[0].index.numel() for f in ffn],
        head_ids=head_ids,
    )


def _fold(weight: Tensor, kept: _Kept, layer_value: Optional[Tensor]) -> Tensor:
    """Select kept input columns of ``weight`` (dim 1) and scale them by their gate and layer values."""
    weight = weight[:, kept.index]
    if kept.values is not None:
        shape = [1, -1] + [1] * (weight.dim() - 2)
        weight = weight * kept.values[kept.index].view(shape)
    return weight if layer_value is None else weight * layer_value


@torch.no_grad()
def remove_masks(model: Wav2Vec2Model) -> Tuple[Wav2Vec2Model, Wav2Vec2Config]:
    """A new ungated model, physically smaller, equal in eval output to ``model`` with its gates.

    ``model`` is left unchanged. The new model is in eval mode, on ``model``'s device.
    """
    conv, attention, ffn = _plan(model)
    config = _config_from_plan(model.config, conv, attention, ffn)
    source = ungated_state_dict(model)
    state: Dict[str, Tensor] = {}

    head_dim = model.config.head_dim
    last = len(conv) - 1
    for i, kept in enumerate(conv):
        prefix = f"feature_extractor.conv_layers.{i}."
        weight = source.pop(prefix + "conv.weight")[kept.index]
        if i > 0:
            weight = _fold(weight, conv[i - 1], None)
        state[prefix + "conv.weight"] = weight
        for name in ("conv.bias", "layer_norm.weight", "layer_norm.bias"):
            if prefix + name in source:
                state[prefix + name] = source.pop(prefix + name)[kept.index]
    last_kept = conv[last]
    values = last_kept.values[last_kept.index] if last_kept.values is not None else 1.0
    for name in ("weight", "bias"):
        key = f"feature_projection.layer_norm.{name}"
        state[key] = source.pop(key)[last_kept.index] * values
    state["feature_projection.projection.weight"] = source.pop("feature_projection.projection.weight")[
        :, last_kept.index
    ]

    for i, (attn, ff) in enumerate(zip(attention, ffn)):
        prefix = f"encoder.layers.{i}."
        branch = prefix + "attention."
        if attn is not None:
            heads, layer_value = attn
            rows = (
                heads.index[:, None] * head_dim + torch.arange(head_dim, device=heads.index.device)
            ).flatten()
            head_kept = _Kept(
                rows, None if heads.values is None else heads.values.repeat_interleave(head_dim)
            )
            for proj in ("q_proj", "k_proj", "v_proj"):
                state[f"{branch}{proj}.weight"] = source.pop(f"{branch}{proj}.weight")[rows]
                state[f"{branch}{proj}.bias"] = source.pop(f"{branch}{proj}.bias")[rows]
            state[f"{branch}out_proj.weight"] = _fold(
                source.pop(f"{branch}out_proj.weight"), head_kept, layer_value
            )
            bias = source.pop(f"{branch}out_proj.bias")
            state[f"{branch}out_proj.bias"] = bias if layer_value is None else bias * layer_value
            if f"{branch}gru_rel_pos_const" in source:  # WavLM
                state[f"{branch}gru_rel_pos_const"] = source.pop(f"{branch}gru_rel_pos_const")[:, heads.index]
        branch = prefix + "feed_forward."
        if ff is not None:
            units, layer_value = ff
            state[f"{branch}intermediate_dense.weight"] = source.pop(f"{branch}intermediate_dense.weight")[
                units.index
            ]
            state[f"{branch}intermediate_dense.bias"] = source.pop(f"{branch}intermediate_dense.bias")[
                units.index
            ]
            state[f"{branch}output_dense.weight"] = _fold(
                source.pop(f"{branch}output_dense.weight"), units, layer_value
            )
            bias = source.pop(f"{branch}output_dense.bias")
            state[f"{branch}output_dense.bias"] = bias if layer_value is None else bias * layer_value

    table = config.bias_table_heads()
    if table:
        columns = [model.config.bias_table_heads().index(head) for head in table]
        state["encoder.rel_attn_embed.weight"] = source.pop("encoder.rel_attn_embed.weight")[:, columns]

    pruned = Wav2Vec2Model(config).to(next(model.parameters()).device)
    expected = pruned.state_dict()
    for key in expected:
        if key not in state:
            state[key] = source[key]  # unpruned: positional conv, norms, projection bias, WavLM gate unit
    pruned.load_state_dict(state, strict=True)
    return pruned.eval(), config
