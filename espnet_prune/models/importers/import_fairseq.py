"""Import fairseq and S3PRL checkpoints of wav2vec2 / HuBERT (pretrained or CTC fine-tuned), and WavLM's.

Reads the checkpoint file itself (no fairseq needed):

- fairseq ``.pt``: ``{"cfg": {"model": ...}, "model": state_dict, ...}`` with ``cfg`` a dict or an
  omegaconf DictConfig, or the older ``{"args": argparse.Namespace, "model": ...}``;
- fine-tuned ``Wav2VecCtc`` / ``HubertCtc``: parameters under ``w2v_encoder.w2v_model.``, the
  pretraining config under ``cfg.model.w2v_args`` (the CTC projection ``w2v_encoder.proj`` is dropped);
- S3PRL converted files: ``{"task_cfg", "model_cfg", "model_weight"}``;
- Microsoft's WavLM ``.pt`` (microsoft/unilm, the files S3PRL loads for WavLM): ``{"cfg": the model config
  itself, a plain dict, "model": state_dict}``, with fairseq's parameter names. Its config names no model;
  its ``relative_position_embedding`` field marks it as WavLM.
"""

from __future__ import annotations

import argparse
import ast
from typing import Any, Dict, List, Mapping, Tuple

from espnet_prune.models.config import Wav2Vec2Config
from espnet_prune.models.importers.common import (
    KeyMap,
    KeyRule,
    PathLike,
    build_model,
    float_field,
    load_torch_file,
    pos_conv_rules,
)
from espnet_prune.models.model import Wav2Vec2Model

_CONV = "feature_extractor.conv_layers.{i}"
_LAYER = "encoder.layers.{i}"
_RULES = (
    KeyRule(_CONV + ".0.{wb}", _CONV + ".conv.{wb}"),
    KeyRule(_CONV + ".2.{wb}", _CONV + ".layer_norm.{wb}"),  # GroupNorm ("default" mode, first layer)
    KeyRule(
        _CONV + ".2.1.{wb}", _CONV + ".layer_norm.{wb}"
    ),  # LayerNorm inside TransposeLast ("layer_norm" mode)
    KeyRule("layer_norm.{wb}", "feature_projection.layer_norm.{wb}"),
    KeyRule("post_extract_proj.{wb}", "feature_projection.projection.{wb}"),
    *pos_conv_rules("encoder.pos_conv.0"),
    KeyRule("encoder.layer_norm.{wb}", "encoder.layer_norm.{wb}"),
    KeyRule(_LAYER + ".self_attn.{proj}_proj.{wb}", _LAYER + ".attention.{proj}_proj.{wb}"),
    KeyRule(_LAYER + ".self_attn_layer_norm.{wb}", _LAYER + ".layer_norm.{wb}"),
    KeyRule(_LAYER + ".fc1.{wb}", _LAYER + ".feed_forward.intermediate_dense.{wb}"),
    KeyRule(_LAYER + ".fc2.{wb}", _LAYER + ".feed_forward.output_dense.{wb}"),
    KeyRule(_LAYER + ".final_layer_norm.{wb}", _LAYER + ".final_layer_norm.{wb}"),
    # WavLM: the gated-relative-position unit, and the bias table its first layer holds
    KeyRule(_LAYER + ".self_attn.grep_linear.{wb}", _LAYER + ".attention.gru_rel_pos_linear.{wb}"),
    KeyRule(_LAYER + ".self_attn.grep_a", _LAYER + ".attention.gru_rel_pos_const"),
    KeyRule("encoder.layers.0.self_attn.relative_attention_bias.weight", "encoder.rel_attn_embed.weight"),
)
# Pretraining heads (wav2vec2 quantizer and contrastive projections, HuBERT label embeddings) and the
# CTC projection of fine-tuned models.
_DROPPED = (
    r"mask_emb$",
    r"quantizer\.",
    r"project_q\.",
    r"project_inp\.",
    r"final_proj\.",
    r"label_embs_concat$",
    r"target_glu\.",
    r"w2v_encoder\.proj\.",
)
KEY_MAP = KeyMap(_RULES, _DROPPED, prefixes=("w2v_encoder.w2v_model.",))

_MODEL_NAMES = {
    "wav2vec2": "wav2vec2",
    "wav2vec_ctc": "wav2vec2",
    "hubert": "hubert",
    "hubert_ctc": "hubert",
    "wavlm": "wavlm",
}
_FINETUNED_NAMES = ("wav2vec_ctc", "hubert_ctc")
# fairseq's defaults (Wav2Vec2Config / HubertConfig) for fields an older config may lack.
_DEFAULTS: Dict[str, Any] = {
    "extractor_mode": "default",
    "conv_bias": False,
    "layer_norm_first": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "pos_conv_depth": 1,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
}
# WavLMConfig's defaults (microsoft/unilm wavlm/WavLM.py) for its own fields.
_WAVLM_DEFAULTS: Dict[str, Any] = {
    "relative_position_embedding": False,
    "num_buckets": 320,
    "max_distance": 1280,
    "gru_rel_pos": False,
}
_GEOMETRY = (
    "conv_feature_layers",
    "encoder_embed_dim",
    "encoder_attention_heads",
    "encoder_ffn_embed_dim",
    "encoder_layers",
)
# Fine-tuning overrides these in the pretraining config (fairseq's Wav2VecEncoder arg_overrides).
_FINETUNING_OVERRIDES = {
    "dropout": "dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "dropout_input": "dropout_input",
    "layerdrop": "encoder_layerdrop",
}


