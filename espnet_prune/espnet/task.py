"""``PrunedASRTask``: ESPnet's ASRTask with the plugin's names registered and pruning-aware optimizers.

Importing this module registers, in ESPnet's own class choices, the encoder and frontend
``pruned_wav2vec2`` and the model ``pruned_espnet``. It happens at import time so that every process that
imports the task (DDP workers, inference building from config.yaml) sees the names.
"""

from __future__ import annotations

import argparse
import logging
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.tasks import asr as espnet_asr
from espnet2.tasks.abs_task import optim_classes
from espnet2.tasks.asr import ASRTask
from espnet2.train.abs_espnet_model import AbsESPnetModel
from espnet2.train.class_choices import ClassChoices

from espnet_prune.espnet.encoder import PrunedWav2Vec2Encoder
from espnet_prune.espnet.frontend import PrunedWav2Vec2Frontend
from espnet_prune.espnet.model import PrunedESPnetASRModel
from espnet_prune.espnet.ssl import ConfigError, find_prunable

NAME = "pruned_wav2vec2"
MODEL_NAME = "pruned_espnet"


def _register(choices: ClassChoices, name: str, cls: type) -> None:
    assert issubclass(cls, choices.base_type), (cls, choices.base_type)
    choices.classes[name] = cls


_register(espnet_asr.frontend_choices, NAME, PrunedWav2Vec2Frontend)
_register(espnet_asr.encoder_choices, NAME, PrunedWav2Vec2Encoder)
_register(espnet_asr.model_choices, MODEL_NAME, PrunedESPnetASRModel)


def _ssl_confs(args: argparse.Namespace) -> List[Tuple[str, Dict[str, Any]]]:
    """("encoder_conf" | "frontend_conf", conf) for every pruned_wav2vec2 the args will build."""
    out = []
    if getattr(args, "encoder", None) == NAME:
        out.append(("encoder_conf", args.encoder_conf))
    if getattr(args, "input_size", None) is None and getattr(args, "frontend", None) == NAME:
        out.append(("frontend_conf", args.frontend_conf))
    return out


def _grouped_optimizer(
    model: torch.nn.Module, optim_class: type, optim_conf: Dict[str, Any], groups: List[Dict[str, Any]]
) -> torch.optim.Optimizer:
    """One optimizer: ``optim_conf`` for the model's parameters, and each extra group's own settings."""
    special = {id(p) for group in groups for p in group["params"]}
    optimizer = optim_class([p for p in model.parameters() if id(p) not in special], **optim_conf)
    for group in groups:
        optimizer.add_param_group({**optim_conf, **group})
    return optimizer


