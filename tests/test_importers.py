"""Checkpoint importers: each is proven against an independent implementation with random weights.

The references are transformers' Wav2Vec2 / HuBERT / WavLM models and torchaudio's ``wav2vec2_model`` and
``wavlm_model``; fairseq, S3PRL and Microsoft WavLM files are written from a torchaudio reference with their
parameter names spelled out here, independently of the importer's tables. Inputs are single utterances: the
references include padding in their group-norm statistics.
"""

import argparse
import contextlib
import fractions
import functools
import json
import sys
import types
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import torch
import torch.nn.functional as F
import torchaudio
import transformers
from omegaconf import OmegaConf
from torch import Tensor, nn

from espnet_prune.checkpoints import CheckpointError
from espnet_prune.models.config import DEFAULT_CONV_LAYERS, Wav2Vec2Config
from espnet_prune.models.importers import (
    infer_torchaudio_config,
    load_fairseq_checkpoint,
    load_huggingface_checkpoint,
    load_pretrained,
    load_torchaudio_state_dict,
)
from espnet_prune.models.importers.import_fairseq import parse_conv_feature_layers
from espnet_prune.models.model import Wav2Vec2Model

CONV_LAYERS = [(16, 10, 5), (16, 3, 2), (16, 3, 2), (24, 2, 2)]
CONV_SPEC = "[(16, 10, 5)] + [(16, 3, 2)] * 2 + [(24, 2, 2)]"  # fairseq's way of writing CONV_LAYERS
EMBED, HEADS, FFN, LAYERS, POS_GROUPS = 32, 4, 48, 2, 4
# WavLM's relative position buckets, small enough that the test utterance (199 frames) reaches the
# logarithmic buckets and the last one (distances past WAVLM_MAX_DISTANCE).
WAVLM_BUCKETS, WAVLM_MAX_DISTANCE = 16, 20
TOLERANCE = 1e-4


# --- helpers -----------------------------------------------------------------------------------
def perturb_(model: nn.Module, seed: int) -> nn.Module:
    """Random noise on every parameter, so that norm weights and biases are not 1 and 0; WavLM's relative
    position bias table gets unit scale (as nn.Embedding's init), so that any error in the bias shows."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("rel_attn_embed.weight"):
                parameter.normal_()
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


def waveform(samples: int = 8000) -> Tensor:
    return torch.randn(1, samples, generator=torch.Generator().manual_seed(7))


@contextlib.contextmanager
def recorded_layer_io(layers: nn.ModuleList) -> Iterator[List[Tensor]]:
    """Records [input of the first layer, output of each layer] (what our hidden_states hold)."""
    record: List[Tensor] = []

    def first_input(module, args, kwargs):
        record.append(args[0] if args else kwargs["hidden_states"])

    def output(module, args, result):
        record.append(result[0] if isinstance(result, tuple) else result)

    handles = [layers[0].register_forward_pre_hook(first_input, with_kwargs=True)]
    handles += [layer.register_forward_hook(output) for layer in layers]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def assert_same_outputs(
    model: Wav2Vec2Model, audio: Tensor, hidden_states: List[Tensor], last: Tensor
) -> None:
    with torch.no_grad():
        ours = model(audio)
    assert len(ours.hidden_states) == len(hidden_states) == LAYERS + 1
    for layer, (got, want) in enumerate(zip(ours.hidden_states, hidden_states)):
        assert (got - want).abs().max().item() <= TOLERANCE, f"hidden state {layer}"
    assert (ours.last_hidden_state - last).abs().max().item() <= TOLERANCE


def torchaudio_reference(
    extractor_mode: str,
    layer_norm_first: bool,
    conv_bias: bool,
    pos_kernel: int,
    seed: int,
    conv_layers=CONV_LAYERS,
    wavlm: bool = False,
):
    builder = torchaudio.models.wav2vec2_model
    if wavlm:
        builder = functools.partial(
            torchaudio.models.wavlm_model,
            encoder_num_buckets=WAVLM_BUCKETS,
            encoder_max_distance=WAVLM_MAX_DISTANCE,
        )
    model = builder(
        extractor_mode=extractor_mode,
        extractor_conv_layer_config=conv_layers,
        extractor_conv_bias=conv_bias,
        encoder_embed_dim=EMBED,
        encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=pos_kernel,
        encoder_pos_conv_groups=POS_GROUPS,
        encoder_num_layers=LAYERS,
        encoder_num_heads=HEADS,
        encoder_attention_dropout=0.0,
        encoder_ff_interm_features=FFN,
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0,
        encoder_layer_norm_first=layer_norm_first,
        encoder_layer_drop=0.0,
        aux_num_out=5,
    )
    return perturb_(model, seed)


def torchaudio_outputs(model, audio: Tensor) -> Tuple[List[Tensor], Tensor]:
    """torchaudio's layer inputs/outputs and its encoder output (before the ``aux`` CTC head)."""
    with torch.no_grad(), recorded_layer_io(model.encoder.transformer.layers) as record:
        features, _ = model.feature_extractor(audio, None)
        last = model.encoder(features, None)
    return record, last


