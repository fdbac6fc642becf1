"""Lagrangian control of the pruned model's cost (HJ-Pruning, Peng et al., ICASSP 2023).

For every controlled quantity q the loss term is

    S * (lambda1 * (s_q - t_q) + lambda2 * (s_q - t_q) ** 2),

where t_q is the target sparsity, warmed up linearly from 0 to its final value over ``warmup_updates``
optimizer updates, and s_q the sparsity of q. Three choices make the model the user gets meet the target,
whatever the task and its loss:

- s_q is the *exact* sparsity of the model that mask removal would cut from the gates right now (their
  deterministic eval mask), not the expected sparsity under the gates' sampling distribution: the two
  differ (a whole-layer gate with keep probability 0.7 costs 70% of the layer in expectation, but the eval
  mask keeps all of it). The exact sparsity is piecewise constant, so its gradient is taken from the
  expected sparsity (a straight-through estimator): value exact, gradient expected.
- The lambdas are updated by dual ascent once per optimizer update (``attach`` hooks the optimizer), with
  the gap averaged over the update's forward passes: independent of the optimizer, its learning-rate
  schedule and gradient accumulation:

      lambda1 += lambda_lr * (s - t)
      lambda2 += LAMBDA2_STEP * lambda_lr * (s - t) ** 2

  lambda2 (its term's gradient 2 * lambda2 * (s - t) is the proportional action that damps overshoot)
  steps faster because its gradient (s - t) ** 2 is an order smaller than lambda1's. Gates move at a
  limited speed, so lambda1 grows while they lag the rising target and then pushes them past it; a
  lambda1 that pushes past the target is therefore unwound in proportion to its size (anti-windup).
- S is a running mean of the task loss's magnitude, so the lambdas are in units of the task loss: ESPnet's
  CTC loss summed over tokens and a mean-reduced loss need the same settings.

Variant ``latency`` (HJ-Latency) controls the latency of a table measured on the deployment machine
(``pruning.latency_table``): exact value from the table at the eval masks' kept sizes, gradient from the table
at the expected kept sizes.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from espnet_prune.config_schema import from_mapping
from espnet_prune.models.model import Wav2Vec2Model
from espnet_prune.pruning.cost import exact_cost, expected_cost
from espnet_prune.pruning.distill import DistillConfig
from espnet_prune.pruning.gating import GateConfig, gate_parameters
from espnet_prune.pruning.latency import LATENCY, LatencyTable, exact_quantity, expected_quantity
from espnet_prune.pruning.removal import floor_config, pruned_config

VARIANTS = ("size", "sep_size", "mac", "transformer_only", "latency")

# Per variant: the target keys of the pruning block and the cost quantity each one controls (attribute
# names of the cost reports).
CONTROLLED = {
    "size": {"target_sparsity": "params"},
    "sep_size": {"cnn_target_sparsity": "cnn_params", "transformer_target_sparsity": "transformer_params"},
    "mac": {"target_sparsity": "macs"},
    "transformer_only": {"target_sparsity": "transformer_params"},
    "latency": {"target_sparsity": LATENCY},
}
QUANTITY_NAMES = {
    "params": "parameters",
    "cnn_params": "CNN parameters",
    "transformer_params": "Transformer parameters",
    "macs": "MACs",
    LATENCY: "table latency",
}
TARGET_KEYS = ("target_sparsity", "cnn_target_sparsity", "transformer_target_sparsity")

# Step of lambda2's dual ascent relative to lambda1's (see the module docstring).
LAMBDA2_STEP = 10.0
# Running mean of the task loss's magnitude: weight of the newest forward pass.
LOSS_SCALE_MOMENTUM = 0.02
# Training forward passes without any update after which a controller that was never attached is an error.
UNATTACHED_PASSES = 64


@dataclass
class PruningConfig:
    """The pruning block of a training config.

    Attributes:
        variant: "size" (one target on all params), "sep_size" (CNN and Transformer params apart),
            "mac" (total MACs at ``reference_seconds``), "transformer_only" (the baseline: CNN not
            gated, target on Transformer params), "latency" (table latency at ``reference_seconds``).
        target_sparsity: final fraction of the controlled cost to remove (every variant but sep_size).
        cnn_target_sparsity, transformer_target_sparsity: the two targets of sep_size (only there).
        latency_table: the JSON table of variant latency (``python -m espnet_prune.bin.profile
            --latency_table``, measured on the deployment machine); only there.
        warmup_updates: optimizer updates over which the target grows linearly from 0 to its final value.
        reference_seconds: audio duration at which MACs are computed (and the latency table measured).
        gate_lr: learning rate of the gates' log_alpha (their own optimizer group, no weight decay).
        lambda_lr: relative step of the lambdas' dual ascent per update (lambdas in units of the task loss).
        gates: which structures are gated and how gates start.
        distill: layer-to-layer distillation from the dense starting model alongside the task loss
            (DPHuBERT); None: the task loss alone.
    """

    variant: str = "mac"
    target_sparsity: Optional[float] = None
    cnn_target_sparsity: Optional[float] = None
    transformer_target_sparsity: Optional[float] = None
    latency_table: Optional[str] = None
    warmup_updates: int = 1000
    reference_seconds: float = 10.0
    gate_lr: float = 0.02
    lambda_lr: float = 1.0
    gates: GateConfig = field(default_factory=GateConfig)
    distill: Optional[DistillConfig] = None

    def __post_init__(self) -> None:
        if isinstance(self.gates, dict):
            self.gates = GateConfig.from_dict(self.gates)
        if isinstance(self.distill, dict):
            self.distill = DistillConfig.from_dict(self.distill)
        if self.variant not in VARIANTS:
            raise ValueError(f"variant: {self.variant!r} is not one of {VARIANTS}")
        used = CONTROLLED[self.variant]
        for key in TARGET_KEYS:
            value = getattr(self, key)
            if key not in used:
                if value is not None:
                    raise ValueError(
                        f"{key}: variant {self.variant!r} does not use it; its target key(s): {list(used)}"
                    )
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
                raise ValueError(f"{key}: must be a number in (0, 1) (the fraction to remove), got {value!r}")
        if (self.latency_table is None) == (self.variant == "latency"):
            raise ValueError(
                "latency_table: variant 'latency' needs the path of a table built by "
                "`python -m espnet_prune.bin.profile --latency_table`"
                if self.latency_table is None
                else f"latency_table: only variant 'latency' uses it (variant {self.variant!r})"
            )
        cnn_gated = self.variant != "transformer_only"
        if self.gates.conv_channels is None:
            self.gates.conv_channels = cnn_gated
        elif self.gates.conv_channels != cnn_gated:
            why = (
                "keeps the CNN whole" if not cnn_gated else "prunes the CNN (use transformer_only to keep it)"
            )
            raise ValueError(
                f"gates.conv_channels: variant {self.variant!r} {why}; leave conv_channels unset"
            )
        if self.warmup_updates < 0:
            raise ValueError(f"warmup_updates: must be >= 0, got {self.warmup_updates}")
        for key in ("reference_seconds", "gate_lr", "lambda_lr"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: must be > 0, got {getattr(self, key)}")

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]], source: str = "pruning") -> PruningConfig:
        return from_mapping(cls, data, source)

    def to_dict(self) -> Dict[str, Any]:
        """The block as a plain mapping, without the target keys (and table) the variant does not use."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in (*TARGET_KEYS, "latency_table"):
            if out[key] is None:
                del out[key]
        out["gates"] = self.gates.to_dict()
        out["distill"] = None if self.distill is None else self.distill.to_dict()
        return out

    def targets(self) -> List[Tuple[str, float]]:
        """(controlled cost quantity, final target sparsity) pairs of this variant."""
        return [(quantity, float(getattr(self, key))) for key, quantity in CONTROLLED[self.variant].items()]


