"""The prunable SSL model as ESPnet's encoder and frontend hold it.

``SSLOptions`` are the keys of ``encoder_conf`` / ``frontend_conf`` that build it (one list for every
owner: the encoder, the frontend, mask removal). ``PrunableSSL`` builds a ``Wav2Vec2Model`` from a
checkpoint (any format the importers know), an explicit config (how a removed model is described) or a
preset; with a ``pruning`` block it attaches the gates and a ``PruningController``. It also freezes the
CNN weights for the first updates. ESPnet-specific code lives in its two owners (``encoder.py``,
``frontend.py``); this module only adapts configuration to the model and pruning layers.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import yaml
from torch import Tensor, nn

from espnet_prune.checkpoints import CheckpointError, check_keys, load_state_dict
from espnet_prune.config_schema import from_mapping
from espnet_prune.models import PRESETS, Wav2Vec2Config, Wav2Vec2Model, Wav2Vec2Output
from espnet_prune.pruning.controller import PruningConfig, PruningController
from espnet_prune.pruning.distill import LayerDistiller
from espnet_prune.pruning.gating import attach_gates, ungated_state_dict, weight_parameters

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


@dataclass
class SSLOptions:
    """The keys of ``encoder_conf`` / ``frontend_conf`` that build the SSL model.

    Attributes:
        ssl_checkpoint: a fairseq / S3PRL ``.pt``, a Hugging Face model directory, or a torchaudio ``.pth``
            (which records no geometry: give ``preset`` or ``model_config`` with it).
        model_config: the geometry, a mapping or a YAML file (how a removed model is described).
        preset: a named geometry (``wav2vec2_base``, ...), random weights unless a torchaudio checkpoint.
        model_overrides: regularisation settings changed on top of the checkpoint's.
        output_layer: k keeps only the first k Transformer layers (the ones above are never computed).
        pruning: a ``PruningConfig`` mapping (or YAML file); None = dense fine-tuning.
        freeze_cnn_updates: the CNN weights get no gradient for this many updates (its gates still learn).
        normalize_waveform: normalise each waveform to zero mean and unit variance first; None = as the
            checkpoint says (fairseq ``task.normalize``, Hugging Face ``do_normalize``), else as given.
        trust_checkpoint: unpickle a checkpoint that pickles more than plain data (can run its code).
    """

    ssl_checkpoint: Optional[str] = None
    model_config: Optional[Union[Dict[str, Any], str]] = None
    preset: Optional[str] = None
    model_overrides: Optional[Dict[str, Any]] = None
    output_layer: Optional[int] = None
    pruning: Optional[Union[Dict[str, Any], str]] = None
    freeze_cnn_updates: int = 0
    normalize_waveform: Optional[bool] = None
    trust_checkpoint: bool = False

    def to_conf(self) -> Dict[str, Any]:
        """As ``encoder_conf`` / ``frontend_conf``: the geometry, the pruning block and what differs from
        the defaults."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name in ("model_config", "pruning") or getattr(self, f.name) != f.default
        }

    @classmethod
    def from_conf(cls, conf: Dict[str, Any], source: str) -> SSLOptions:
        """From ``encoder_conf`` / ``frontend_conf``: unknown keys and mistyped values name the key."""
        try:
            return from_mapping(cls, conf, source)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def with_ssl_options(init: Callable[..., None]) -> Callable[..., None]:
    """Give ``init(self, ..., **options)`` a signature that lists the ``SSLOptions`` with their defaults,
    so that ESPnet's ``--print_config`` shows them like any other encoder's keyword arguments."""
    signature = inspect.signature(init)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    options = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
        for f in dataclasses.fields(SSLOptions)
    ]
    init.__signature__ = signature.replace(parameters=fixed + options)
    return init