def our_config(
    extractor_mode: str, layer_norm_first: bool, conv_bias: bool, pos_kernel: int
) -> Wav2Vec2Config:
    return Wav2Vec2Config(
        conv_layers=CONV_LAYERS,
        extractor_mode=extractor_mode,
        conv_bias=conv_bias,
        embed_dim=EMBED,
        num_heads=[HEADS] * LAYERS,
        head_dim=EMBED // HEADS,
        ffn_dims=[FFN] * LAYERS,
        layer_norm_first=layer_norm_first,
        pos_conv_kernel=pos_kernel,
        pos_conv_groups=POS_GROUPS,
    )


# --- Hugging Face --------------------------------------------------------------------------------
HF_CASES = [  # class, feat_extract_norm, do_stable_layer_norm, conv_bias, pos kernel, weight file
    ("Wav2Vec2Model", "group", False, False, 8, "safetensors"),
    ("Wav2Vec2Model", "layer", True, True, 7, "bin"),
    ("Wav2Vec2ForCTC", "layer", False, True, 6, "bin, weight_g/weight_v"),
    ("HubertModel", "group", True, True, 5, "safetensors"),
    ("HubertForSequenceClassification", "layer", True, False, 4, "safetensors"),
    ("WavLMModel", "group", False, False, 8, "safetensors"),  # WavLM-base layout
    ("WavLMModel", "layer", True, False, 7, "bin"),  # WavLM-large layout
    ("WavLMForCTC", "layer", False, True, 6, "bin, weight_g/weight_v"),
]
HF_CONFIGS = {  # class name prefix: config class and its own fields
    "Wav2Vec2": (transformers.Wav2Vec2Config, {}),
    "Hubert": (transformers.HubertConfig, {}),
    "WavLM": (
        transformers.WavLMConfig,
        {"num_buckets": WAVLM_BUCKETS, "max_bucket_distance": WAVLM_MAX_DISTANCE},
    ),
}


def hf_model(
    class_name: str, feat_extract_norm: str, stable: bool, conv_bias: bool, pos_kernel: int, seed: int
):
    ((config_class, own_fields),) = [
        value for prefix, value in HF_CONFIGS.items() if class_name.startswith(prefix)
    ]
    config = config_class(
        hidden_size=EMBED,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        conv_dim=[c for c, _, _ in CONV_LAYERS],
        conv_kernel=[k for _, k, _ in CONV_LAYERS],
        conv_stride=[s for _, _, s in CONV_LAYERS],
        conv_bias=conv_bias,
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=stable,
        num_conv_pos_embeddings=pos_kernel,
        num_conv_pos_embedding_groups=POS_GROUPS,
        vocab_size=7,
        num_labels=3,
        use_weighted_layer_sum=True,
        **own_fields,
    )
    return perturb_(getattr(transformers, class_name)(config), seed)


def save_hf(model, directory: Path, weight_file: str) -> None:
    model.save_pretrained(directory)
    if weight_file.startswith("bin"):
        (directory / "model.safetensors").unlink()
        state = model.state_dict()
        if "weight_g" in weight_file:  # how checkpoints written before torch's parametrizations name it
            parametrized = [key for key in state if ".parametrizations.weight.original" in key]
            for key in parametrized:
                old_name = key.replace("parametrizations.weight.original0", "weight_g")
                old_name = old_name.replace("parametrizations.weight.original1", "weight_v")
                state[old_name] = state.pop(key)
            assert len(parametrized) == 2
        torch.save(state, directory / "pytorch_model.bin")