class PrunedASRTask(ASRTask):
    """ASRTask for models with a ``pruned_wav2vec2`` encoder or frontend.

    - A ``pruning`` block selects ``model: pruned_espnet`` by itself (when ``model`` is left at ``espnet``).
    - The optimizer gets two kinds of groups: the model (``optim_conf``) and the gates (``pruning.gate_lr``,
      no weight decay); its step hook counts updates for the pruning controller (the lambdas are not
      optimizer parameters: the controller updates them by dual ascent).
    - The SSL block of config.yaml is written as an explicit ``model_config``, so inference and mask
      removal rebuild the model without the original checkpoint.
    - ``build_model_from_file`` checks that the weights match the config exactly.
    """

    @classmethod
    def check_required_command_args(cls, args: argparse.Namespace) -> None:
        """Training-time checks of settings that ESPnet would accept but that break a pruning run."""
        super().check_required_command_args(args)
        confs = _ssl_confs(args)
        if getattr(args, "encoder", None) == NAME and args.input_size != 1:
            raise ConfigError(
                f"input_size: the pruned_wav2vec2 encoder reads raw waveforms; set `input_size: 1` and "
                f"`frontend: null` (got input_size {args.input_size})"
            )
        if getattr(args, "encoder", None) == NAME and args.normalize is not None:
            raise ConfigError(
                f"normalize: the pruned_wav2vec2 encoder reads raw waveforms; set `normalize: null` (got "
                f"{args.normalize!r}); use encoder_conf.normalize_waveform for per-utterance normalisation"
            )
        pruning = any(conf.get("pruning") is not None for _, conf in confs)
        nbest = args.keep_nbest_models if isinstance(args.keep_nbest_models, list) else [args.keep_nbest_models]
        if pruning and not args.collect_stats and max(nbest) > 1:
            raise ConfigError(
                f"keep_nbest_models: {args.keep_nbest_models} would average gated checkpoints, whose averaged "
                "log_alpha give masks no checkpoint had; use `keep_nbest_models: 1` and remove the masks of one "
                "checkpoint (e.g. latest.pth)"
            )

    @classmethod
    def build_model(cls, args: argparse.Namespace) -> ESPnetASRModel:
        if any(conf.get("pruning") is not None for _, conf in _ssl_confs(args)):
            model_name = getattr(args, "model", "espnet")
            if model_name == "espnet":
                logging.info(f"A pruning block is present: using model {MODEL_NAME!r}")
                args.model = MODEL_NAME
            elif model_name != MODEL_NAME:
                raise ConfigError(f"model: a pruning block needs {MODEL_NAME!r} (or 'espnet'), got {model_name!r}")
        model = super().build_model(args)
        owners = {"encoder_conf": model.encoder, "frontend_conf": model.frontend}
        for key, _ in _ssl_confs(args):
            setattr(args, key, owners[key].explicit_conf())
        return model

    @classmethod
    def build_optimizers(cls, args: argparse.Namespace, model: torch.nn.Module) -> List[torch.optim.Optimizer]:
        """ESPnet's optimizer, with the gates in their own group, and hooked so that every update it makes
        advances the pruning controller (target warm-up, lambdas' dual ascent) and CNN freezing."""
        prunable = [ssl for _, ssl in find_prunable(model)]
        groups = [group for ssl in prunable for group in ssl.param_groups()]
        if not groups:
            optimizers = super().build_optimizers(args, model)
        else:
            optimizers = [cls._grouped_optimizer(args, model, groups)]
        for ssl in prunable:
            ssl.attach(optimizers[0])
        return optimizers

    @staticmethod
    def _grouped_optimizer(
        args: argparse.Namespace, model: torch.nn.Module, groups: List[Dict[str, Any]]
    ) -> torch.optim.Optimizer:
        if args.sharded_ddp:
            raise ConfigError("sharded_ddp: not supported with a pruning block (its optimizer ignores param groups)")
        optim_class = optim_classes.get(args.optim)
        if optim_class is None:
            raise ConfigError(f"optim: must be one of {list(optim_classes)}, got {args.optim!r}")
        if args.exclude_weight_decay:
            # ESPnet's configure_optimizer groups parameters by their ``_optim`` attribute.
            from espnet2.optimizers.optim_groups import configure_optimizer

            for group in groups:
                for p in group["params"]:
                    p._optim = {k: v for k, v in group.items() if k != "params"}
            return configure_optimizer(model, optim_class, args.optim_conf, args.exclude_weight_decay_conf)
        return _grouped_optimizer(model, optim_class, args.optim_conf, groups)

    @classmethod
    def build_model_from_file(
        cls,
        config_file: Optional[Union[Path, str]] = None,
        model_file: Optional[Union[Path, str]] = None,
        device: str = "cpu",
    ) -> Tuple[AbsESPnetModel, argparse.Namespace]:
        """ESPnet's builder, but loading the weights strictly: a config that does not describe the weights
        (e.g. a removed model's weights with the gated config) fails here instead of decoding with random
        layers (ESPnet loads with ``strict=False``)."""
        if config_file is None:
            if model_file is None:
                raise ConfigError("build_model_from_file: give a config file or a model file")
            config_file = Path(model_file).parent / "config.yaml"
        model, args = super().build_model_from_file(config_file, None, device)
        if model_file is not None:
            try:
                state = torch.load(model_file, map_location=device, weights_only=True)
            except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
                raise ConfigError(f"{model_file}: not a loadable PyTorch checkpoint: {exc}") from exc
            check_state_dict(model, state, str(model_file), str(config_file))
            model.load_state_dict(state)
        return model, args


def check_state_dict(model: torch.nn.Module, state: Dict[str, torch.Tensor], model_file: str, config_file: str) -> None:
    """Raise ConfigError naming the keys when ``state`` does not fit ``model`` exactly (keys and shapes)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if not (missing or unexpected or shapes):
        return

    def show(keys: List[str]) -> str:
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    problems = []
    if missing:
        problems.append(f"{len(missing)} missing from the weights: {show(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} not in the config's model: {show(unexpected)}")
    if shapes:
        problems.append(
            f"{len(shapes)} with other shapes: "
            + show([f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in shapes])
        )
    raise ConfigError(
        f"{model_file} does not match the model that {config_file} describes: " + "; ".join(problems)
        + ". Use the config.yaml written next to these weights (remove_masks writes one for the removed model)."
    )