class PruningController(nn.Module):
    """Holds the lambdas, the update counter and the loss scale, and computes the Lagrangian term.

    The dense reference costs come from the config of the model the controller is built for (the
    unpruned geometry). Variant latency reads its table here: a missing file or a table of another
    geometry or reference duration is an error, one measured on another machine a warning.
    Training needs ``attach(optimizer)`` (or a call of ``update()`` after every optimizer step): the
    update hook advances the target warm-up and takes the lambdas' dual step. All state is in buffers, so
    checkpoints resume it exactly.
    """

    def __init__(self, model: Wav2Vec2Model, cfg: PruningConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.targets = cfg.targets()
        self.latency_table: Optional[LatencyTable] = None
        if cfg.latency_table is not None:
            self.latency_table = LatencyTable.load(cfg.latency_table)
            self.latency_table.check_geometry(model.config)
            if self.latency_table.seconds != cfg.reference_seconds:
                raise ValueError(
                    f"reference_seconds: {cfg.reference_seconds:g}, but latency table {cfg.latency_table} "
                    f"was measured at {self.latency_table.seconds:g} s; set reference_seconds to it"
                )
            self.latency_table.warn_machine_mismatch()
        self.dense_costs = [
            exact_quantity(model.config, quantity, cfg.reference_seconds, self.latency_table)
            for quantity, _ in self.targets
        ]
        self._check_reachable(model)
        self.register_buffer("lambdas", torch.zeros(len(self.targets), 2))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("loss_scale", torch.zeros(()))  # 0 until the first task loss is seen
        # Exact gaps summed over the forward passes since the last update (for gradient accumulation).
        self.register_buffer("pending_gaps", torch.zeros(len(self.targets), dtype=torch.float64))
        self.register_buffer("pending_passes", torch.zeros((), dtype=torch.long))
        self._optimizers: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()

    def _check_reachable(self, model: Wav2Vec2Model) -> None:
        """Refuse a target that even the smallest model the gates can reach does not meet: the controller
        would push every gate shut and still miss it, and training would end in a useless model."""
        floor = floor_config(model)
        keys = CONTROLLED[self.cfg.variant]
        for key, (quantity, final), dense in zip(keys, self.targets, self.dense_costs):
            reachable = (
                1.0 - exact_quantity(floor, quantity, self.cfg.reference_seconds, self.latency_table) / dense
            )
            if final >= reachable:
                where = f" at {self.cfg.reference_seconds:g} s" if quantity in ("macs", LATENCY) else ""
                raise ValueError(
                    f"{key}: {final:g} cannot be reached: with every gated structure cut away (gated CNN layers "
                    f"down to one channel, gated attention and FFN branches removed) the model keeps "
                    f"{1.0 - reachable:.1%} of its {QUANTITY_NAMES[quantity]}{where}, "
                    f"so at most {reachable:.3f} can be removed; lower {key} or gate more structures (gates)"
                )

    @property
    def num_updates(self) -> int:
        return int(self.updates)

    def current_target(self, final: float) -> float:
        """Target sparsity after ``num_updates`` updates of the linear warm-up."""
        warmup = self.cfg.warmup_updates
        if warmup == 0:
            return final
        return final * min(1.0, self.num_updates / warmup)

    def param_groups(self, model: nn.Module) -> List[Dict[str, Any]]:
        """The optimizer group of ``model``'s gates: ``gate_lr``, no weight decay."""
        return [{"params": list(gate_parameters(model)), "lr": self.cfg.gate_lr, "weight_decay": 0.0}]

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Call ``update()`` after every step ``optimizer`` takes.

        An update the trainer skips (ESPnet's, when the gradient norm is not finite; AMP's GradScaler, on an
        inf) never calls ``optimizer.step()``: as for ESPnet's scheduler and Adam's step count, it is no
        update. Its forward passes stay pending and join the next update's mean gap without changing it:
        no gate moved and the target did not advance, so every pass since the last update saw the same gap.
        """
        if optimizer not in self._optimizers:
            optimizer.register_step_post_hook(lambda *_: self.update())
            self._optimizers.add(optimizer)

    @torch.no_grad()
    def update(self) -> None:
        """One optimizer update happened: dual ascent on the lambdas with the update's mean exact gap,
        and one more update for the target warm-up."""
        passes = int(self.pending_passes)
        if passes:
            gaps = (self.pending_gaps / passes).to(self.lambdas.dtype)
            lambda1 = self.lambdas[:, 0]
            step = self.cfg.lambda_lr * gaps
            # Anti-windup: a lambda1 that pushes past the target is unwound in proportion to its size,
            # but never beyond zero in one update.
            unwinding = step * lambda1 < 0
            unwound = lambda1 + step * (1.0 + lambda1.abs())
            unwound = torch.where(unwound * lambda1 < 0, torch.zeros_like(unwound), unwound)
            lambda1.copy_(torch.where(unwinding, unwound, lambda1 + step))
            self.lambdas[:, 1] += LAMBDA2_STEP * self.cfg.lambda_lr * gaps.square()
        self.pending_gaps.zero_()
        self.pending_passes.zero_()
        self.updates += 1

    def _scale(self, task_loss: Optional[Tensor]) -> Tensor:
        """S: the running mean of |task loss| (1 without a task loss); updated in training by finite losses
        only (a non-finite one makes ESPnet skip its update, and must not stay in the mean)."""
        if task_loss is None:
            return torch.ones((), device=self.lambdas.device)
        magnitude = task_loss.detach().abs().float().mean()
        if self.training and torch.isfinite(magnitude):
            if float(self.loss_scale) == 0.0:
                self.loss_scale.copy_(magnitude)
            else:
                self.loss_scale.lerp_(magnitude, LOSS_SCALE_MOMENTUM)
        return self.loss_scale.clone() if float(self.loss_scale) > 0 else magnitude

    def forward(
        self, model: Wav2Vec2Model, task_loss: Optional[Tensor] = None
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The Lagrangian term for ``model``'s gates and the statistics to log.

        ``task_loss`` (the loss the pruning term is added to) sets the term's scale S.
        """
        if (
            self.training
            and not self._optimizers
            and self.num_updates == 0
            and self.pending_passes >= UNATTACHED_PASSES
        ):
            raise RuntimeError(
                "PruningController: no optimizer update reached the controller; call controller.attach(optimizer) "
                "(or controller.update() after each optimizer step)"
            )
        reference = self.cfg.reference_seconds
        expected = expected_cost(model, reference)
        exact_config = pruned_config(model)
        exact = exact_cost(exact_config, reference)
        scale = self._scale(task_loss)
        term = self.lambdas.new_zeros(())
        stats: Dict[str, Tensor] = {
            "expected_params": expected.params.detach() / 1e6,
            "expected_gmacs": expected.macs.detach() / 1e9,
            "exact_params": torch.tensor(exact.params / 1e6),
            "exact_gmacs": torch.tensor(exact.macs / 1e9),
            "task_loss_scale": scale.detach().cpu(),
        }
        exact_gaps = []
        for i, ((quantity, final), dense) in enumerate(zip(self.targets, self.dense_costs)):
            target = self.current_target(final)
            expected_value = expected_quantity(model, quantity, reference, self.latency_table)
            exact_value = exact_quantity(exact_config, quantity, reference, self.latency_table)
            if quantity == LATENCY:
                stats["expected_latency_ms"], stats["exact_latency_ms"] = (
                    expected_value.detach(),
                    torch.tensor(exact_value),
                )
            expected_sparsity = 1.0 - expected_value / dense
            exact_sparsity = 1.0 - exact_value / dense
            exact_gaps.append(exact_sparsity - target)
            # Straight-through: the value is the exact gap, the gradient that of the expected sparsity.
            gap = expected_sparsity - expected_sparsity.detach() + (exact_sparsity - target)
            term = term + self.lambdas[i, 0] * gap + self.lambdas[i, 1] * gap * gap
            stats[f"expected_sparsity_{quantity}"] = expected_sparsity.detach()
            stats[f"exact_sparsity_{quantity}"] = torch.tensor(exact_sparsity)
            stats[f"target_{quantity}"] = torch.tensor(target)
            stats[f"lambda1_{quantity}"] = self.lambdas[i, 0].detach().clone()
            stats[f"lambda2_{quantity}"] = self.lambdas[i, 1].detach().clone()
        loss = scale * term
        stats["loss_pruning"] = loss.detach()
        if self.training:
            self.pending_gaps += torch.tensor(
                exact_gaps, dtype=torch.float64, device=self.pending_gaps.device
            )
            self.pending_passes += 1
        return loss, stats