@pytest.mark.parametrize("class_name, norm, stable, conv_bias, pos_kernel, weight_file", HF_CASES)
def test_huggingface_import_matches_transformers(
    tmp_path, class_name, norm, stable, conv_bias, pos_kernel, weight_file
):
    reference = hf_model(class_name, norm, stable, conv_bias, pos_kernel, seed=pos_kernel)
    save_hf(reference, tmp_path, weight_file)
    model, config = load_pretrained(tmp_path)
    model_type = reference.config.model_type
    base = getattr(reference, model_type, reference)  # the encoder of a *For* model
    audio = waveform()
    with torch.no_grad(), recorded_layer_io(base.encoder.layers) as record:
        last = base(audio).last_hidden_state  # after the final LayerNorm in the stable (pre-LN) layout
    assert_same_outputs(model, audio, record, last)
    assert config.model_type == model_type == class_name[: len(model_type)].lower()
    assert config.extractor_mode == f"{norm}_norm" and config.layer_norm_first == stable
    if model_type == "wavlm":
        assert (config.num_buckets, config.max_distance) == (WAVLM_BUCKETS, WAVLM_MAX_DISTANCE)
    assert not model.training


# --- torchaudio ----------------------------------------------------------------------------------
TA_CASES = [  # extractor mode, layer_norm_first, conv bias, pos kernel
    ("group_norm", False, False, 8),
    ("layer_norm", True, True, 7),
]


def test_huggingface_feature_extractor_normalisation_reaches_the_model(tmp_path):
    """A model whose feature extractor normalises (``do_normalize``, e.g. wav2vec2-large-lv60) gets the same
    features from the raw waveform as transformers gives it from the feature extractor's output."""
    reference = hf_model("Wav2Vec2Model", "layer", True, True, 8, seed=5)
    save_hf(reference, tmp_path, "safetensors")
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path)
    model, config = load_pretrained(tmp_path)
    assert config.normalize_waveform
    audio = waveform() * 3 + 0.5
    normalised = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)(
        audio[0].numpy(), sampling_rate=16000, return_tensors="pt"
    ).input_values
    with torch.no_grad(), recorded_layer_io(reference.encoder.layers) as record:
        last = reference(normalised).last_hidden_state
    assert_same_outputs(model, audio, record, last)


@pytest.mark.parametrize("extractor_mode, layer_norm_first, conv_bias, pos_kernel", TA_CASES)
def test_torchaudio_import_matches_torchaudio(
    tmp_path, extractor_mode, layer_norm_first, conv_bias, pos_kernel
):
    reference = torchaudio_reference(extractor_mode, layer_norm_first, conv_bias, pos_kernel, seed=3)
    path = tmp_path / "torchaudio.pt"
    torch.save(reference.state_dict(), path)
    audio = waveform()
    record, last = torchaudio_outputs(reference, audio)
    config = our_config(extractor_mode, layer_norm_first, conv_bias, pos_kernel)

    model, _ = load_pretrained(path, config=config)
    assert_same_outputs(model, audio, record, last)

    inferred_model, inferred = load_torchaudio_state_dict(
        path, num_heads=HEADS, layer_norm_first=layer_norm_first, conv_strides=[s for _, _, s in CONV_LAYERS]
    )
    assert inferred == config
    assert_same_outputs(inferred_model, audio, record, last)


def test_torchaudio_inference_assumes_standard_strides_only_for_standard_kernels():
    standard = [(8, kernel, stride) for _, kernel, stride in DEFAULT_CONV_LAYERS]
    state = torchaudio_reference("group_norm", False, False, 8, seed=0, conv_layers=standard).state_dict()
    assert infer_torchaudio_config(state, num_heads=HEADS, layer_norm_first=False).conv_layers == standard
    state = torchaudio_reference("group_norm", False, False, 8, seed=0).state_dict()
    with pytest.raises(ValueError, match="conv_strides"):
        infer_torchaudio_config(state, num_heads=HEADS, layer_norm_first=False)


def test_torchaudio_state_dict_without_config_is_refused(tmp_path):
    path = tmp_path / "torchaudio.pt"
    torch.save(torchaudio_reference("group_norm", False, False, 8, seed=0).state_dict(), path)
    with pytest.raises(ValueError, match=r"torchaudio\.pt.*config"):
        load_pretrained(path)
    with pytest.raises(ValueError, match=r"torchaudio\.pt.*num_heads and layer_norm_first"):
        load_torchaudio_state_dict(path, num_heads=HEADS)