def _plain(obj: Any) -> Any:
    """A dict for an argparse.Namespace or an omegaconf container (recursively), else ``obj``."""
    if isinstance(obj, argparse.Namespace):
        return {key: _plain(value) for key, value in vars(obj).items()}
    if type(obj).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(obj, resolve=False)
    return obj


def _literal(node: ast.AST, spec: str, source: PathLike) -> Any:
    """Evaluate the only syntax conv_feature_layers uses: int literals, lists, tuples, list + list, list * int."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(item, spec, source) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _literal(node.left, spec, source), _literal(node.right, spec, source)
        if isinstance(node.op, ast.Add) and isinstance(left, list) and isinstance(right, list):
            return left + right
        if isinstance(node.op, ast.Mult) and {type(left), type(right)} == {list, int}:
            return left * right
    raise ValueError(
        f"{source}: conv_feature_layers {spec!r} is not a list of (channels, kernel, stride) tuples"
    )


def parse_conv_feature_layers(spec: Any, source: PathLike) -> List[Tuple[int, int, int]]:
    """fairseq's conv_feature_layers string, e.g. "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    parsed without eval."""
    if isinstance(spec, str):
        try:
            tree = ast.parse(spec.strip(), mode="eval")
        except SyntaxError:
            raise ValueError(f"{source}: conv_feature_layers {spec!r} is not valid Python syntax") from None
        spec = _literal(tree.body, spec, source)
    if not isinstance(spec, (list, tuple)) or not spec:
        raise ValueError(f"{source}: conv_feature_layers {spec!r} is not a non-empty list")
    layers = []
    for layer in spec:
        if not isinstance(layer, (list, tuple)) or len(layer) != 3 or any(type(v) is not int for v in layer):
            raise ValueError(
                f"{source}: conv_feature_layers entry {layer!r} is not (channels, kernel, stride)"
            )
        layers.append(tuple(layer))
    return layers


def _model_name(model_cfg: Mapping[str, Any], source: PathLike) -> str:
    """fairseq's model name; a WavLM config has none, and its relative_position_embedding field marks it."""
    unnamed = "wavlm" if "relative_position_embedding" in model_cfg else "wav2vec2"
    name = model_cfg.get("_name") or model_cfg.get("arch") or unnamed
    if name not in _MODEL_NAMES:
        raise ValueError(f"{source}: unsupported model _name {name!r}; supported: {sorted(_MODEL_NAMES)}")
    return name


def _pretraining_model_cfg(model_cfg: Mapping[str, Any], source: PathLike) -> Dict[str, Any]:
    """The encoder's own config: ``w2v_args`` of a fine-tuned model with its dropout overrides applied."""
    if _model_name(model_cfg, source) not in _FINETUNED_NAMES:
        return dict(model_cfg)
    w2v_args = _plain(model_cfg.get("w2v_args"))
    if not isinstance(w2v_args, Mapping):
        raise ValueError(
            f"{source}: fine-tuned checkpoint without the pretraining config (cfg.model.w2v_args)"
        )
    inner = dict(_plain(w2v_args.get("model", w2v_args)))  # a full cfg (new) or flat args (old)
    _model_name(inner, source)  # e.g. data2vec_audio is fine-tuned as wav2vec_ctc too
    for outer_key, inner_key in _FINETUNING_OVERRIDES.items():
        if outer_key in model_cfg:
            inner[inner_key] = model_cfg[outer_key]
    return inner


