"""Stock ESPnet's ``ASRTask`` taught about ``pruned_wav2vec2``: names registered, pruning-aware behaviour.

ESPnet has no plugin mechanism, so importing this module (which the import hook of
``espnet_prune/_espnet_hook.py`` does as soon as anyone imports ``espnet2.tasks.asr``) changes ESPnet's
own ASR task in place:

- the encoder and frontend ``pruned_wav2vec2`` and the model ``pruned_espnet`` join ESPnet's class
  choices, so ``python -m espnet2.bin.asr_train``, ``Speech2Text`` and DDP workers know them;
- the task's class methods gain the pruning behaviour (see ``_PruningTask``). Every addition applies only
  when the config names ``pruned_wav2vec2``; any other ESPnet model goes through ESPnet's code unchanged;
- ``--init_param`` files are read by the safe loader first, and must cover an SSL module completely; so is
  ``checkpoint.pth`` before ESPnet's trainer resumes from it.

``PrunedASRTask`` is ESPnet's ``ASRTask`` itself, kept as the name our tools use.
"""

from __future__ import annotations

import argparse
import datetime
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy
import torch
import yaml
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.tasks import abs_task
from espnet2.tasks import asr as espnet_asr
from espnet2.tasks.abs_task import optim_classes
from espnet2.tasks.asr import ASRTask
from espnet2.train.abs_espnet_model import AbsESPnetModel
from espnet2.train.class_choices import ClassChoices
from espnet2.train.trainer import Trainer

try:
    from numpy._core.multiarray import scalar as numpy_scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import scalar as numpy_scalar

from espnet_prune.checkpoints import check_keys, load_checkpoint, load_state_dict
from espnet_prune.espnet.encoder import PrunedWav2Vec2Encoder
from espnet_prune.espnet.frontend import PrunedWav2Vec2Frontend
from espnet_prune.espnet.model import PrunedESPnetASRModel
from espnet_prune.espnet.ssl import ConfigError, PrunableSSL, find_prunable
from espnet_prune.pruning.gating import ungated_state_dict

NAME = "pruned_wav2vec2"
# What ESPnet's trainer pickles into checkpoint.pth besides tensors and plain data: the reporter's numpy
# scalars (rebuilt from a dtype and bytes) and timedeltas; data only, nothing that runs code.
RESUME_GLOBALS: List[Any] = [
    numpy_scalar,
    numpy.dtype,
    *(getattr(numpy.dtypes, name) for name in dir(numpy.dtypes) if name.endswith("DType")),
    datetime.timedelta,
]
MODEL_NAME = "pruned_espnet"


def _register(choices: ClassChoices, name: str, cls: type) -> None:
    assert issubclass(cls, choices.base_type), (cls, choices.base_type)
    choices.classes[name] = cls


def _ssl_confs(args: argparse.Namespace) -> List[Tuple[str, Dict[str, Any]]]:
    """("encoder_conf" | "frontend_conf", conf) for every pruned_wav2vec2 the args will build."""
    out = []
    if getattr(args, "encoder", None) == NAME:
        out.append(("encoder_conf", args.encoder_conf))
    if getattr(args, "input_size", None) is None and getattr(args, "frontend", None) == NAME:
        out.append(("frontend_conf", args.frontend_conf))
    return out


def _has_pruning(args: argparse.Namespace) -> bool:
    return any(conf.get("pruning") is not None for _, conf in _ssl_confs(args))


def _grouped_optimizer(
    model: torch.nn.Module, optim_class: type, optim_conf: Dict[str, Any], groups: List[Dict[str, Any]]
) -> torch.optim.Optimizer:
    """One optimizer: ``optim_conf`` for the model's parameters, and each extra group's own settings."""
    special = {id(p) for group in groups for p in group["params"]}
    optimizer = optim_class([p for p in model.parameters() if id(p) not in special], **optim_conf)
    for group in groups:
        optimizer.add_param_group({**optim_conf, **group})
    return optimizer


def _optimizer_with_gate_groups(
    args: argparse.Namespace, model: torch.nn.Module, groups: List[Dict[str, Any]]
) -> torch.optim.Optimizer:
    if args.sharded_ddp:
        raise ConfigError(
            "sharded_ddp: not supported with a pruning block (its optimizer ignores param groups)"
        )
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


