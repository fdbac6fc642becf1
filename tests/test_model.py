"""The prunable wav2vec2 / HuBERT / WavLM model: sizes, config round trips, padding and per-layer sizes.

Equality with the reference implementations (transformers, torchaudio, fairseq layout) is in
test_importers.py.
"""

from typing import List, Tuple

import pytest
import torch
import torchaudio

from espnet_prune.models import PRESETS, Wav2Vec2Config, Wav2Vec2Model

from conftest import tiny_config as shared_tiny_config

CONV_LAYERS = [(16, 10, 5), (16, 3, 2), (24, 3, 2), (24, 2, 2)]


def tiny_config(**overrides) -> Wav2Vec2Config:
    """The shared tiny model with two Transformer layers of 48 FFN units (post-LN, group-norm CNN by default)."""
    two_layers = dict(
        conv_layers=CONV_LAYERS,
        extractor_mode="group_norm",
        conv_bias=False,
        layer_norm_first=False,
        num_heads=[4, 4],
        ffn_dims=[48, 48],
        pos_conv_kernel=8,
    )
    return shared_tiny_config(**{**two_layers, **overrides})


def perturbed_model(config: Wav2Vec2Config, seed: int = 0) -> Wav2Vec2Model:
    """A model in eval mode whose every parameter (norm weights and biases included) is random."""
    torch.manual_seed(seed)
    model = Wav2Vec2Model(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def frames_after_cnn(samples: int, conv_layers: List[Tuple[int, int, int]]) -> int:
    for _, kernel, stride in conv_layers:
        samples = (samples - kernel) // stride + 1
    return samples


def test_wav2vec2_base_has_94_4m_parameters_like_torchaudio():
    with torch.device("meta"):  # sizes only: no memory, no initialisation cost
        ours = sum(p.numel() for p in Wav2Vec2Model(Wav2Vec2Config()).parameters())
        reference = torchaudio.models.wav2vec2_base(aux_num_out=None)
        theirs = sum(p.numel() for p in reference.parameters())
    assert round(ours / 1e6, 1) == 94.4
    assert ours == theirs == 94_370_944


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_have_torchaudio_parameter_counts(preset):
    builder = {"wavlm_base_plus": "wavlm_base"}.get(preset, preset)  # torchaudio's name for the geometry
    with torch.device("meta"):
        ours = sum(p.numel() for p in Wav2Vec2Model(PRESETS[preset]()).parameters())
        reference = getattr(torchaudio.models, builder)(aux_num_out=None)
        theirs = sum(p.numel() for p in reference.parameters())
    assert ours == theirs


@pytest.mark.parametrize("model_type, head_ids", [("wav2vec2", None), ("wavlm", [[0, 2, 3], []])])
def test_config_yaml_round_trip(tmp_path, model_type, head_ids):
    config = tiny_config(
        num_heads=[3, 0], ffn_dims=[0, 17], extractor_mode="layer_norm", layer_norm_first=True
    )
    config = config.replace(model_type=model_type, head_ids=head_ids)
    path = tmp_path / "model.yaml"
    config.save_yaml(path)
    assert Wav2Vec2Config.load_yaml(path) == config


def test_config_from_dict_rejects_unknown_key():
    data = tiny_config().to_dict()
    data["encoder_layers"] = 2
    with pytest.raises(ValueError, match=r"exp/model\.yaml.*unknown key.*'encoder_layers'"):
        Wav2Vec2Config.from_dict(data, source="exp/model.yaml")


def test_config_names_inconsistent_key():
    with pytest.raises(ValueError, match="ffn_dims"):
        tiny_config(ffn_dims=[48])


@pytest.mark.parametrize(
    "changes, key",
    [
        (dict(head_ids=[[0, 1, 2, 3], [0, 1, 2, 3]]), "head_ids: only WavLM"),
        (dict(model_type="wavlm", head_ids=[[0, 1, 2, 3]]), r"head_ids: 1 entries"),
        (dict(model_type="wavlm", head_ids=[[0, 1, 2], [0, 1, 2, 3]]), r"head_ids\[0\]: 3 heads"),
        (dict(model_type="wavlm", head_ids=[[0, 1, 3, 2], [0, 1, 2, 3]]), r"head_ids\[0\].*increasing"),
        (
            dict(model_type="wavlm", num_heads=[4, 2], head_ids=[[0, 1, 2, 3], [1, 4]]),
            r"head_ids\[1\].*\[0, 4\)",
        ),
        (dict(model_type="wavlm", head_dim=6), "head_dim: 6 does not divide"),
        (dict(model_type="wavlm", num_buckets=16, max_distance=4), "max_distance"),
    ],
)
def test_config_names_inconsistent_wavlm_key(changes, key):
    with pytest.raises(ValueError, match=key):
        tiny_config(**changes)


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm"])
@pytest.mark.parametrize("extractor_mode", ["group_norm", "layer_norm"])
@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_padded_batch_equals_one_utterance_at_a_time(extractor_mode, layer_norm_first, model_type):
    config = tiny_config(
        extractor_mode=extractor_mode, layer_norm_first=layer_norm_first, model_type=model_type
    )
    model = perturbed_model(config.replace(num_buckets=16, max_distance=20))
    lengths = [8000, 5003, 3120]
    generator = torch.Generator().manual_seed(1)
    batch = torch.randn(len(lengths), max(lengths), generator=generator)  # padding is noise, not zeros
    with torch.no_grad():
        batched = model(batch, torch.tensor(lengths))
        for n, length in enumerate(lengths):
            frames = frames_after_cnn(length, CONV_LAYERS)
            assert batched.lengths[n].item() == frames
            assert batched.padding_mask[n].tolist() == [
                t >= frames for t in range(batched.padding_mask.shape[1])
            ]
            alone = model(batch[n : n + 1, :length])
            assert alone.last_hidden_state.shape[1] == frames
            pairs = [(batched.last_hidden_state, alone.last_hidden_state)]
            pairs += list(zip(batched.hidden_states, alone.hidden_states))
            for padded, single in pairs:
                torch.testing.assert_close(padded[n, :frames], single[0], atol=1e-5, rtol=0)


def test_output_lengths_follow_the_conv_formula():
    model = Wav2Vec2Model(tiny_config())
    samples = [400, 401, 1234, 16000]
    expected = [frames_after_cnn(n, CONV_LAYERS) for n in samples]
    assert model.output_lengths(torch.tensor(samples)).tolist() == expected


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_smaller_per_layer_sizes_equal_dense_model_with_units_zeroed(layer_norm_first):
    """A config with fewer heads / FFN units computes what the dense model computes when the
    removed units' output weights are zero: that is what makes a pruned model just another config."""
    dense = perturbed_model(tiny_config(layer_norm_first=layer_norm_first))
    small = Wav2Vec2Model(
        tiny_config(layer_norm_first=layer_norm_first, num_heads=[3, 0], ffn_dims=[38, 0])
    ).eval()
    head_dim, removed_head, removed_units = 8, 1, range(0, 10)
    kept_rows = [r for r in range(32) if r // head_dim != removed_head]
    kept_units = [u for u in range(48) if u not in removed_units]
    rows = {f"attention.{p}_proj.{s}": kept_rows for p in "qkv" for s in ("weight", "bias")}
    rows.update({f"feed_forward.intermediate_dense.{s}": kept_units for s in ("weight", "bias")})
    columns = {"attention.out_proj.weight": kept_rows, "feed_forward.output_dense.weight": kept_units}
    state = dense.state_dict()
    small_state = {key: state[key] for key in small.state_dict()}
    for name, kept in rows.items():
        small_state[f"encoder.layers.0.{name}"] = state[f"encoder.layers.0.{name}"][kept]
    for name, kept in columns.items():
        small_state[f"encoder.layers.0.{name}"] = state[f"encoder.layers.0.{name}"][:, kept]
    small.load_state_dict(small_state)
    with torch.no_grad():
        layer0, layer1 = dense.encoder.layers
        layer0.attention.out_proj.weight[:, removed_head * head_dim : (removed_head + 1) * head_dim] = 0
        layer0.feed_forward.output_dense.weight[:, list(removed_units)] = 0
        for linear in (layer1.attention.out_proj, layer1.feed_forward.output_dense):
            linear.weight.zero_()
            linear.bias.zero_()
        waveform = torch.randn(1, 4000)
        expected, actual = dense(waveform), small(waveform)
    torch.testing.assert_close(actual.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=0)
    for got, want in zip(actual.hidden_states, expected.hidden_states):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
