"""Layer-to-layer distillation from the dense starting model while pruning (DPHuBERT, Peng et al., 2023).

The gated student's hidden states after some Transformer layers, each through a learned linear map, are
pulled toward the frozen dense teacher's at the same layers. The loss per frame is DistilHuBERT's:

    l1_cos: mean |W h_s - h_t|  -  log sigmoid(cos(W h_s, h_t))
    l1:     mean |W h_s - h_t|

averaged over the valid frames of the batch and over the layers. The teacher is a copy of the model taken
before any gate was attached (the starting checkpoint), or that geometry with the weights of another file
(``teacher``: the dense fine-tuned model); it is held outside the module tree, so it is never saved, never
trained, and stays in eval mode; it follows the student to its device on first use.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from espnet_prune.config_schema import from_mapping
from espnet_prune.models.model import Wav2Vec2Model, Wav2Vec2Output

LOSSES = ("l1_cos", "l1")


@dataclass
class DistillConfig:
    """The ``distill`` block of a pruning config.

    Attributes:
        weight: weight of the distillation loss relative to the task loss (both in units of the task loss's
            running magnitude, as the pruning term is, so one value works for summed and mean losses).
        layers: Transformer layers (1-based) whose outputs are distilled.
        loss: "l1_cos" (DistilHuBERT / DPHuBERT) or "l1".
        teacher: a model file whose SSL weights the teacher takes, e.g. the dense model fine-tuned on the
            same task (CoFi's teacher); None: the starting model. The owner of the model reads the file.
    """

    weight: float = 1.0
    layers: List[int] = field(default_factory=lambda: [4, 8, 12])
    loss: str = "l1_cos"
    teacher: Optional[str] = None

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ValueError(f"weight: must be > 0, got {self.weight}")
        if not self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 1:
            raise ValueError(f"layers: distinct Transformer layer numbers >= 1, got {self.layers}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss: {self.loss!r} is not one of {LOSSES}")

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]], source: str = "distill") -> DistillConfig:
        return from_mapping(cls, data, source)

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: copy.copy(getattr(self, f.name)) for f in fields(self)}


def frame_distillation_loss(student: Tensor, teacher: Tensor, valid: Optional[Tensor], loss: str) -> Tensor:
    """``loss`` between (B, T, C) hidden states, averaged over the frames where ``valid`` (B, T) is True."""
    per_frame = (student - teacher).abs().mean(-1)
    if loss == "l1_cos":
        per_frame = per_frame - F.logsigmoid(F.cosine_similarity(student, teacher, dim=-1))
    if valid is None:
        return per_frame.mean()
    return (per_frame * valid).sum() / valid.sum().clamp(min=1)


class LayerDistiller(nn.Module):
    """The linear maps of the student's layers and, outside the module tree, the frozen teacher."""

    def __init__(self, teacher: Wav2Vec2Model, cfg: DistillConfig, source: str = "distill") -> None:
        super().__init__()
        num_layers = len(teacher.encoder.layers)
        if max(cfg.layers) > num_layers:
            raise ValueError(
                f"{source}.layers: the model has {num_layers} Transformer layers, got {cfg.layers}"
            )
        self.cfg = cfg
        dim = teacher.config.embed_dim
        # Identity at the start: the student begins as a copy of the teacher.
        self.projections = nn.ModuleList(nn.Linear(dim, dim) for _ in cfg.layers)
        with torch.no_grad():
            for projection in self.projections:
                projection.weight.copy_(torch.eye(dim))
                projection.bias.zero_()
        self._teacher = (teacher.eval().requires_grad_(False),)  # a tuple: not a submodule, never saved

    @property
    def teacher(self) -> Wav2Vec2Model:
        return self._teacher[0]

    def forward(self, waveform: Tensor, lengths: Optional[Tensor], student: Wav2Vec2Output) -> Tensor:
        """The loss between ``student`` (the gated model's output on ``waveform``) and the teacher's."""
        teacher = self.teacher
        reference = next(self.projections.parameters())
        if next(teacher.parameters()).device != reference.device:
            teacher.to(reference.device)
        with torch.no_grad():
            target = teacher(waveform, lengths)
        valid = None if student.padding_mask is None else ~student.padding_mask
        losses = [
            frame_distillation_loss(
                projection(student.hidden_states[layer]), target.hidden_states[layer], valid, self.cfg.loss
            )
            for layer, projection in zip(self.cfg.layers, self.projections)
        ]
        return torch.stack(losses).mean()

    def extra_repr(self) -> str:
        return f"layers={self.cfg.layers}, loss={self.cfg.loss}, weight={self.cfg.weight}"