def _names_pruned_wav2vec2(config_file: Path) -> bool:
    """Whether a training config builds a pruned_wav2vec2 (read without building anything)."""
    try:
        with config_file.open(encoding="utf-8") as f:
            conf = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return False  # ESPnet's own builder reports the file
    return isinstance(conf, dict) and NAME in (conf.get("encoder"), conf.get("frontend"))


class _PruningTask:
    """The class methods installed on ESPnet's ``ASRTask``; ``ORIGINAL`` holds ESPnet's versions.

    - ``check_required_command_args``: refuses settings ESPnet accepts but that break a pruning run.
    - ``build_model``: a ``pruning`` block selects ``model: pruned_espnet`` (when ``model`` is left at
      ``espnet``); the SSL block of config.yaml is rewritten as an explicit ``model_config``, so inference
      and mask removal rebuild the model without the original checkpoint.
    - ``build_optimizers``: the gates get their own group (``pruning.gate_lr``, no weight decay); the step
      hook counts real updates for the controller (target warm-up, dual ascent) and CNN freezing.
    - ``build_model_from_file``: weights read by the safe loader and checked strictly against the config
      (ESPnet loads with ``strict=False``, which silently leaves mismatched layers random).
    """

    ORIGINAL: Dict[str, Callable[..., Any]] = {}

    @staticmethod
    def check_required_command_args(cls, args: argparse.Namespace) -> None:
        _PruningTask.ORIGINAL["check_required_command_args"](cls, args)
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
        nbest = (
            args.keep_nbest_models if isinstance(args.keep_nbest_models, list) else [args.keep_nbest_models]
        )
        if _has_pruning(args) and not args.collect_stats and max(nbest) > 1:
            raise ConfigError(
                f"keep_nbest_models: {args.keep_nbest_models} would average gated checkpoints, whose averaged "
                "log_alpha give masks no checkpoint had; use `keep_nbest_models: 1` and remove the masks of one "
                "checkpoint (e.g. latest.pth)"
            )

    @staticmethod
    def build_model(cls, args: argparse.Namespace) -> ESPnetASRModel:
        if _has_pruning(args):
            model_name = getattr(args, "model", "espnet")
            if model_name == "espnet":
                logging.info(f"A pruning block is present: using model {MODEL_NAME!r}")
                args.model = MODEL_NAME
            elif model_name != MODEL_NAME:
                raise ConfigError(
                    f"model: a pruning block needs {MODEL_NAME!r} (or 'espnet'), got {model_name!r}"
                )
        model = _PruningTask.ORIGINAL["build_model"](cls, args)
        owners = {"encoder_conf": model.encoder, "frontend_conf": model.frontend}
        for key, _ in _ssl_confs(args):
            setattr(args, key, owners[key].explicit_conf())
        return model

    @staticmethod
    def build_optimizers(
        cls, args: argparse.Namespace, model: torch.nn.Module
    ) -> List[torch.optim.Optimizer]:
        prunable = [ssl for _, ssl in find_prunable(model)]
        groups = [group for ssl in prunable for group in ssl.param_groups()]
        if groups:
            optimizers = [_optimizer_with_gate_groups(args, model, groups)]
        else:
            optimizers = _PruningTask.ORIGINAL["build_optimizers"](cls, args, model)
        for ssl in prunable:
            ssl.attach(optimizers[0])
        return optimizers

    @staticmethod
    def build_model_from_file(
        cls,
        config_file: Optional[Union[Path, str]] = None,
        model_file: Optional[Union[Path, str]] = None,
        device: str = "cpu",
    ) -> Tuple[AbsESPnetModel, argparse.Namespace]:
        original = _PruningTask.ORIGINAL["build_model_from_file"]
        if config_file is None:
            if model_file is None:
                raise ConfigError("build_model_from_file: give a config file or a model file")
            config_file = Path(model_file).parent / "config.yaml"
        if not _names_pruned_wav2vec2(Path(config_file)):
            return original(cls, config_file, model_file, device)
        model, args = original(cls, config_file, None, device)
        if model_file is not None:
            load_weights(model, model_file, config_file)
        return model, args


