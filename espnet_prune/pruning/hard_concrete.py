"""Hard-concrete (L0) gates, Louizos, Welling and Kingma (ICLR 2018).

A gate holds one ``log_alpha`` per unit. In training every call draws a fresh stretched, clipped
concrete sample z in [0, 1]; at eval the mask is deterministic: the expected number of kept units
(rounded) with the largest ``log_alpha`` keep their test-time value, the rest are exactly 0. Inside a
branch that also has a layer gate, the unit count takes the layer gate's keep probability into account
(``count_scale``; see ``models.components.branch_masks``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn


class HardConcrete(nn.Module):
    """A vector of ``num_units`` hard-concrete gates.

    Args:
        num_units: number of gated units (1 for a whole-layer gate).
        init_keep_prob: initial P(z > 0) of every unit; close to 1 so that pruning starts from the
            full model.
        temperature: concrete temperature beta (2/3 in the L0 literature).
        stretch: the interval (l, r) the sigmoid is stretched to before clipping to [0, 1].
        init_std: std of the noise added to the initial log_alpha (breaks ties for the eval top-k).
        min_keep: units that the deterministic eval mask always keeps (1 for CNN channels, whose
            layer cannot disappear; 0 elsewhere).
        multiple_of: the deterministic mask keeps a multiple of this many units (or all of them):
            CPU/GPU kernels run matrices whose sizes are multiples of 8 markedly faster.
    """

    def __init__(
        self,
        num_units: int,
        init_keep_prob: float = 0.99,
        temperature: float = 2.0 / 3.0,
        stretch: tuple = (-0.1, 1.1),
        init_std: float = 0.01,
        min_keep: int = 0,
        multiple_of: int = 1,
    ) -> None:
        super().__init__()
        if num_units < 1:
            raise ValueError(f"num_units: must be >= 1, got {num_units}")
        if not 0.0 < init_keep_prob < 1.0:
            raise ValueError(f"init_keep_prob: must be in (0, 1), got {init_keep_prob}")
        low, high = stretch
        if not (low < 0.0 and high > 1.0):
            raise ValueError(f"stretch: expected l < 0 < 1 < r, got {stretch}")
        if multiple_of < 1:
            raise ValueError(f"multiple_of: must be >= 1, got {multiple_of}")
        self.num_units = num_units
        self.temperature = temperature
        self.low, self.high = float(low), float(high)
        self.min_keep = min_keep
        self.multiple_of = multiple_of
        # P(z > 0) = sigmoid(log_alpha - beta * log(-l / r)), solved for log_alpha.
        self.log_ratio = math.log(-self.low / self.high)
        mean = math.log(init_keep_prob / (1.0 - init_keep_prob)) + temperature * self.log_ratio
        self.log_alpha = nn.Parameter(torch.randn(num_units) * init_std + mean)

    def extra_repr(self) -> str:
        return f"num_units={self.num_units}, temperature={self.temperature:.3f}, stretch=({self.low}, {self.high})"

    def keep_prob(self) -> Tensor:
        """P(z > 0) per unit: differentiable in log_alpha; its sum is the expected L0 norm."""
        return torch.sigmoid(self.log_alpha - self.temperature * self.log_ratio)

    def sample(self) -> Tensor:
        """A fresh training sample z in [0, 1] (reparameterised, so gradients reach log_alpha)."""
        eps = 1e-6
        u = torch.rand_like(self.log_alpha).clamp(eps, 1.0 - eps)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.temperature)
        return (s * (self.high - self.low) + self.low).clamp(0.0, 1.0)

    def num_kept(self, count_scale: Optional[Tensor] = None) -> int:
        """Units the deterministic mask keeps: the expected L0 norm (times ``count_scale``, the keep
        probability of an enclosing layer gate) rounded to a multiple of ``multiple_of`` (or to
        ``num_units``, whichever is nearer), at least ``min_keep``."""
        expected = self.keep_prob().detach().sum()
        if count_scale is not None:
            expected = expected * count_scale.detach()
        expected = float(expected)
        step = self.multiple_of
        kept = min(int(round(expected / step)) * step, self.num_units)
        if self.num_units - expected < abs(expected - kept):
            kept = self.num_units
        if kept < self.min_keep:
            kept = min(self.num_units, -(-self.min_keep // step) * step)
        return kept

    def test_values(self) -> Tensor:
        """Louizos et al.'s test-time estimate per unit: clamp(sigmoid(log_alpha) * (r - l) + l, 0, 1)."""
        return (torch.sigmoid(self.log_alpha) * (self.high - self.low) + self.low).clamp(0.0, 1.0)

    def deterministic(self, count_scale: Optional[Tensor] = None) -> Tensor:
        """Eval mask: test-time values of the top-``num_kept`` units by log_alpha, zeros elsewhere."""
        values = self.test_values()
        kept = self.num_kept(count_scale)
        mask = torch.zeros_like(values)
        if kept:
            index = torch.topk(self.log_alpha, kept).indices
            mask[index] = values[index]
        return mask

    def forward(self, count_scale: Optional[Tensor] = None) -> Tensor:
        """A training sample, or the eval mask (``count_scale``: see ``num_kept``)."""
        return self.sample() if self.training else self.deterministic(count_scale)
