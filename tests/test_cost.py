"""Cost model: exact counts against torch's flop counter and parameter count, expected cost under gates."""

from __future__ import annotations

import random
from typing import Dict

import pytest
import torch

from espnet_prune.models.config import Wav2Vec2Config, wav2vec2_base, wavlm_base
from espnet_prune.models.model import Wav2Vec2Model
from espnet_prune.pruning.cost import (
    COMPONENTS,
    CostBreakdown,
    exact_cost,
    expected_cost,
    frame_counts,
    make_flop_counter,
    measure_macs,
    measure_params,
)
from espnet_prune.pruning.gating import GateConfig, attach_gates, iter_gates

from conftest import tiny_config

SAMPLE_RATE = 16000


def random_pruned_config(seed: int) -> Wav2Vec2Config:
    """A small pruned geometry: ragged conv channels (down to 1), heads and FFN units (down to 0)."""
    rng = random.Random(seed)
    kernels_and_strides = [(10, 5), (3, 2), (3, 2), (3, 2), (2, 2)]
    conv_layers = [
        (rng.choice([1, 2, rng.randint(3, 24)]), kernel, stride) for kernel, stride in kernels_and_strides
    ]
    num_layers = 4
    return tiny_config(
        conv_layers=conv_layers,
        extractor_mode=("group_norm", "layer_norm")[seed % 2],
        conv_bias=rng.random() < 0.5,
        num_heads=[0] + [rng.randint(0, 4) for _ in range(num_layers - 1)],
        ffn_dims=[rng.choice([0, 1, rng.randint(2, 64)]) for _ in range(num_layers - 1)] + [0],
        layer_norm_first=(seed // 2) % 2 == 1,
        pos_conv_kernel=rng.choice([8, 9]),
    )


def random_pruned_wavlm_config(seed: int) -> Wav2Vec2Config:
    """``random_pruned_config`` as a WavLM whose layers keep random subsets of the 4 pretrained heads."""
    rng = random.Random(seed)
    config = random_pruned_config(seed)
    head_ids = [sorted(rng.sample(range(4), heads)) for heads in config.num_heads]
    return config.replace(model_type="wavlm", head_ids=head_ids, num_buckets=16, max_distance=20)


PRUNED_SEEDS = range(6)
CONFIGS = {
    "base": wav2vec2_base(),
    **{f"pruned{seed}": random_pruned_config(seed) for seed in PRUNED_SEEDS},
    "wavlm_base": wavlm_base(),
    **{f"wavlm_pruned{seed}": random_pruned_wavlm_config(seed) for seed in PRUNED_SEEDS},
}


def measured_macs(model: Wav2Vec2Model, seconds: float) -> Dict[str, int]:
    """Total ("total") and per-component MACs from the flop counter's per-module totals, in one forward."""
    model.eval()
    with torch.no_grad(), make_flop_counter() as counter:
        model(torch.randn(1, int(round(seconds * SAMPLE_RATE))))
    by_module = {name: sum(ops.values()) // 2 for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__
    layers = range(model.config.num_layers)
    return {
        "total": counter.get_total_flops() // 2,
        "cnn": by_module.get(f"{root}.feature_extractor", 0),
        "feature_projection": by_module.get(f"{root}.feature_projection", 0),
        "pos_conv": by_module.get(f"{root}.encoder.pos_conv_embed", 0),
        "attention": sum(by_module.get(f"{root}.encoder.layers.{i}.attention", 0) for i in layers),
        "ffn": sum(by_module.get(f"{root}.encoder.layers.{i}.feed_forward", 0) for i in layers),
        "encoder_norm": 0,
    }


def module_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measured_component_params(model: Wav2Vec2Model) -> Dict[str, int]:
    """Parameters per cost component, read from the modules (documents where each LayerNorm and WavLM's
    relative position bias table belong)."""
    layers = model.encoder.layers
    bias_table = model.encoder.rel_attn_embed
    return {
        "cnn": module_params(model.feature_extractor),
        "feature_projection": module_params(model.feature_projection),
        "pos_conv": module_params(model.encoder.pos_conv_embed),
        "attention": sum(module_params(layer.attention) if layer.attention else 0 for layer in layers)
        + sum(module_params(layer.layer_norm) if layer.layer_norm else 0 for layer in layers)
        + (module_params(bias_table) if bias_table is not None else 0),
        "ffn": sum(module_params(layer.feed_forward) if layer.feed_forward else 0 for layer in layers)
        + sum(module_params(layer.final_layer_norm) if layer.final_layer_norm else 0 for layer in layers),
        "encoder_norm": module_params(model.encoder.layer_norm),
    }


def assert_exact_match(model: Wav2Vec2Model, seconds: float) -> CostBreakdown:
    report = exact_cost(model.config, seconds=seconds)
    assert measure_params(model) == report.params
    assert measured_component_params(model) == {name: c.params for name, c in report.components().items()}
    exact_macs = {name: c.macs for name, c in report.components().items()}
    assert measured_macs(model, seconds) == {"total": report.macs, **exact_macs}
    return report


def open_all_gates(model: Wav2Vec2Model) -> None:
    with torch.no_grad():
        for _, gate in iter_gates(model):
            gate.log_alpha.fill_(50.0)


def assert_same_cost(expected: CostBreakdown, exact: CostBreakdown) -> None:
    for name in COMPONENTS:
        got, want = getattr(expected, name), getattr(exact, name)
        assert got.params.item() == pytest.approx(want.params, rel=1e-6, abs=1e-3), name
        assert got.macs.item() == pytest.approx(want.macs, rel=1e-6, abs=1e-3), name
    assert expected.params.item() == pytest.approx(exact.params, rel=1e-6)
    assert expected.macs.item() == pytest.approx(exact.macs, rel=1e-6)


# --- exact counts ----------------------------------------------------------------------------------


def test_base_config_matches_flop_counter_and_parameter_count() -> None:
    torch.manual_seed(0)
    report = assert_exact_match(Wav2Vec2Model(wav2vec2_base()), seconds=10.0)
    assert frame_counts(wav2vec2_base())[-1] == 499
    assert report.params / 1e6 == pytest.approx(94.4, abs=0.05)
    assert report.cnn_params / 1e6 == pytest.approx(4.2, abs=0.05)
    assert report.cnn_macs / 1e9 == pytest.approx(24.5, abs=0.05)
    # Stock FlopCounterMode misses the CPU attention kernel: its 69.5 G is our total less QK^T and AV.
    attention_matmuls = 12 * 2 * 499**2 * 12 * 64
    assert (report.macs - attention_matmuls) / 1e9 == pytest.approx(69.5, abs=0.05)
    assert report.params == report.cnn_params + report.transformer_params
    assert report.macs == report.cnn_macs + report.transformer_macs


def test_wavlm_base_matches_flop_counter_and_parameter_count() -> None:
    """WavLM-base: wav2vec2-base plus the gated-relative-position units' MACs and the bias table."""
    torch.manual_seed(0)
    report = assert_exact_match(Wav2Vec2Model(wavlm_base()), seconds=10.0)
    base = exact_cost(wav2vec2_base())
    gate_units = 12 * (8 * 64 + 8 + 12)  # per layer: Linear(head_dim, 8) and a constant per head
    assert report.params == base.params + gate_units + 320 * 12
    assert report.macs == base.macs + 12 * 12 * 8 * 64 * 499


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm"])
@pytest.mark.parametrize("seed", PRUNED_SEEDS)
def test_pruned_configs_match_flop_counter_and_parameter_count(seed: int, model_type: str) -> None:
    torch.manual_seed(seed)
    model = Wav2Vec2Model(CONFIGS[f"wavlm_pruned{seed}" if model_type == "wavlm" else f"pruned{seed}"])
    seconds = 0.3 + 0.05 * seed
    report = assert_exact_match(model, seconds)
    model.train()
    assert measure_macs(model, seconds=seconds) == report.macs
    assert model.training


def test_too_short_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="seconds"):
        exact_cost(wav2vec2_base(), seconds=0.001)


def test_table_and_dict_report_totals() -> None:
    report = exact_cost(wav2vec2_base())
    as_dict = report.to_dict()
    assert as_dict["params"] == report.params and as_dict["cnn_macs"] == report.cnn_macs
    assert set(f"{name}_params" for name in COMPONENTS) <= set(as_dict)
    table = report.table()
    assert "94.371" in table and all(name in table for name in COMPONENTS)
    expected = expected_cost(attach_gates(Wav2Vec2Model(CONFIGS["pruned1"])))
    assert all(isinstance(value, (int, float)) for value in expected.to_dict().values())
    assert "total" in expected.table()


# --- expected cost ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fully_open_gates_give_the_exact_cost(name: str) -> None:
    config = CONFIGS[name]
    model = attach_gates(Wav2Vec2Model(config))
    open_all_gates(model)
    assert_same_cost(expected_cost(model, seconds=1.0), exact_cost(config, seconds=1.0))


def test_ungated_model_expects_its_exact_cost() -> None:
    config = random_pruned_config(3)
    assert_same_cost(expected_cost(Wav2Vec2Model(config)), exact_cost(config))


@pytest.mark.parametrize("name", ["base", "pruned2", "pruned3", "wavlm_base", "wavlm_pruned3"])
@pytest.mark.parametrize("target", ["params", "macs"])
def test_gradients_reach_every_log_alpha(name: str, target: str) -> None:
    model = attach_gates(Wav2Vec2Model(CONFIGS[name]))
    getattr(expected_cost(model), target).backward()
    for name, gate in iter_gates(model):
        assert gate.log_alpha.grad is not None, name
        assert bool((gate.log_alpha.grad > 0).all()), name


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm"])
@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_closing_any_gate_lowers_the_expected_cost(layer_norm_first: bool, model_type: str) -> None:
    config = random_pruned_config(0).replace(num_heads=[2, 3, 0, 1], ffn_dims=[0, 5, 7, 9])
    config = config.replace(layer_norm_first=layer_norm_first, model_type=model_type)
    model = attach_gates(Wav2Vec2Model(config))
    for name, gate in iter_gates(model):
        costs = []
        for value in (6.0, 3.0, 1.0, 0.0, -1.0, -3.0, -6.0):
            with torch.no_grad():
                gate.log_alpha[0] = value
            cost = expected_cost(model, seconds=0.5)
            costs.append((cost.params.item(), cost.macs.item()))
        params, macs = zip(*costs)
        assert all(a > b for a, b in zip(params, params[1:])), name
        assert all(a > b for a, b in zip(macs, macs[1:])), name


def test_transformer_only_gating_leaves_the_cnn_cost_exact() -> None:
    config = wav2vec2_base()
    model = attach_gates(Wav2Vec2Model(config), GateConfig(conv_channels=False))
    expected, exact = expected_cost(model), exact_cost(config)
    for name in ("cnn", "feature_projection", "pos_conv", "encoder_norm"):
        assert getattr(expected, name).params.item() == pytest.approx(getattr(exact, name).params, rel=1e-6)
        assert getattr(expected, name).macs.item() == pytest.approx(getattr(exact, name).macs, rel=1e-6)
    assert expected.transformer_params.item() < exact.transformer_params
    assert expected.transformer_macs.item() < exact.transformer_macs


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm"])
@pytest.mark.parametrize("layer_norm_first", [False, True])
@pytest.mark.parametrize("closed", ["unit_gates", "layer_gates"])
def test_closed_gates_give_the_cost_of_the_removed_branches(
    layer_norm_first: bool, closed: str, model_type: str
) -> None:
    """Closing a branch's gates removes its weights, output bias, (pre-LN) LayerNorm and WavLM gate unit from
    the cost."""
    config = random_pruned_config(3).replace(num_heads=[2, 3, 1, 4], ffn_dims=[6, 5, 7, 9])
    config = config.replace(layer_norm_first=layer_norm_first, model_type=model_type)
    model = attach_gates(Wav2Vec2Model(config))
    open_all_gates(model)
    attention, feed_forward = model.encoder.layers[1].attention, model.encoder.layers[2].feed_forward
    gates = (
        [attention.head_gate, feed_forward.unit_gate]
        if closed == "unit_gates"
        else [attention.layer_gate, feed_forward.layer_gate]
    )
    with torch.no_grad():
        for gate in gates:
            gate.log_alpha.fill_(-50.0)
    removed = config.replace(num_heads=[2, 0, 1, 4], ffn_dims=[6, 5, 0, 9])
    assert_same_cost(expected_cost(model, seconds=0.5), exact_cost(removed, seconds=0.5))


def test_a_head_closed_in_every_layer_takes_its_bias_table_column() -> None:
    """WavLM's relative position bias table keeps a head's column while some layer keeps the head."""
    head_ids = [[0, 1, 2, 3], [1, 3], [0, 1, 3], [1]]
    config = random_pruned_wavlm_config(1).replace(num_heads=[4, 2, 3, 1], head_ids=head_ids)
    model = attach_gates(Wav2Vec2Model(config))
    open_all_gates(model)
    with torch.no_grad():
        for layer, ids in zip(model.encoder.layers, head_ids):
            layer.attention.head_gate.log_alpha[ids.index(1)] = -50.0  # head 1 closed in every layer
        model.encoder.layers[0].attention.head_gate.log_alpha[3] = -50.0  # head 3 closed in layer 0 only
    removed = config.replace(num_heads=[2, 1, 2, 0], head_ids=[[0, 2], [3], [0, 3], []])
    assert removed.bias_table_heads() == [0, 2, 3]
    assert_same_cost(expected_cost(model, seconds=0.5), exact_cost(removed, seconds=0.5))
