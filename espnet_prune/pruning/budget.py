"""The budget the removed model has: exact sparsity of the eval masks, and a final fit to the target.

The controller steers the exact sparsity of the eval masks during training, but it holds the target only
to within the granularity of the structures near their decision (one attention head can be 4% of a small
model's MACs) and its last oscillation. ``fit_to_targets`` closes that residual before removal: it adds
one shift to the ``log_alpha`` of every gate a target controls, which moves their keep probabilities
together and so keeps the learned order of units within and across structures, and picks the shift whose
eval masks cut closest to the target (no shift when the trained masks are already within tolerance).
Variant latency's quantity is the table latency (``latency_table``) of what the eval masks cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from espnet_prune.models.model import Wav2Vec2Model
from espnet_prune.pruning.gating import iter_gates
from espnet_prune.pruning.latency import LatencyTable, exact_quantity
from espnet_prune.pruning.removal import pruned_config

# A target counts as met within this much sparsity (the fit stops there).
FIT_TOLERANCE = 0.005
# The shifts searched, in log_alpha units (keep probabilities move from about 0.0003 to 0.9997 across it).
MAX_SHIFT = 8.0


def exact_sparsity(
    model: Wav2Vec2Model, quantity: str, seconds: float, latency_table: Optional[LatencyTable] = None
) -> float:
    """1 - cost / dense cost of ``quantity`` for the model the eval masks would cut now."""
    dense = exact_quantity(model.config, quantity, seconds, latency_table)
    return 1.0 - exact_quantity(pruned_config(model), quantity, seconds, latency_table) / dense


def controlled_gates(model: Wav2Vec2Model, quantity: str) -> List[torch.nn.Parameter]:
    """The log_alpha of the gates whose eval masks decide ``quantity``: the CNN's for ``cnn_*``, the
    Transformer's for ``transformer_*``, all of them otherwise."""

    def selected(name: str) -> bool:
        if quantity.startswith("cnn_"):
            return name.startswith("feature_extractor.")
        if quantity.startswith("transformer_"):
            return not name.startswith("feature_extractor.")
        return True

    return [gate.log_alpha for name, gate in iter_gates(model) if selected(name)]


@dataclass(frozen=True)
class Fit:
    """How one target was met: the trained masks' sparsity, the shift added to the gates, the result."""

    quantity: str
    target: float
    trained: float
    shift: float
    fitted: float


@torch.no_grad()
def fit_to_targets(
    model: Wav2Vec2Model, targets: List[tuple], seconds: float, latency_table: Optional[LatencyTable] = None
) -> List[Fit]:
    """Shift the gates of each (quantity, target) so that the eval masks cut closest to the target.

    Modifies the model's ``log_alpha`` in place. The exact sparsity falls monotonically as the shift
    grows (every unit count and every branch decision grows with its keep probability), so a bisection
    finds the step of the sparsity that crosses the target; the side of the step nearer to the target wins.
    (Table latency is monotone too, except for its alignment steps: there the bisection finds a crossing,
    not necessarily the nearest one.)
    """
    fits = []
    for quantity, target in targets:
        gates = controlled_gates(model, quantity)
        original = [g.detach().clone() for g in gates]

        def sparsity_at(shift: float, gates=gates, original=original, quantity=quantity) -> float:
            for gate, start in zip(gates, original):
                gate.copy_(start + shift)
            return exact_sparsity(model, quantity, seconds, latency_table)

        trained = sparsity_at(0.0)
        best = 0.0
        if abs(trained - target) > FIT_TOLERANCE and gates:
            low, high = -MAX_SHIFT, MAX_SHIFT  # sparsity(low) >= target >= sparsity(high), if reachable
            for _ in range(40):
                middle = (low + high) / 2
                if sparsity_at(middle) > target:
                    low = middle
                else:
                    high = middle
            candidates: Dict[float, float] = {0.0: trained, low: sparsity_at(low), high: sparsity_at(high)}
            best = min(candidates, key=lambda shift: (abs(candidates[shift] - target), abs(shift)))
        fits.append(Fit(quantity, target, trained, best, sparsity_at(best)))
    return fits
