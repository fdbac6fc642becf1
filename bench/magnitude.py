"""Baselines at a given MAC budget: uniformly narrowed geometry, and L1-magnitude pruning with Torch-Pruning.

Torch-Pruning's ``DependencyGraph`` traces our modules as they are and couples every structure correctly
(checked by tracing the tiny model): a conv layer's output channels with its LayerNorm and the next conv's
input channels (the last one with the feature projection's LayerNorm and Linear); the q/k/v projections'
output channels with each other and with the out-projection's inputs (through the attention op); an FFN's
intermediate units with the output layer's inputs. The residual stream is never pruned.

What is used from it: the graph (``get_pruning_group`` and ``group.prune()``) and the importance criterion
``GroupMagnitudeImportance(p=1, normalizer=None, group_reduction="mean")``, its documented "group L1-norm".
How many units each structure keeps is ours (``config_at_mac_ratio``: the same fraction of conv channels,
heads and FFN units in every layer, chosen to hit the MAC budget), because Torch-Pruning's pruners ratio
channels, not MACs. Heads are pruned whole: a head's score is the mean of its channels' scores.
"""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Callable, List

import torch
from torch import nn

from espnet_prune.constants import SAMPLE_RATE
from espnet_prune.models import Wav2Vec2Config, Wav2Vec2Model
from espnet_prune.pruning import exact_cost


def torch_pruning() -> ModuleType:
    """The Torch-Pruning package (the L1 baseline), or an exit naming the command that installs it."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise SystemExit("bench: Torch-Pruning is not installed; run `make bench-install`") from None
    return tp


def uniform_config(config: Wav2Vec2Config, keep: float) -> Wav2Vec2Config:
    """``config`` with a fraction ``keep`` of the conv channels, heads and FFN units of every layer (at least 1)."""

    def scaled(size: int) -> int:
        return max(1, int(round(size * keep)))

    return config.replace(
        conv_layers=[(scaled(c), k, s) for c, k, s in config.conv_layers],
        num_heads=[scaled(h) for h in config.num_heads],
        ffn_dims=[scaled(d) for d in config.ffn_dims],
    )


def config_at_mac_ratio(config: Wav2Vec2Config, mac_ratio: float, seconds: float = 10.0) -> Wav2Vec2Config:
    """The uniformly narrowed ``config`` whose exact MACs at ``seconds`` are closest to ``mac_ratio`` of dense."""
    dense = exact_cost(config, seconds).macs
    candidates = [uniform_config(config, step / 1000) for step in range(1, 1001)]
    return min(candidates, key=lambda c: abs(exact_cost(c, seconds).macs / dense - mac_ratio))


def magnitude_prune(encoder: Wav2Vec2Model, target: Wav2Vec2Config) -> Wav2Vec2Model:
    """A copy of ``encoder`` cut to ``target``'s sizes, dropping the units of smallest group L1 norm.

    The result is rebuilt from ``target`` and loaded strictly, which proves the shapes Torch-Pruning left.
    """
    tp = torch_pruning()
    model = copy.deepcopy(encoder).eval()
    for block in model.feature_extractor.conv_layers:
        # The same function through the Conv1d modules' own calls, which the graph traces (the
        # channels-last path of layer-norm CNNs calls conv2d on their weights, which it cannot see).
        block.channels_last = False
    graph = tp.DependencyGraph().build_dependency(
        model,
        example_inputs=(torch.randn(1, SAMPLE_RATE),),
        output_transform=lambda out: out.last_hidden_state,
    )
    importance = tp.importance.GroupMagnitudeImportance(p=1, normalizer=None, group_reduction="mean")

    def prune(module: nn.Module, prune_fn: Callable, keep_units: int, unit_width: int = 1) -> List[int]:
        """Cut the ``module``'s group to ``keep_units`` units; returns the channels dropped."""
        size = module.weight.shape[0]
        group = graph.get_pruning_group(module, prune_fn, idxs=list(range(size)))
        scores = importance(group).view(-1, unit_width).mean(1)
        dropped = scores.argsort()[: scores.numel() - keep_units].tolist()
        channels = sorted(unit * unit_width + offset for unit in dropped for offset in range(unit_width))
        if channels:
            graph.get_pruning_group(module, prune_fn, idxs=channels).prune()
        return channels

    for block, (channels, _, _) in zip(model.feature_extractor.conv_layers, target.conv_layers):
        dropped = prune(block.conv, tp.prune_conv_out_channels, channels)
        if block.norm_type == "group" and dropped:
            # The per-channel GroupNorm runs functionally over valid frames only (no module call to
            # trace), so its affine parameters follow the conv's output channels here.
            tp.prune_groupnorm_out_channels(block.layer_norm, dropped)
    for layer, heads, units in zip(model.encoder.layers, target.num_heads, target.ffn_dims):
        prune(layer.attention.q_proj, tp.prune_linear_out_channels, heads, unit_width=target.head_dim)
        prune(layer.feed_forward.intermediate_dense, tp.prune_linear_out_channels, units)
    pruned = Wav2Vec2Model(target)
    pruned.load_state_dict(model.state_dict(), strict=True)
    return pruned