def build_ssl_model(source: str, options: SSLOptions) -> Wav2Vec2Model:
    """The ungated model from the checkpoint, the explicit config or the preset of ``options``.

    ``output_layer`` k keeps only the first k Transformer layers: the layers above are never computed, so
    they are neither counted in the cost nor pruned.
    """
    geometry = [key for key in ("model_config", "preset") if getattr(options, key) is not None]
    if len(geometry) > 1 or (options.ssl_checkpoint is None and not geometry):
        given = geometry + (["ssl_checkpoint"] if options.ssl_checkpoint is not None else [])
        raise ConfigError(
            f"{source}: give exactly one of ssl_checkpoint, model_config, preset (a torchaudio checkpoint with "
            f"model_config or preset; got {given or 'none'})"
        )
    config: Optional[Wav2Vec2Config] = None
    if options.model_config is not None:
        data = load_mapping(options.model_config, f"{source}.model_config")
        try:
            config = Wav2Vec2Config.from_dict(data, source=f"{source}.model_config")
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    elif options.preset is not None:
        if options.preset not in PRESETS:
            raise ConfigError(f"{source}.preset: {options.preset!r} is not one of {sorted(PRESETS)}")
        config = PRESETS[options.preset]()
    pretrained: Optional[Wav2Vec2Model] = None
    if options.ssl_checkpoint is not None:
        from espnet_prune.models.importers import load_pretrained

        checkpoint = options.ssl_checkpoint
        if not Path(checkpoint).exists():
            raise ConfigError(f"{source}.ssl_checkpoint: {checkpoint!r} does not exist")
        try:
            pretrained, config = load_pretrained(
                checkpoint, config, trust_checkpoint=options.trust_checkpoint
            )
        except (CheckpointError, ValueError, KeyError, RuntimeError, FileNotFoundError) as exc:
            raise ConfigError(
                f"{source}.ssl_checkpoint: {checkpoint!r} is not a supported wav2vec2/HuBERT "
                f"checkpoint: {exc}"
            ) from exc
    assert config is not None

    overrides: Dict[str, Any] = dict(options.model_overrides or {})
    bad = sorted(set(overrides) - set(OVERRIDABLE))
    if bad:
        raise ConfigError(
            f"{source}.model_overrides: {bad} cannot be overridden; allowed keys are {list(OVERRIDABLE)}"
        )
    if options.normalize_waveform is not None:
        overrides["normalize_waveform"] = options.normalize_waveform
    output_layer = options.output_layer
    if output_layer is not None:
        if not 1 <= output_layer <= config.num_layers:
            raise ConfigError(
                f"{source}.output_layer: must be in [1, {config.num_layers}], got {output_layer}"
            )
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


def load_teacher_weights(teacher: Wav2Vec2Model, path: str, key: str) -> None:
    """Load into ``teacher`` the SSL weights that model file ``path`` holds for its geometry: the entries under
    the one key prefix that holds all of them (an ESPnet model file of a dense run, ``encoder.ssl.model.``
    there, or a plain state dict); ConfigError naming ``key`` and the file otherwise."""
    try:  # names a missing, empty or unsafe file
        state = load_state_dict(path)
    except CheckpointError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
    expected = teacher.state_dict()
    anchor = next(iter(expected))
    prefixes = [
        name[: len(name) - len(anchor)] for name in state if name == anchor or name.endswith(f".{anchor}")
    ]
    holding = [prefix for prefix in prefixes if all(f"{prefix}{k}" in state for k in expected)]
    if len(holding) != 1:
        found = "no" if not holding else f"{len(holding)} ({', '.join(repr(p) for p in holding)})"
        raise ConfigError(
            f"{key}: {path!r} holds {found} SSL model with every weight of this geometry "
            f"({len(expected)} tensors, e.g. {anchor!r}); give the model file of a dense run of the same "
            "model_config"
        )
    given = {k: state[f"{holding[0]}{k}"] for k in expected}
    try:
        check_keys(expected, given, f"{key} {path!r}", "the SSL model's geometry")
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from exc
    teacher.load_state_dict(given)