# --- fairseq and S3PRL -----------------------------------------------------------------------------
def fairseq_attention(attention) -> Dict[str, Tensor]:
    """A torchaudio attention module's weights under fairseq's names (relative to ``self_attn.``), WavLM's
    (microsoft/unilm wavlm/modules.py MultiheadAttention) for a WavLMSelfAttention."""
    if not hasattr(attention, "gru_rel_pos_linear"):
        names = [f"{p}_proj.{kind}" for p in ("q", "k", "v", "out") for kind in ("weight", "bias")]
        return {name: attention.get_parameter(name) for name in names}
    inner = attention.attention  # nn.MultiheadAttention: q, k and v stacked in in_proj
    state = {}
    for name, weight, bias in zip("qkv", inner.in_proj_weight.chunk(3), inner.in_proj_bias.chunk(3)):
        state[f"{name}_proj.weight"], state[f"{name}_proj.bias"] = weight, bias
    state["out_proj.weight"], state["out_proj.bias"] = inner.out_proj.weight, inner.out_proj.bias
    state["grep_linear.weight"] = attention.gru_rel_pos_linear.weight
    state["grep_linear.bias"] = attention.gru_rel_pos_linear.bias
    state["grep_a"] = attention.gru_rel_pos_const
    if attention.rel_attn_embed is not None:  # the first layer's
        state["relative_attention_bias.weight"] = attention.rel_attn_embed.weight
    return state


def fairseq_state_dict(reference, extractor_mode: str, new_weight_norm: bool) -> Dict[str, Tensor]:
    """The torchaudio reference's weights under fairseq's names (fairseq.models.wav2vec.Wav2Vec2Model;
    for a WavLM reference, microsoft/unilm's WavLM)."""
    state: Dict[str, Tensor] = {}
    for i, block in enumerate(reference.feature_extractor.conv_layers):
        state[f"feature_extractor.conv_layers.{i}.0.weight"] = block.conv.weight
        if block.conv.bias is not None:
            state[f"feature_extractor.conv_layers.{i}.0.bias"] = block.conv.bias
        if block.layer_norm is not None:
            # Sequential(conv, dropout, GroupNorm, GELU) or
            # Sequential(conv, dropout, Sequential(TransposeLast, LayerNorm, TransposeLast), GELU)
            norm = "2" if extractor_mode == "group_norm" else "2.1"
            state[f"feature_extractor.conv_layers.{i}.{norm}.weight"] = block.layer_norm.weight
            state[f"feature_extractor.conv_layers.{i}.{norm}.bias"] = block.layer_norm.bias
    projection = reference.encoder.feature_projection
    state["layer_norm.weight"], state["layer_norm.bias"] = (
        projection.layer_norm.weight,
        projection.layer_norm.bias,
    )
    state["post_extract_proj.weight"] = projection.projection.weight
    state["post_extract_proj.bias"] = projection.projection.bias
    transformer = reference.encoder.transformer
    pos_conv = transformer.pos_conv_embed.conv
    g, v = pos_conv.parametrizations.weight.original0, pos_conv.parametrizations.weight.original1
    if new_weight_norm:
        state["encoder.pos_conv.0.parametrizations.weight.original0"] = g
        state["encoder.pos_conv.0.parametrizations.weight.original1"] = v
    else:
        state["encoder.pos_conv.0.weight_g"], state["encoder.pos_conv.0.weight_v"] = g, v
    state["encoder.pos_conv.0.bias"] = pos_conv.bias
    state["encoder.layer_norm.weight"] = transformer.layer_norm.weight
    state["encoder.layer_norm.bias"] = transformer.layer_norm.bias
    for i, layer in enumerate(transformer.layers):
        for name, value in fairseq_attention(layer.attention).items():
            state[f"encoder.layers.{i}.self_attn.{name}"] = value
        modules = {
            "self_attn_layer_norm": layer.layer_norm,
            "fc1": layer.feed_forward.intermediate_dense,
            "fc2": layer.feed_forward.output_dense,
            "final_layer_norm": layer.final_layer_norm,
        }
        for name, module in modules.items():
            state[f"encoder.layers.{i}.{name}.weight"] = module.weight
            state[f"encoder.layers.{i}.{name}.bias"] = module.bias
    return {key: value.detach().clone() for key, value in state.items()}