def _model_weights(ssl: PrunableSSL, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The entries of ``state`` (keys relative to ``ssl``) that are not ``ssl``'s pruning state (gates,
    controller, distillation maps), which a dense model to start pruning from does not have."""
    weights = {f"model.{k}" for k in ungated_state_dict(ssl.model)}
    pruning_state = set(ssl.state_dict()) - weights
    return {k: v for k, v in state.items() if k not in pruning_state}


def load_weights(
    model: torch.nn.Module,
    model_file: Union[Path, str],
    config_file: Union[Path, str],
    trust_checkpoint: bool = False,
) -> None:
    """Load ``model_file`` into ``model`` through the safe loader; CheckpointError naming both files and the keys
    unless the weights fit the model that ``config_file`` describes exactly."""
    state = load_state_dict(model_file, trust=trust_checkpoint)
    check_keys(
        model.state_dict(),
        state,
        str(model_file),
        f"the model that {config_file} describes "
        "(use the config.yaml written next to these weights; mask removal writes one for the removed model)",
    )
    model.load_state_dict(state)


def _checked_load_pretrained_model(load: Callable[..., None]) -> Callable[..., None]:
    """ESPnet's ``--init_param`` loader, preceded by the safe loader and a check of the SSL modules.

    The file is read with ``weights_only=True`` first (ESPnet itself unpickles it freely), and an SSL module
    that the file initialises must be initialised completely: a missing or mis-shaped gate or layer would
    otherwise keep its random initial value without a word (the pruning state, gates and controller, may be
    absent: a pruning run starts from a dense model). A distillation teacher then becomes the
    loaded weights, the model training starts from.
    """

    def checked(
        init_param: str, model: torch.nn.Module, ignore_init_mismatch: bool, map_location: str = "cpu"
    ):
        path, src_key, dst_key, excludes = (init_param.split(":", 4) + [None] * 3)[:4]
        state = load_state_dict(path)
        for exclude in (excludes or "").split(","):
            if exclude:
                state = {k: v for k, v in state.items() if not k.startswith(exclude)}
        if src_key:
            state = {k[len(src_key) + 1 :]: v for k, v in state.items() if k.startswith(src_key)}
        target = model.get_submodule(dst_key) if dst_key else model
        for name, ssl in find_prunable(target):
            prefix = f"{name}."
            given = _model_weights(
                ssl, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
            if given and not ignore_init_mismatch:
                expected = _model_weights(ssl, ssl.state_dict())
                check_keys(expected, given, f"--init_param {init_param}", f"{prefix[:-1]} of the model")
        load(init_param, model, ignore_init_mismatch, map_location)
        for _, ssl in find_prunable(target):
            ssl.reset_teacher()  # distillation's teacher is the starting model: these weights

    return checked


def _checked_resume(resume: Callable[..., None]) -> Callable[..., None]:
    """ESPnet's ``Trainer.resume`` (stage 11 rerun, ``--resume true``), preceded by the safe loader: ESPnet
    unpickles ``checkpoint.pth`` with ``weights_only=False``, so a crafted file there could run code."""

    def checked(checkpoint: Union[str, Path], *args: Any, **kwargs: Any) -> None:
        load_checkpoint(checkpoint, safe_globals=RESUME_GLOBALS)
        resume(checkpoint, *args, **kwargs)

    return checked


def install(task: type = ASRTask) -> None:
    """Register the names and install the behaviours on ``task`` (once per interpreter)."""
    _register(espnet_asr.frontend_choices, NAME, PrunedWav2Vec2Frontend)
    _register(espnet_asr.encoder_choices, NAME, PrunedWav2Vec2Encoder)
    _register(espnet_asr.model_choices, MODEL_NAME, PrunedESPnetASRModel)
    if _PruningTask.ORIGINAL:
        return
    for name in ("check_required_command_args", "build_model", "build_optimizers", "build_model_from_file"):
        _PruningTask.ORIGINAL[name] = getattr(task, name).__func__
        setattr(task, name, classmethod(getattr(_PruningTask, name)))
    abs_task.load_pretrained_model = _checked_load_pretrained_model(abs_task.load_pretrained_model)
    Trainer.resume = staticmethod(_checked_resume(Trainer.resume))


install()
PrunedASRTask = ASRTask
