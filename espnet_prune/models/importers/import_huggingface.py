"""Import Hugging Face ``Wav2Vec2*`` / ``Hubert*`` / ``WavLM*`` model directories (config.json + weights).

Reads ``model.safetensors`` or ``pytorch_model.bin`` (or their sharded ``*.index.json`` forms) without
instantiating a transformers model. Task heads (``lm_head``, ``projector``, ``classifier``, ...) and
pretraining-only parameters are dropped; the ``wav2vec2.`` / ``hubert.`` / ``wavlm.`` prefix of ``*For*``
models is stripped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

from torch import Tensor

from espnet_prune.checkpoints import CheckpointError, load_state_dict
from espnet_prune.models.config import Wav2Vec2Config
from espnet_prune.models.importers.common import (
    POS_CONV,
    SAME_NAME,
    KeyMap,
    KeyRule,
    PathLike,
    build_model,
    float_field,
    pos_conv_rules,
)
from espnet_prune.models.model import Wav2Vec2Model

logger = logging.getLogger(__name__)

# Our parameter names are Hugging Face's, except the weight norm of checkpoints saved before torch's
# parametrizations (weight_g / weight_v) and WavLM's relative position bias table, which its first layer holds.
_RULES = (
    *pos_conv_rules(POS_CONV),
    KeyRule("encoder.layers.0.attention.rel_attn_embed.weight", "encoder.rel_attn_embed.weight"),
    SAME_NAME,
)
# Heads of *ForCTC / *ForSequenceClassification / *ForAudioFrameClassification / *ForXVector /
# Wav2Vec2ForPreTraining, and the SpecAugment mask embedding.
_DROPPED = (
    r"masked_spec_embed$",
    r"lm_head\.",
    r"projector\.",
    r"classifier\.",
    r"layer_weights$",
    r"tdnn\.",
    r"feature_extractor\.(?!conv_layers\.)",  # x-vector's frame-level extractor, not the CNN
    r"objective\.",
    r"quantizer\.",
    r"project_hid\.",
    r"project_q\.",
)
KEY_MAP = KeyMap(_RULES, _DROPPED, prefixes=("wav2vec2.", "hubert.", "wavlm."))

_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm")
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _require(hf_config: Mapping[str, Any], key: str, source: PathLike) -> Any:
    if hf_config.get(key) is None:
        raise ValueError(f"{source}: config has no {key!r}")
    return hf_config[key]


def convert_config(hf_config: Mapping[str, Any], source: PathLike) -> Wav2Vec2Config:
    """Our config from a Hugging Face Wav2Vec2Config / HubertConfig / WavLMConfig dict, rejecting unsupported
    variants."""
    model_type = hf_config.get("model_type")
    if model_type not in _MODEL_TYPES:
        raise ValueError(f"{source}: model_type={model_type!r} is not supported (only {list(_MODEL_TYPES)})")
    unsupported = {
        "hidden_act": "gelu",
        "feat_extract_activation": "gelu",
        "feat_proj_layer_norm": True,  # HuBERT only: our feature projection always normalises
        "conv_pos_batch_norm": False,
        "add_adapter": False,
        "adapter_attn_dim": None,
    }
    for key, supported in unsupported.items():
        if key in hf_config and hf_config[key] != supported:
            raise ValueError(f"{source}: {key}={hf_config[key]!r} is not supported (only {supported!r})")
    norms = {"group": "group_norm", "layer": "layer_norm"}
    feat_extract_norm = _require(hf_config, "feat_extract_norm", source)
    if feat_extract_norm not in norms:
        raise ValueError(f"{source}: feat_extract_norm={feat_extract_norm!r} is not one of {sorted(norms)}")
    conv_dim = _require(hf_config, "conv_dim", source)
    conv_kernel = _require(hf_config, "conv_kernel", source)
    conv_stride = _require(hf_config, "conv_stride", source)
    if not len(conv_dim) == len(conv_kernel) == len(conv_stride):
        raise ValueError(f"{source}: conv_dim, conv_kernel and conv_stride differ in length")
    hidden_size = int(_require(hf_config, "hidden_size", source))
    heads = int(_require(hf_config, "num_attention_heads", source))
    if heads < 1 or hidden_size % heads:
        raise ValueError(f"{source}: num_attention_heads={heads} does not divide hidden_size={hidden_size}")
    layers = int(_require(hf_config, "num_hidden_layers", source))
    eps = float(hf_config.get("layer_norm_eps", 1e-5))
    if eps != 1e-5:
        logger.warning(
            "%s: layer_norm_eps=%g; transformers keeps 1e-5 in the CNN norms, we use %g", source, eps, eps
        )
    params = dict(
        conv_layers=list(zip(conv_dim, conv_kernel, conv_stride)),
        extractor_mode=norms[feat_extract_norm],
        conv_bias=bool(hf_config.get("conv_bias", False)),
        embed_dim=hidden_size,
        num_heads=[heads] * layers,
        head_dim=hidden_size // heads,
        ffn_dims=[int(_require(hf_config, "intermediate_size", source))] * layers,
        layer_norm_first=bool(hf_config.get("do_stable_layer_norm", False)),
        pos_conv_kernel=int(_require(hf_config, "num_conv_pos_embeddings", source)),
        pos_conv_groups=int(_require(hf_config, "num_conv_pos_embedding_groups", source)),
        layer_norm_eps=eps,
        dropout=float_field(hf_config.get("hidden_dropout"), "hidden_dropout", source),
        attention_dropout=float_field(hf_config.get("attention_dropout"), "attention_dropout", source),
        activation_dropout=float_field(hf_config.get("activation_dropout"), "activation_dropout", source),
        projection_dropout=float_field(hf_config.get("feat_proj_dropout"), "feat_proj_dropout", source),
        layer_drop=float_field(hf_config.get("layerdrop"), "layerdrop", source),
        model_type=model_type,
    )
    if model_type == "wavlm":
        params.update(
            num_buckets=int(_require(hf_config, "num_buckets", source)),
            max_distance=int(_require(hf_config, "max_bucket_distance", source)),
        )
    return Wav2Vec2Config.from_dict(params, source=str(source))


def _read_weight_file(path: Path) -> Dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    return load_state_dict(path)


def read_state_dict(directory: PathLike) -> Dict[str, Tensor]:
    """The weights of a Hugging Face model directory, single-file or sharded (safetensors preferred)."""
    directory = Path(directory)
    for name in _WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return _read_weight_file(path)
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        state_dict: Dict[str, Tensor] = {}
        for shard in shards:
            if not (directory / shard).is_file():
                raise FileNotFoundError(f"{directory / shard}: shard listed in {path} is missing")
            state_dict.update(_read_weight_file(directory / shard))
        return state_dict
    raise FileNotFoundError(f"{directory}: no weights (looked for {', '.join(_WEIGHT_FILES)})")


def load_huggingface_checkpoint(directory: PathLike) -> Tuple[Wav2Vec2Model, Wav2Vec2Config]:
    """Load a local Hugging Face wav2vec2 / HuBERT / WavLM model directory into our model (eval mode) and
    config."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no such file (expected a Hugging Face model directory)")
    try:
        hf_config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_path}: not valid JSON ({exc})") from None
    config = convert_config(hf_config, config_path).replace(
        normalize_waveform=_feature_extractor_normalizes(directory)
    )
    return build_model(config, read_state_dict(directory), KEY_MAP, directory)


def _feature_extractor_normalizes(directory: Path) -> bool:
    """``do_normalize`` of the model's feature extractor (preprocessor_config.json); False without one."""
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text()).get("do_normalize", False))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