def fairseq_model_cfg(
    extractor_mode: str, layer_norm_first: bool, conv_bias: bool, pos_kernel: int, name: str
):
    return {
        "_name": name,
        "extractor_mode": "default" if extractor_mode == "group_norm" else "layer_norm",
        "conv_feature_layers": CONV_SPEC,
        "conv_bias": conv_bias,
        "encoder_layers": LAYERS,
        "encoder_embed_dim": EMBED,
        "encoder_ffn_embed_dim": FFN,
        "encoder_attention_heads": HEADS,
        "activation_fn": "gelu",
        "layer_type": "transformer",
        "layer_norm_first": layer_norm_first,
        "conv_pos": pos_kernel,
        "conv_pos_groups": POS_GROUPS,
        "pos_conv_depth": 1,
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.05,
        "dropout_input": 0.1,
        "final_dim": 8,
        "logit_temp": 0.1,
    }


def pretraining_extras(model_type: str) -> Dict[str, Tensor]:
    """Parameters only pretraining uses, which the importer must drop."""
    if model_type == "hubert":
        return {
            "mask_emb": torch.randn(EMBED),
            "label_embs_concat": torch.randn(10, 8),
            "final_proj.weight": torch.randn(8, EMBED),
            "final_proj.bias": torch.randn(8),
        }
    return {
        "mask_emb": torch.randn(EMBED),
        "quantizer.vars": torch.randn(1, 8, 4),
        "quantizer.weight_proj.weight": torch.randn(8, 24),
        "quantizer.weight_proj.bias": torch.randn(8),
        "project_q.weight": torch.randn(8, 4),
        "project_q.bias": torch.randn(8),
        "final_proj.weight": torch.randn(8, EMBED),
        "final_proj.bias": torch.randn(8),
    }


@contextlib.contextmanager
def fake_fairseq_dictionary() -> Iterator[type]:
    """A class pickled as fairseq.data.dictionary.Dictionary (as in a HuBERT / fine-tuned checkpoint's
    task_state), importable only while saving: loading must work without fairseq."""
    dictionary = type("Dictionary", (), {"__module__": "fairseq.data.dictionary"})
    modules = {
        name: types.ModuleType(name) for name in ("fairseq", "fairseq.data", "fairseq.data.dictionary")
    }
    modules["fairseq.data.dictionary"].Dictionary = dictionary
    with pytest.MonkeyPatch.context() as patch:
        for name, module in modules.items():
            patch.setitem(sys.modules, name, module)
        yield dictionary


FAIRSEQ_CASES = [  # layout, model name, extractor mode, layer_norm_first, conv bias, pos kernel
    ("cfg dict", "wav2vec2", "group_norm", False, False, 8),
    ("cfg omegaconf", "hubert", "layer_norm", True, True, 7),
    ("args namespace", "wav2vec2", "layer_norm", False, True, 5),
    ("fine-tuned", "wav2vec_ctc", "group_norm", True, False, 6),
    ("fine-tuned", "hubert_ctc", "layer_norm", True, False, 5),
    ("s3prl", "hubert", "group_norm", False, True, 4),
]


