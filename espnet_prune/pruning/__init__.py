"""HJ-Pruning as a library: gates, cost model, Lagrangian controller, mask removal (no ESPnet import)."""

from espnet_prune.pruning.controller import VARIANTS, PruningConfig, PruningController
from espnet_prune.pruning.cost import (
    CostBreakdown,
    ExactCost,
    ExpectedCost,
    exact_cost,
    expected_cost,
    measure_macs,
    measure_params,
)
from espnet_prune.pruning.gating import (
    GateConfig,
    attach_gates,
    detach_gates,
    gate_parameters,
    iter_gates,
    ungated_state_dict,
    weight_parameters,
)
from espnet_prune.pruning.hard_concrete import HardConcrete
from espnet_prune.pruning.removal import pruned_config, remove_masks

__all__ = [
    "VARIANTS",
    "CostBreakdown",
    "ExactCost",
    "ExpectedCost",
    "GateConfig",
    "HardConcrete",
    "PruningConfig",
    "PruningController",
    "attach_gates",
    "exact_cost",
    "detach_gates",
    "expected_cost",
    "gate_parameters",
    "iter_gates",
    "measure_macs",
    "measure_params",
    "pruned_config",
    "remove_masks",
    "ungated_state_dict",
    "weight_parameters",
]