class PrunableSSL(nn.Module):
    """A wav2vec2 / HuBERT model, gated with a Lagrangian controller when ``options.pruning`` is given.

    Args:
        source: the config key this module is built from ("encoder_conf" / "frontend_conf"), for messages.
        options: what to build (see ``SSLOptions``).
    """

    def __init__(self, source: str, options: SSLOptions) -> None:
        super().__init__()
        self.model = build_ssl_model(source, options)
        self.controller: Optional[PruningController] = None
        self.distiller: Optional[LayerDistiller] = None
        # (waveform, lengths, output) of the last forward pass, for the distillation loss of its batch
        self._distill_inputs: Optional[Tuple[Tensor, Optional[Tensor], Wav2Vec2Output]] = None
        pruning = load_mapping(options.pruning, f"{source}.pruning")
        if pruning is not None:
            try:
                cfg = PruningConfig.from_dict(pruning, source=f"{source}.pruning")
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            if cfg.distill is not None:  # the teacher is the model as built: before any gate, any update
                try:
                    self.distiller = LayerDistiller(
                        copy.deepcopy(self.model), cfg.distill, f"{source}.pruning.distill"
                    )
                except ValueError as exc:
                    raise ConfigError(str(exc)) from exc
                if cfg.distill.teacher is not None:  # or the weights of its own file (same geometry)
                    load_teacher_weights(
                        self.distiller.teacher, cfg.distill.teacher, f"{source}.pruning.distill.teacher"
                    )
            attach_gates(self.model, cfg.gates)
            try:  # variant latency reads its table here
                self.controller = PruningController(self.model, cfg)
            except (ValueError, FileNotFoundError) as exc:
                raise ConfigError(f"{source}.pruning.{exc}") from exc
        if options.freeze_cnn_updates < 0:
            raise ConfigError(f"{source}.freeze_cnn_updates: must be >= 0, got {options.freeze_cnn_updates}")
        self.freeze_cnn_updates = options.freeze_cnn_updates
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

    def explicit_options(self) -> SSLOptions:
        """Options that rebuild this module without any file (for config.yaml): the explicit geometry, the
        pruning block, the CNN freezing."""
        return SSLOptions(
            model_config=self.config.to_dict(),
            pruning=None if self.controller is None else self.controller.cfg.to_dict(),
            freeze_cnn_updates=self.freeze_cnn_updates,
        )

    def param_groups(self) -> List[Dict[str, Any]]:
        """The optimizer group of the gates (own lr, no weight decay); empty when dense."""
        return [] if self.controller is None else self.controller.param_groups(self.model)

    @torch.no_grad()
    def reset_teacher(self) -> None:
        """Make the distillation teacher the current weights (without gates): for weights loaded after the
        module was built and before training starts, e.g. by ESPnet's ``--init_param``. A teacher read
        from its own file (``distill.teacher``) stays as it is."""
        if self.distiller is not None and self.distiller.cfg.teacher is None:
            self.distiller.teacher.load_state_dict(ungated_state_dict(self.model))

    def pruning_loss(self, task_loss: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The Lagrangian term and, with a ``distill`` block, the weighted distillation loss of the last
        forward pass's batch, both scaled to ``task_loss``; and their statistics."""
        assert self.controller is not None, "pruning_loss() needs a pruning block"
        term, stats = self.controller(self.model, task_loss)
        if self.distiller is not None:
            if self._distill_inputs is None:
                raise RuntimeError(
                    "pruning_loss(): distillation needs the forward pass of the same batch first"
                )
            distill = self.distiller(*self._distill_inputs)
            self._distill_inputs = None
            scale = stats["task_loss_scale"].to(distill.device)
            term = term + scale * self.distiller.cfg.weight * distill
            stats["loss_distill"] = distill.detach()
        return term, stats

    def cnn_frozen(self) -> bool:
        return self.num_updates < self.freeze_cnn_updates

    def forward(self, waveform: Tensor, lengths: Tensor) -> Wav2Vec2Output:
        """waveform: (B, samples) at 16 kHz, lengths: (B,) valid samples."""
        output = self._forward_model(waveform, lengths)
        if self.distiller is not None:
            self._distill_inputs = (waveform, lengths, output)
        return output

    def _forward_model(self, waveform: Tensor, lengths: Tensor) -> Wav2Vec2Output:
        if not (self.training and self.cnn_frozen()):
            return self.model(waveform, lengths)
        # Detached CNN weights: no gradient reaches them, while the CNN channel gates still learn.
        detached = {
            f"feature_extractor.{name}": p.detach()
            for name, p in weight_parameters(self.model.feature_extractor)
        }
        return torch.func.functional_call(self.model, detached, (waveform, lengths), strict=False)

    def extra_repr(self) -> str:
        state = "dense" if self.controller is None else f"pruning={self.controller.cfg.variant}"
        return f"{state}, freeze_cnn_updates={self.freeze_cnn_updates}"


def find_prunable(model: nn.Module) -> List[Tuple[str, PrunableSSL]]:
    """(qualified name, module) of every PrunableSSL inside an ESPnet model."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PrunableSSL)]


def find_ssl(model: nn.Module, source: str = "model", gated: bool = False) -> Tuple[str, PrunableSSL]:
    """(qualified name, module) of the one pruned_wav2vec2 encoder/frontend of an ESPnet model.

    ``gated``: the one carrying a pruning block. Anything else raises ConfigError naming ``source``
    (e.g. the config file the model was built from).
    """
    found = [(name, m) for name, m in find_prunable(model) if m.controller is not None or not gated]
    if len(found) != 1:
        if gated:
            raise ConfigError(
                f"{source}: expected one pruned_wav2vec2 encoder/frontend with a pruning block, found {len(found)}: "
                "is this the config of a pruning run (not of an already removed model)?"
            )
        raise ConfigError(f"{source}: expected one pruned_wav2vec2 encoder/frontend, found {len(found)}")
    return found[0]