@pytest.mark.parametrize(
    "layout, name, extractor_mode, layer_norm_first, conv_bias, pos_kernel", FAIRSEQ_CASES
)
def test_fairseq_import_matches_reference(
    tmp_path, layout, name, extractor_mode, layer_norm_first, conv_bias, pos_kernel
):
    reference = torchaudio_reference(extractor_mode, layer_norm_first, conv_bias, pos_kernel, seed=11)
    model_type = "hubert" if name.startswith("hubert") else "wav2vec2"
    state = fairseq_state_dict(
        reference, extractor_mode, new_weight_norm=layout in ("cfg omegaconf", "s3prl")
    )
    state.update(pretraining_extras(model_type))
    model_cfg = fairseq_model_cfg(extractor_mode, layer_norm_first, conv_bias, pos_kernel, name)
    # The task's waveform normalisation (on in the layer-norm-first cases) must reach the imported model.
    task = {
        "_name": "audio_pretraining",
        "data": "/data",
        "normalize": layer_norm_first,
        "sample_rate": 16000,
    }
    bookkeeping = {
        "optimizer_history": [{"num_updates": 10}],
        "extra_state": {"metrics": {}, "previous_training_time": 1.0},
    }
    with fake_fairseq_dictionary() as dictionary:
        if layout == "s3prl":
            checkpoint = {"task_cfg": task, "model_cfg": model_cfg, "model_weight": state}
        elif layout == "cfg dict":
            checkpoint = {
                "args": None,
                "cfg": {"model": model_cfg, "task": task},
                "model": state,
                **bookkeeping,
            }
        elif layout == "cfg omegaconf":
            cfg = OmegaConf.create({"model": model_cfg, "task": task})
            checkpoint = {
                "args": None,
                "cfg": cfg,
                "model": state,
                "task_state": {"dictionaries": [dictionary()]},
            }
        elif layout == "args namespace":
            model_cfg.pop("_name")
            args = argparse.Namespace(
                arch=name,
                task="audio_pretraining",
                data="/data",
                sample_rate=16000,
                normalize=layer_norm_first,
                **model_cfg,
            )
            checkpoint = {"args": args, "model": state, **bookkeeping}
        else:  # CTC fine-tuned: encoder under w2v_encoder.w2v_model., pretraining cfg in w2v_args
            state = {f"w2v_encoder.w2v_model.{key}": value for key, value in state.items()}
            state.update(
                {"w2v_encoder.proj.weight": torch.randn(7, EMBED), "w2v_encoder.proj.bias": torch.randn(7)}
            )
            model_cfg["_name"] = model_type
            outer = {
                "_name": name,
                "w2v_args": {"model": model_cfg, "task": task},
                "dropout": 0.0,
                "layerdrop": 0.2,
            }
            cfg = OmegaConf.create({"model": outer, "task": {"_name": "audio_finetuning"}})
            checkpoint = {"cfg": cfg, "model": state, "task_state": {"target_dictionary": dictionary()}}
        path = tmp_path / "checkpoint.pt"
        torch.save(checkpoint, path)
    audio = waveform()
    # fairseq normalises with F.layer_norm over the whole waveform (an independent formula of ours)
    record, last = torchaudio_outputs(
        reference, F.layer_norm(audio, audio.shape) if layer_norm_first else audio
    )
    model, config = load_pretrained(path)  # weights_only=True, without fairseq
    assert_same_outputs(model, audio, record, last)
    assert config == our_config(extractor_mode, layer_norm_first, conv_bias, pos_kernel).replace(
        model_type=model_type,
        layer_drop=0.2 if layout == "fine-tuned" else 0.05,
        dropout=0.0 if layout == "fine-tuned" else 0.1,
        normalize_waveform=layer_norm_first,
    )


# --- WavLM (microsoft/unilm layout) ------------------------------------------------------------------
def wavlm_cfg(
    extractor_mode: str, layer_norm_first: bool, conv_bias: bool, pos_kernel: int
) -> Dict[str, Any]:
    """The ``cfg`` of a WavLM.pt: microsoft/unilm's flat WavLMConfig dict, which names no model."""
    cfg = fairseq_model_cfg(extractor_mode, layer_norm_first, conv_bias, pos_kernel, name="")
    for key in ("_name", "layer_type", "pos_conv_depth", "final_dim", "logit_temp"):
        del cfg[key]
    cfg.update(
        normalize=layer_norm_first,
        feature_grad_mult=0.1,
        dropout_features=0.1,
        mask_prob=0.8,
        mask_selection="static",
        relative_position_embedding=True,
        num_buckets=WAVLM_BUCKETS,
        max_distance=WAVLM_MAX_DISTANCE,
        gru_rel_pos=True,
        expand_attention_head_size=-1,
    )
    return cfg


def write_wavlm(
    tmp_path: Path,
    extractor_mode="group_norm",
    layer_norm_first=False,
    pos_kernel=8,
    new_weight_norm=False,
    cfg_changes=None,
    drop=(),
) -> Tuple[Path, nn.Module]:
    """A WavLM.pt ({"cfg", "model"}) holding a torchaudio WavLM reference's weights; returns it and the reference."""
    reference = torchaudio_reference(extractor_mode, layer_norm_first, False, pos_kernel, seed=13, wavlm=True)
    state = fairseq_state_dict(reference, extractor_mode, new_weight_norm)
    state["mask_emb"] = torch.randn(EMBED)  # pretraining only
    for key in drop:
        del state[key]
    cfg = {**wavlm_cfg(extractor_mode, layer_norm_first, False, pos_kernel), **(cfg_changes or {})}
    path = tmp_path / "WavLM-Tiny.pt"
    torch.save({"cfg": cfg, "model": state}, path)
    return path, reference


