"""The prunable SSL model as ESPnet's encoder and frontend hold it.

``PrunableSSL`` builds a ``Wav2Vec2Model`` from a checkpoint (any format the importers know), an explicit
config (how a removed model is described) or a preset; with a ``pruning`` block it attaches the gates and
a ``PruningController``. It also freezes the CNN weights for the first updates and optionally normalises
each waveform (fairseq's ``normalize: true`` models). ESPnet-specific code lives in its two owners
(``encoder.py``, ``frontend.py``); this module only adapts configuration to the model and pruning layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import yaml
from torch import Tensor, nn

from espnet_prune.models import PRESETS, Wav2Vec2Config, Wav2Vec2Model, Wav2Vec2Output
from espnet_prune.pruning.controller import PruningConfig, PruningController
from espnet_prune.pruning.gating import attach_gates

# Config keys that may be changed on top of a checkpoint's geometry (regularisation only).
OVERRIDABLE = ("dropout", "attention_dropout", "activation_dropout", "projection_dropout", "layer_drop")

MappingOrPath = Union[Dict[str, Any], str, None]


class ConfigError(ValueError):
    """A bad encoder/frontend configuration; the message names the key and the offending value."""


def load_mapping(value: MappingOrPath, key: str) -> Optional[Dict[str, Any]]:
    """A config block given inline (dict) or as the path of a YAML file holding it."""
    if value is None or isinstance(value, dict):
        return value
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{key}: file {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"{key}: {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def build_ssl_model(
    source: str,
    ssl_checkpoint: Optional[str] = None,
    model_config: MappingOrPath = None,
    preset: Optional[str] = None,
    model_overrides: Optional[Dict[str, Any]] = None,
    output_layer: Optional[int] = None,
) -> Wav2Vec2Model:
    """The ungated model from exactly one of checkpoint / explicit config / preset.

    ``output_layer`` k keeps only the first k Transformer layers: the layers above are never computed, so
    they are neither counted in the cost nor pruned.
    """
    sources = (("ssl_checkpoint", ssl_checkpoint), ("model_config", model_config), ("preset", preset))
    given = [key for key, value in sources if value is not None]
    if len(given) != 1:
        raise ConfigError(f"{source}: give exactly one of ssl_checkpoint, model_config, preset (got {given or 'none'})")
    pretrained: Optional[Wav2Vec2Model] = None
    if ssl_checkpoint is not None:
        from espnet_prune.models.importers import load_pretrained

        if not Path(ssl_checkpoint).exists():
            raise ConfigError(f"{source}.ssl_checkpoint: {ssl_checkpoint!r} does not exist")
        try:
            pretrained, config = load_pretrained(ssl_checkpoint)
        except (ValueError, KeyError, RuntimeError, FileNotFoundError) as exc:
            raise ConfigError(f"{source}.ssl_checkpoint: {ssl_checkpoint!r} is not a supported wav2vec2/HuBERT "
                              f"checkpoint: {exc}") from exc
    elif model_config is not None:
        data = load_mapping(model_config, f"{source}.model_config")
        try:
            config = Wav2Vec2Config.from_dict(data, source=f"{source}.model_config")
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    else:
        if preset not in PRESETS:
            raise ConfigError(f"{source}.preset: {preset!r} is not one of {sorted(PRESETS)}")
        config = PRESETS[preset]()

    overrides = dict(model_overrides or {})
    bad = sorted(set(overrides) - set(OVERRIDABLE))
    if bad:
        raise ConfigError(f"{source}.model_overrides: {bad} cannot be overridden; allowed keys are {list(OVERRIDABLE)}")
    if output_layer is not None:
        if not 1 <= output_layer <= config.num_layers:
            raise ConfigError(f"{source}.output_layer: must be in [1, {config.num_layers}], got {output_layer}")
        overrides.update(num_heads=config.num_heads[:output_layer], ffn_dims=config.ffn_dims[:output_layer])
    try:
        config = config.replace(**overrides)
    except ValueError as exc:
        raise ConfigError(f"{source}.model_overrides: {exc}") from exc

    model = Wav2Vec2Model(config)
    if pretrained is not None:
        state = pretrained.state_dict()
        if output_layer is not None:
            dropped = tuple(f"encoder.layers.{i}." for i in range(output_layer, pretrained.config.num_layers))
            state = {k: v for k, v in state.items() if not k.startswith(dropped)}
        model.load_state_dict(state)
    return model


def normalize_waveform(waveform: Tensor, lengths: Tensor, eps: float = 1e-5) -> Tensor:
    """Zero mean, unit variance per utterance over its valid samples (fairseq's ``normalize: true``)."""
    valid = (torch.arange(waveform.shape[1], device=waveform.device)[None, :] < lengths[:, None]).to(waveform.dtype)
    count = valid.sum(1, keepdim=True).clamp(min=1.0)
    mean = (waveform * valid).sum(1, keepdim=True) / count
    var = ((waveform - mean).square() * valid).sum(1, keepdim=True) / count
    return (waveform - mean) * torch.rsqrt(var + eps) * valid


class PrunableSSL(nn.Module):
    """A wav2vec2 / HuBERT model, gated with a Lagrangian controller when ``pruning`` is given.

    Args:
        source: the config key this module is built from ("encoder_conf" / "frontend_conf"), for messages.
        ssl_checkpoint, model_config, preset, model_overrides, output_layer: see ``build_ssl_model``;
            ``model_config`` may be a dict or a YAML file.
        pruning: a ``PruningConfig`` mapping (or YAML file); None = dense fine-tuning.
        freeze_cnn_updates: the CNN weights get no gradient for this many updates (its gates still learn).
        normalize_waveform: normalise every waveform first (required by e.g. wav2vec2-large-lv60k, XLS-R).
    """

    def __init__(
        self,
        source: str,
        ssl_checkpoint: Optional[str] = None,
        model_config: MappingOrPath = None,
        preset: Optional[str] = None,
        model_overrides: Optional[Dict[str, Any]] = None,
        output_layer: Optional[int] = None,
        pruning: MappingOrPath = None,
        freeze_cnn_updates: int = 0,
        normalize_waveform: bool = False,
    ) -> None:
        super().__init__()
        self.model = build_ssl_model(source, ssl_checkpoint, model_config, preset, model_overrides, output_layer)
        self.controller: Optional[PruningController] = None
        pruning = load_mapping(pruning, f"{source}.pruning")
        if pruning is not None:
            try:
                cfg = PruningConfig.from_dict(pruning, source="pruning")
            except ValueError as exc:
                raise ConfigError(f"{source}.{exc}") from exc
            attach_gates(self.model, cfg.gates)
            self.controller = PruningController(self.model, cfg)
        if freeze_cnn_updates < 0:
            raise ConfigError(f"{source}.freeze_cnn_updates: must be >= 0, got {freeze_cnn_updates}")
        self.freeze_cnn_updates = int(freeze_cnn_updates)
        self.normalize_waveform = normalize_waveform
        if self.controller is None and self.freeze_cnn_updates:
            # A gated model counts its updates in the controller; a dense one that freezes its CNN, here.
            self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def config(self) -> Wav2Vec2Config:
        return self.model.config

    @property
    def num_updates(self) -> int:
        """Optimizer updates seen so far (counted by the hook ``attach`` installs)."""
        if self.controller is not None:
            return self.controller.num_updates
        return int(self.updates) if self.freeze_cnn_updates else 0

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Count the updates ``optimizer`` makes (target warm-up, dual ascent, CNN freezing)."""
        if self.controller is not None:
            self.controller.attach(optimizer)
        elif self.freeze_cnn_updates:
            optimizer.register_step_post_hook(lambda *_: self.updates.add_(1))

    def explicit_conf(self) -> Dict[str, Any]:
        """Keyword arguments that rebuild this module without the checkpoint file (for config.yaml)."""
        return dict(
            model_config=self.config.to_dict(),
            pruning=None if self.controller is None else self.controller.cfg.to_dict(),
            freeze_cnn_updates=self.freeze_cnn_updates,
            normalize_waveform=self.normalize_waveform,
        )

    def param_groups(self) -> List[Dict[str, Any]]:
        """The optimizer group of the gates (own lr, no weight decay); empty when dense."""
        return [] if self.controller is None else self.controller.param_groups(self.model)

    def pruning_loss(self, task_loss: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The Lagrangian term, scaled to ``task_loss``, and its statistics."""
        assert self.controller is not None, "pruning_loss() needs a pruning block"
        return self.controller(self.model, task_loss)

    def cnn_frozen(self) -> bool:
        return self.num_updates < self.freeze_cnn_updates

    def forward(self, waveform: Tensor, lengths: Tensor) -> Wav2Vec2Output:
        """waveform: (B, samples) at 16 kHz, lengths: (B,) valid samples."""
        if self.normalize_waveform:
            waveform = normalize_waveform(waveform, lengths)
        if not (self.training and self.cnn_frozen()):
            return self.model(waveform, lengths)
        # Detached CNN weights: no gradient reaches them, while the CNN channel gates still learn.
        detached = {
            f"feature_extractor.{name}": p.detach()
            for name, p in self.model.feature_extractor.named_parameters()
            if not name.endswith("log_alpha")
        }
        return torch.func.functional_call(self.model, detached, (waveform, lengths), strict=False)

    def extra_repr(self) -> str:
        state = "dense" if self.controller is None else f"pruning={self.controller.cfg.variant}"
        return f"{state}, freeze_cnn_updates={self.freeze_cnn_updates}, normalize_waveform={self.normalize_waveform}"


def find_prunable(model: nn.Module) -> List[Tuple[str, PrunableSSL]]:
    """(qualified name, module) of every PrunableSSL inside an ESPnet model."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PrunableSSL)]