def convert_config(model_cfg: Mapping[str, Any], source: PathLike, normalize: bool = False) -> Wav2Vec2Config:
    """Our config from fairseq's model config (pretraining or fine-tuned), rejecting unsupported variants;
    ``normalize`` is the task's waveform normalisation."""
    model_type = _MODEL_NAMES[_model_name(model_cfg, source)]
    own_defaults = _WAVLM_DEFAULTS if model_type == "wavlm" else {}
    cfg = {**_DEFAULTS, **own_defaults, **_pretraining_model_cfg(model_cfg, source)}
    missing = [key for key in _GEOMETRY if cfg.get(key) is None]
    if missing:
        raise ValueError(f"{source}: model config has no {missing[0]!r}")
    unsupported = {"activation_fn": "gelu", "layer_type": "transformer", "pos_conv_depth": 1}
    if model_type == "wavlm":
        unsupported.update(relative_position_embedding=True, gru_rel_pos=True)
    for key, supported in unsupported.items():
        if cfg[key] != supported:
            raise ValueError(f"{source}: {key}={cfg[key]!r} is not supported (only {supported!r})")
    extractor_modes = {"default": "group_norm", "layer_norm": "layer_norm"}
    if cfg["extractor_mode"] not in extractor_modes:
        raise ValueError(
            f"{source}: extractor_mode={cfg['extractor_mode']!r} is not one of {sorted(extractor_modes)}"
        )
    embed_dim, heads = int(cfg["encoder_embed_dim"]), int(cfg["encoder_attention_heads"])
    if heads < 1 or embed_dim % heads:
        raise ValueError(
            f"{source}: encoder_attention_heads={heads} does not divide encoder_embed_dim={embed_dim}"
        )
    layers = int(cfg["encoder_layers"])
    params = dict(
        conv_layers=parse_conv_feature_layers(cfg["conv_feature_layers"], source),
        extractor_mode=extractor_modes[cfg["extractor_mode"]],
        conv_bias=bool(cfg["conv_bias"]),
        embed_dim=embed_dim,
        num_heads=[heads] * layers,
        head_dim=embed_dim // heads,
        ffn_dims=[int(cfg["encoder_ffn_embed_dim"])] * layers,
        layer_norm_first=bool(cfg["layer_norm_first"]),
        pos_conv_kernel=int(cfg["conv_pos"]),
        pos_conv_groups=int(cfg["conv_pos_groups"]),
        dropout=float_field(cfg["dropout"], "dropout", source),
        attention_dropout=float_field(cfg["attention_dropout"], "attention_dropout", source),
        activation_dropout=float_field(cfg["activation_dropout"], "activation_dropout", source),
        projection_dropout=float_field(cfg["dropout_input"], "dropout_input", source),
        layer_drop=float_field(cfg["encoder_layerdrop"], "encoder_layerdrop", source),
        model_type=model_type,
        normalize_waveform=bool(normalize),
    )
    if model_type == "wavlm":
        params.update(num_buckets=int(cfg["num_buckets"]), max_distance=int(cfg["max_distance"]))
    return Wav2Vec2Config.from_dict(params, source=str(source))


def is_fairseq_checkpoint(checkpoint: Any) -> bool:
    return (
        isinstance(checkpoint, Mapping)
        and "model" in checkpoint
        and ("cfg" in checkpoint or "args" in checkpoint)
    )


def is_s3prl_checkpoint(checkpoint: Any) -> bool:
    return isinstance(checkpoint, Mapping) and "model_cfg" in checkpoint and "model_weight" in checkpoint


def _task_normalize(task_cfg: Any, model_cfg: Mapping[str, Any]) -> bool:
    """The task's waveform normalisation; a fine-tuning task without the key inherits the pretraining one."""
    if isinstance(task_cfg, Mapping) and "normalize" in task_cfg:
        return bool(task_cfg["normalize"])
    w2v_args = _plain(model_cfg.get("w2v_args"))
    inner_task = _plain(w2v_args.get("task")) if isinstance(w2v_args, Mapping) else None
    return bool(inner_task.get("normalize", False)) if isinstance(inner_task, Mapping) else False


def import_fairseq_checkpoint(
    checkpoint: Mapping[str, Any], source: PathLike
) -> Tuple[Wav2Vec2Model, Wav2Vec2Config]:
    """Build our model from an already loaded fairseq, S3PRL or WavLM checkpoint dict (``source`` names it in
    errors)."""
    if is_s3prl_checkpoint(checkpoint):
        model_cfg, state_dict = _plain(checkpoint["model_cfg"]), checkpoint["model_weight"]
        task_cfg = _plain(checkpoint.get("task_cfg"))
    elif is_fairseq_checkpoint(checkpoint):
        cfg = _plain(checkpoint.get("cfg"))
        if isinstance(cfg, Mapping):
            if "model" in cfg:
                model_cfg, task_cfg = cfg["model"], cfg.get("task")
            else:  # WavLM: one flat cfg for the model and its input normalisation
                model_cfg = task_cfg = cfg if "encoder_layers" in cfg else None
        else:  # old checkpoints: one flat Namespace for the task and the model
            model_cfg = task_cfg = _plain(checkpoint.get("args"))
        state_dict = checkpoint["model"]
    else:
        raise ValueError(
            f"{source}: not a fairseq checkpoint (no 'model' with 'cfg'/'args') nor an S3PRL one"
        )
    if not isinstance(model_cfg, Mapping):
        raise ValueError(f"{source}: checkpoint has no model config (cfg.model, a WavLM cfg, or args)")
    normalize = _task_normalize(task_cfg, model_cfg)
    return build_model(convert_config(model_cfg, source, normalize), state_dict, KEY_MAP, source)


def load_fairseq_checkpoint(
    path: PathLike, trust_checkpoint: bool = False
) -> Tuple[Wav2Vec2Model, Wav2Vec2Config]:
    """Load a fairseq or S3PRL wav2vec2 / HuBERT checkpoint file, or a WavLM one, into our model (eval mode)
    and config."""
    return import_fairseq_checkpoint(load_torch_file(path, trust_checkpoint), path)
