"""Attach hard-concrete gates to the insertion points of a Wav2Vec2Model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

from torch import Tensor, nn

from espnet_prune.config_schema import from_mapping
from espnet_prune.models.model import Wav2Vec2Model
from espnet_prune.pruning.hard_concrete import HardConcrete


@dataclass
class GateConfig:
    """Which structures get gates, and how the gates start.

    ``conv_channels`` gates the output channels of every CNN layer; None (the default) means "as the
    pruning variant needs": on for size, sep_size and mac, off for the Transformer-only baseline.
    ``multiple_of`` rounds the kept CNN channels and FFN units of the final masks to multiples (8 suits
    oneDNN and tensor cores; heads and whole layers are not rounded).
    """

    conv_channels: Optional[bool] = None
    attention_heads: bool = True
    attention_layers: bool = True
    ffn_units: bool = True
    ffn_layers: bool = True
    init_keep_prob: float = 0.99
    temperature: float = 2.0 / 3.0
    stretch: Tuple[float, float] = (-0.1, 1.1)
    multiple_of: int = 1

    def __post_init__(self) -> None:
        self.stretch = tuple(self.stretch)
        if not 0.0 < self.init_keep_prob < 1.0:
            raise ValueError(f"init_keep_prob: must be in (0, 1), got {self.init_keep_prob}")
        if self.temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {self.temperature}")
        if not (len(self.stretch) == 2 and self.stretch[0] < 0.0 < 1.0 < self.stretch[1]):
            raise ValueError(f"stretch: expected [l, r] with l < 0 and r > 1, got {list(self.stretch)}")
        if self.multiple_of < 1:
            raise ValueError(f"multiple_of: must be >= 1, got {self.multiple_of}")

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]], source: str = "gates") -> GateConfig:
        return from_mapping(cls, data, source)

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["stretch"] = list(self.stretch)
        return out


GATE_SLOTS = ("channel_gate", "head_gate", "unit_gate", "layer_gate")


def _gate(cfg: GateConfig, num_units: int, min_keep: int = 0, multiple_of: int = 1) -> HardConcrete:
    return HardConcrete(
        num_units,
        cfg.init_keep_prob,
        cfg.temperature,
        cfg.stretch,
        min_keep=min_keep,
        multiple_of=multiple_of,
    )


def attach_gates(model: Wav2Vec2Model, cfg: Optional[GateConfig] = None) -> Wav2Vec2Model:
    """Put a gate on every structure ``cfg`` selects; returns the same model (modified in place).

    Gates are submodules, so their ``log_alpha`` parameters appear in ``model.state_dict()`` and
    in ``model.parameters()``.
    """
    cfg = cfg or GateConfig()
    if any(True for _ in iter_gates(model)):
        raise ValueError("attach_gates: the model already has gates attached")
    if cfg.conv_channels is not False:
        for block in model.feature_extractor.conv_layers:
            block.channel_gate = _gate(cfg, block.conv.out_channels, min_keep=1, multiple_of=cfg.multiple_of)
    for layer in model.encoder.layers:
        if layer.attention is not None:
            if cfg.attention_heads:
                layer.attention.head_gate = _gate(cfg, layer.attention.num_heads)
            if cfg.attention_layers:
                layer.attention.layer_gate = _gate(cfg, 1)
        if layer.feed_forward is not None:
            if cfg.ffn_units:
                layer.feed_forward.unit_gate = _gate(
                    cfg, layer.feed_forward.intermediate_dense.out_features, multiple_of=cfg.multiple_of
                )
            if cfg.ffn_layers:
                layer.feed_forward.layer_gate = _gate(cfg, 1)
    return model


def iter_gates(model: nn.Module) -> Iterator[Tuple[str, HardConcrete]]:
    """(qualified name, gate) for every attached gate, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, HardConcrete):
            yield name, module


def gate_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The log_alpha parameters (they get their own learning rate and no weight decay)."""
    for _, gate in iter_gates(model):
        yield gate.log_alpha


def weight_parameters(model: nn.Module) -> Iterator[Tuple[str, nn.Parameter]]:
    """(qualified name, parameter) for every parameter of ``model`` that is not a gate's."""
    gates = {id(p) for p in gate_parameters(model)}
    for name, parameter in model.named_parameters():
        if id(parameter) not in gates:
            yield name, parameter


def ungated_state_dict(model: nn.Module) -> Dict[str, Tensor]:
    """``model.state_dict()`` without the entries of its gates."""
    prefixes = tuple(f"{name}." for name, _ in iter_gates(model))
    return {k: v for k, v in model.state_dict().items() if not (prefixes and k.startswith(prefixes))}


def detach_gates(model: Wav2Vec2Model) -> None:
    """Remove every gate from the model (used after their values were folded into the weights)."""
    for module in model.modules():
        for slot in GATE_SLOTS:
            if isinstance(getattr(module, slot, None), HardConcrete):
                setattr(module, slot, None)
