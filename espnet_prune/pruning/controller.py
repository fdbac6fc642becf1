"""Lagrangian control of the expected model cost (HJ-Pruning, Peng et al., ICASSP 2023).

For every controlled quantity q the loss term is

    lambda1 * (s_q - t_q) + lambda2 * (s_q - t_q) ** 2,    s_q = 1 - E[cost_q] / dense_cost_q,

where s_q is the expected sparsity and t_q the target sparsity, warmed up linearly from 0 to its final
value. The model and gates minimise it; the lambdas maximise it (gradient ascent, implemented by a
gradient reversal in the forward pass, so any optimizer with a positive learning rate and any
scheduler that scales it positively keeps the ascent's sign).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from espnet_prune.models.config import check_known_keys
from espnet_prune.models.model import Wav2Vec2Model
from espnet_prune.pruning.cost import count, expected_cost
from espnet_prune.pruning.gating import GateConfig

VARIANTS = ("size", "sep_size", "mac", "transformer_only")

# Which cost quantity each variant controls, by the attribute name of the cost reports.
_CONTROLLED = {
    "size": ("params",),
    "sep_size": ("cnn_params", "transformer_params"),
    "mac": ("macs",),
    "transformer_only": ("transformer_params",),
}


class _ReverseGradient(torch.autograd.Function):
    """Identity in the forward pass, negated gradient in the backward pass (ascent for the lambdas).

    Done in the graph rather than by a tensor hook so that it survives copies and pickling.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return -grad


def _check_fraction(key: str, value: Any, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{source}.{key}: must be a number in (0, 1) (the fraction to remove), got {value!r}")
    return float(value)


@dataclass
class PruningConfig:
    """The pruning block of a training config.

    Attributes:
        variant: "size" (one target on all params), "sep_size" (CNN and Transformer params apart),
            "mac" (total MACs at ``reference_seconds``), "transformer_only" (the baseline: CNN not
            gated, target on Transformer params).
        target_sparsity: final fraction of the controlled cost to remove (all variants but sep_size).
        cnn_target_sparsity, transformer_target_sparsity: the two targets of sep_size.
        warmup_updates: updates over which the target grows linearly from 0 to its final value.
        reference_seconds: audio duration at which MACs are computed.
        gate_lr, lambda_lr: learning rates of the log_alpha and lambda parameter groups.
        gates: which structures are gated and how gates start.
    """

    variant: str = "mac"
    target_sparsity: Optional[float] = 0.5
    cnn_target_sparsity: Optional[float] = None
    transformer_target_sparsity: Optional[float] = None
    warmup_updates: int = 1000
    reference_seconds: float = 10.0
    gate_lr: float = 0.02
    lambda_lr: float = 0.02
    gates: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        if isinstance(self.gates, dict):
            self.gates = GateConfig.from_dict(self.gates, source="pruning.gates")
        if self.variant == "transformer_only":
            self.gates.conv_channels = False
        self.validate()

    def validate(self, source: str = "pruning") -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"{source}.variant: {self.variant!r} is not one of {VARIANTS}")
        if self.variant == "sep_size":
            for key in ("cnn_target_sparsity", "transformer_target_sparsity"):
                _check_fraction(key, getattr(self, key), source)
            if not self.gates.conv_channels:
                raise ValueError(f"{source}.gates.conv_channels: sep_size needs the CNN gated")
        else:
            _check_fraction("target_sparsity", self.target_sparsity, source)
        if self.variant in ("size", "mac") and not self.gates.conv_channels:
            raise ValueError(f"{source}.gates.conv_channels: variant {self.variant!r} prunes the CNN; use transformer_only")
        if int(self.warmup_updates) < 0:
            raise ValueError(f"{source}.warmup_updates: must be >= 0, got {self.warmup_updates}")
        if self.reference_seconds <= 0:
            raise ValueError(f"{source}.reference_seconds: must be > 0, got {self.reference_seconds}")
        for key in ("gate_lr", "lambda_lr"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{source}.{key}: must be > 0, got {getattr(self, key)}")

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]], source: str = "pruning") -> "PruningConfig":
        data = dict(data or {})
        check_known_keys(cls, data, source)
        if isinstance(data.get("gates"), dict) or data.get("gates") is None:
            data["gates"] = GateConfig.from_dict(data.get("gates"), source=f"{source}.gates")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"{source}: {exc}") from exc

    def to_dict(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["gates"] = self.gates.to_dict()
        return out

    def targets(self) -> List[Tuple[str, float]]:
        """(controlled cost quantity, final target sparsity) pairs of this variant."""
        if self.variant == "sep_size":
            finals = [self.cnn_target_sparsity, self.transformer_target_sparsity]
        else:
            finals = [self.target_sparsity]
        return list(zip(_CONTROLLED[self.variant], [float(t) for t in finals]))


class PruningController(nn.Module):
    """Holds the lambdas and the update counter and computes the Lagrangian term of a gated model.

    The dense reference costs come from the config of the model the controller is built for (the
    unpruned geometry). In training mode every call counts one forward pass; ``accum_grad`` forward
    passes make one update, which is what the target warm-up counts.
    """

    def __init__(self, model: Wav2Vec2Model, cfg: PruningConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.accum_grad = 1
        self.targets = cfg.targets()
        dense = count(model.config, cfg.reference_seconds)
        self.dense_costs = [float(getattr(dense, quantity)) for quantity, _ in self.targets]
        self.lambdas = nn.Parameter(torch.zeros(len(self.targets), 2))
        self.register_buffer("forward_passes", torch.zeros((), dtype=torch.long))

    @property
    def num_updates(self) -> int:
        return int(self.forward_passes) // max(1, self.accum_grad)

    def current_target(self, final: float) -> float:
        """Target sparsity after ``num_updates`` updates of the linear warm-up."""
        warmup = int(self.cfg.warmup_updates)
        if warmup == 0:
            return final
        return final * min(1.0, self.num_updates / warmup)

    def lambda_parameters(self) -> List[nn.Parameter]:
        return [self.lambdas]

    def forward(self, model: Wav2Vec2Model) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The Lagrangian term for ``model``'s gates and the statistics to log."""
        cost = expected_cost(model, self.cfg.reference_seconds)
        lambdas = _ReverseGradient.apply(self.lambdas)
        loss = lambdas.new_zeros(())
        stats: Dict[str, Tensor] = {
            "expected_params": cost.params.detach() / 1e6,
            "expected_gmacs": cost.macs.detach() / 1e9,
        }
        for i, ((quantity, final), dense) in enumerate(zip(self.targets, self.dense_costs)):
            sparsity = 1.0 - getattr(cost, quantity) / dense
            target = self.current_target(final)
            gap = sparsity - target
            loss = loss + lambdas[i, 0] * gap + lambdas[i, 1] * gap * gap
            stats[f"sparsity_{quantity}"] = sparsity.detach()
            stats[f"target_{quantity}"] = torch.tensor(target)
            stats[f"lambda1_{quantity}"] = self.lambdas[i, 0].detach()
            stats[f"lambda2_{quantity}"] = self.lambdas[i, 1].detach()
        stats["loss_pruning"] = loss.detach()
        if self.training:
            self.forward_passes += 1
        return loss, stats