WAVLM_CASES = [  # extractor mode, layer_norm_first, pos kernel, weight norm names
    ("group_norm", False, 8, False),  # WavLM-base / base-plus layout
    ("layer_norm", True, 7, True),  # WavLM-large layout
]


@pytest.mark.parametrize("extractor_mode, layer_norm_first, pos_kernel, new_weight_norm", WAVLM_CASES)
def test_wavlm_import_matches_torchaudio(
    tmp_path, extractor_mode, layer_norm_first, pos_kernel, new_weight_norm
):
    path, reference = write_wavlm(tmp_path, extractor_mode, layer_norm_first, pos_kernel, new_weight_norm)
    audio = waveform()
    # the cfg's ``normalize`` (on in the large layout) must reach the model: fairseq's F.layer_norm of the input
    record, last = torchaudio_outputs(
        reference, F.layer_norm(audio, audio.shape) if layer_norm_first else audio
    )
    model, config = load_pretrained(path)  # the cfg dict loads with weights_only=True
    assert_same_outputs(model, audio, record, last)
    assert config == our_config(extractor_mode, layer_norm_first, False, pos_kernel).replace(
        model_type="wavlm",
        num_buckets=WAVLM_BUCKETS,
        max_distance=WAVLM_MAX_DISTANCE,
        normalize_waveform=layer_norm_first,
    )


@pytest.mark.parametrize("field", ["relative_position_embedding", "gru_rel_pos"])
def test_wavlm_without_gated_relative_position_is_refused(tmp_path, field):
    path, _ = write_wavlm(tmp_path, cfg_changes={field: False})
    with pytest.raises(ValueError, match=rf"WavLM-Tiny\.pt.*{field}=False is not supported"):
        load_pretrained(path)


def test_missing_wavlm_parameter_is_named(tmp_path):
    path, _ = write_wavlm(tmp_path, drop=["encoder.layers.1.self_attn.grep_a"])
    pattern = r"WavLM-Tiny\.pt.*missing parameter 'encoder\.layers\.1\.self_attn\.grep_a'"
    with pytest.raises(ValueError, match=pattern):
        load_pretrained(path)


def test_conv_feature_layers_are_parsed_without_eval():
    standard = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2"
    assert parse_conv_feature_layers(standard, "ckpt.pt") == DEFAULT_CONV_LAYERS
    assert parse_conv_feature_layers(CONV_SPEC, "ckpt.pt") == CONV_LAYERS
    with pytest.raises(ValueError, match=r"ckpt\.pt.*conv_feature_layers"):
        parse_conv_feature_layers("__import__('os').system('true')", "ckpt.pt")
    with pytest.raises(ValueError, match="conv_feature_layers"):
        parse_conv_feature_layers("[(512, 10)]", "ckpt.pt")


# --- errors ------------------------------------------------------------------------------------------
def write_fairseq(tmp_path: Path, model_changes=None, state_changes=None, drop=()) -> Path:
    reference = torchaudio_reference("group_norm", False, False, 8, seed=0)
    state = fairseq_state_dict(reference, "group_norm", new_weight_norm=False)
    state.update(state_changes or {})
    for key in drop:
        del state[key]
    model_cfg = {**fairseq_model_cfg("group_norm", False, False, 8, "wav2vec2"), **(model_changes or {})}
    path = tmp_path / "wav2vec2_tiny.pt"
    torch.save({"cfg": {"model": model_cfg}, "model": state}, path)
    return path


def test_unknown_key_is_named(tmp_path):
    path = write_fairseq(
        tmp_path, state_changes={"encoder.layers.0.self_attn.rel_attn_embed.weight": torch.zeros(4)}
    )
    pattern = r"wav2vec2_tiny\.pt.*unknown parameter 'encoder\.layers\.0\.self_attn\.rel_attn_embed\.weight'"
    with pytest.raises(ValueError, match=pattern):
        load_fairseq_checkpoint(path)


def test_missing_key_is_named(tmp_path):
    path = write_fairseq(tmp_path, drop=["encoder.layers.1.fc2.bias"])
    with pytest.raises(
        ValueError, match=r"wav2vec2_tiny\.pt.*missing parameter 'encoder\.layers\.1\.fc2\.bias'"
    ):
        load_pretrained(path)


