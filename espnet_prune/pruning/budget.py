"""The budget the removed model has: exact sparsity of the eval masks, and a final fit to the target.

The controller steers the exact sparsity of the eval masks during training, but it holds the target only
to within the granularity of the structures near their decision (one attention head can be 4% of a small
model's MACs) and its last oscillation. ``fit_to_targets`` closes that residual before removal: it adds
one shift to the ``log_alpha`` of every gate a target controls, which moves their keep probabilities
together and so keeps the learned order of units within and across structures, and picks the shift whose
eval masks cut closest to the target (no shift when the trained masks are already within tolerance).
Variant latency's quantity is the table latency (``latency_table``) of what the eval masks cut.

A table interpolates times measured per structure and misses the latency of a whole model by a few points
(its whole-model check). On the deployment machine, ``calibrate_latency`` closes that too: it times the
cut against the dense model (``measure``), moves the table target by the miss and fits again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from espnet_prune.models.config import Wav2Vec2Config
from espnet_prune.models.model import Wav2Vec2Model
from espnet_prune.pruning.gating import iter_gates
from espnet_prune.pruning.latency import LATENCY, LatencyTable, exact_quantity
from espnet_prune.pruning.removal import pruned_config

# A target counts as met within this much sparsity (the fit stops there).
FIT_TOLERANCE = 0.005
# The shifts searched, in log_alpha units (keep probabilities move from about 0.0003 to 0.9997 across it).
MAX_SHIFT = 8.0
# A measured latency sparsity counts as met within this much (about the spread of repeated timings).
MEASURED_TOLERANCE = 0.01


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


@dataclass(frozen=True)
class LatencyCalibration:
    """One round of ``calibrate_latency``: the table target fitted to, the table's sparsity of the cut
    and its measured sparsity (1 - measured latency / dense latency)."""

    table_target: float
    table_sparsity: float
    measured_sparsity: float


@torch.no_grad()
def calibrate_latency(
    model: Wav2Vec2Model,
    target: float,
    seconds: float,
    latency_table: LatencyTable,
    measure: Callable[[Wav2Vec2Config], float],
    rounds: int = 3,
) -> List[LatencyCalibration]:
    """Fit the latency gates so that the *measured* latency sparsity of the cut is ``target``.

    Each round fits the trained gates to a table target (``fit_to_targets``), measures the cut
    (``measure``: a config's latency over the dense model's, on this machine) and moves the table target
    by the miss; it stops within ``MEASURED_TOLERANCE`` or after ``rounds`` measurements and leaves the
    gates at the round whose measured sparsity is nearest to ``target``. Modifies ``log_alpha`` in place.
    """
    gates = controlled_gates(model, LATENCY)
    trained = [gate.detach().clone() for gate in gates]
    history: List[LatencyCalibration] = []
    best: Optional[List[torch.Tensor]] = None
    table_target = target
    for _ in range(rounds):
        for gate, start in zip(gates, trained):
            gate.copy_(start)
        fit = fit_to_targets(model, [(LATENCY, table_target)], seconds, latency_table)[0]
        measured = 1.0 - measure(pruned_config(model))
        history.append(LatencyCalibration(table_target, fit.fitted, measured))
        if best is None or abs(measured - target) <= min(abs(h.measured_sparsity - target) for h in history):
            best = [gate.detach().clone() for gate in gates]
        if abs(measured - target) <= MEASURED_TOLERANCE:
            break
        table_target = min(max(table_target - (measured - target), 0.0), 0.99)
    for gate, kept in zip(gates, best or trained):
        gate.copy_(kept)
    return history