def test_duplicate_weight_norm_names_are_refused(tmp_path):
    extra = {"encoder.pos_conv.0.parametrizations.weight.original0": torch.zeros(1, 1, 8)}
    path = write_fairseq(tmp_path, state_changes=extra)
    pattern = (
        r"wav2vec2_tiny\.pt.*'encoder\.pos_conv\.0\.weight_g' and 'encoder\.pos_conv\.0\.parametrizations"
    )
    with pytest.raises(ValueError, match=pattern):
        load_pretrained(path)


def test_shape_mismatch_is_named(tmp_path):
    reference = hf_model("Wav2Vec2Model", "group", False, False, 8, seed=0)
    reference.save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    hf_config = json.loads(config_path.read_text())
    hf_config["intermediate_size"] = FFN + 2
    config_path.write_text(json.dumps(hf_config))
    pattern = r"encoder\.layers\.0\.feed_forward\.intermediate_dense\.bias' has shape \(48,\).*\(50,\)"
    with pytest.raises(ValueError, match=str(tmp_path) + ".*" + pattern):
        load_huggingface_checkpoint(tmp_path)


def test_extractor_mode_disagreeing_with_weights_is_named(tmp_path):
    path = write_fairseq(tmp_path, model_changes={"extractor_mode": "layer_norm"})
    pattern = r"wav2vec2_tiny\.pt.*missing parameter .*'feature_extractor\.conv_layers\.1\.2\.1\.weight'"
    with pytest.raises(ValueError, match=pattern):
        load_pretrained(path)


@pytest.mark.parametrize(
    "field, value",
    [
        ("activation_fn", "relu"),
        ("layer_type", "conformer"),
        ("pos_conv_depth", 5),
        ("extractor_mode", "group"),
        ("_name", "data2vec_audio"),
    ],
)
def test_unsupported_fairseq_variant_is_named(tmp_path, field, value):
    path = write_fairseq(tmp_path, model_changes={field: value})
    with pytest.raises(ValueError, match=rf"wav2vec2_tiny\.pt.*{field}.*{value}"):
        load_pretrained(path)


def test_unsupported_encoder_of_a_fine_tuned_checkpoint_is_named(tmp_path):
    encoder_cfg = {**fairseq_model_cfg("group_norm", False, False, 8, "wav2vec2"), "_name": "data2vec_audio"}
    path = tmp_path / "data2vec_ctc.pt"
    torch.save(
        {"cfg": {"model": {"_name": "wav2vec_ctc", "w2v_args": {"model": encoder_cfg}}}, "model": {}}, path
    )
    with pytest.raises(ValueError, match=r"data2vec_ctc\.pt.*'data2vec_audio'"):
        load_pretrained(path)


@pytest.mark.parametrize(
    "class_name, field, value",
    [
        ("Wav2Vec2Model", "hidden_act", "relu"),
        ("Wav2Vec2Model", "model_type", "data2vec-audio"),
        ("Wav2Vec2Model", "add_adapter", True),
        ("HubertModel", "feat_proj_layer_norm", False),
        ("HubertModel", "conv_pos_batch_norm", True),
    ],
)
def test_unsupported_huggingface_variant_is_named(tmp_path, class_name, field, value):
    hf_model(class_name, "group", False, False, 8, seed=0).save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    hf_config = json.loads(config_path.read_text())
    hf_config[field] = value
    config_path.write_text(json.dumps(hf_config))
    with pytest.raises(ValueError, match=rf"config\.json.*{field}"):
        load_pretrained(tmp_path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pt"):
        load_pretrained(tmp_path / "nowhere.pt")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_pretrained(tmp_path)
    hf_model("Wav2Vec2Model", "group", False, False, 8, seed=0).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}.*model\.safetensors"):
        load_pretrained(tmp_path)


def test_unrecognised_checkpoint_is_named(tmp_path):
    path = tmp_path / "mystery.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"mystery\.pt.*unrecognised"):
        load_pretrained(path)
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"mystery\.pt"):
        load_pretrained(path)


def test_unknown_pickled_class_is_refused_unless_trusted(tmp_path):
    path = write_fairseq(tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["extra_state"] = {"best": fractions.Fraction(1, 3)}  # a class weights_only=True refuses
    torch.save(checkpoint, path)
    with pytest.raises(
        CheckpointError, match=r"wav2vec2_tiny\.pt: the file pickles fractions\.Fraction.*trust_checkpoint"
    ):
        load_pretrained(path)
    model, _ = load_pretrained(path, trust_checkpoint=True)  # the user's explicit opt-in
    assert isinstance(model, Wav2Vec2Model)
