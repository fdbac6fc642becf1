"""Hard-concrete gates: sampling statistics, eval masks, gradients, attachment."""

import math

import pytest
import torch

from espnet_prune.models import Wav2Vec2Config, Wav2Vec2Model
from espnet_prune.pruning.gating import GateConfig, attach_gates, iter_gates
from espnet_prune.pruning.hard_concrete import HardConcrete

from conftest import tiny_config


def test_keep_prob_matches_monte_carlo_frequency_of_nonzero_samples():
    torch.manual_seed(0)
    gate = HardConcrete(6)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-4.0, -1.5, -0.2, 0.3, 1.0, 3.0]))
    gate.train()
    samples = torch.stack([gate() for _ in range(20000)])
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    frequency = (samples > 0).float().mean(0)
    assert torch.allclose(frequency, gate.keep_prob().detach(), atol=0.015)


def test_initial_keep_probability_is_configurable_and_close_to_one():
    gate = HardConcrete(1000, init_keep_prob=0.95, init_std=0.0)
    assert torch.allclose(gate.keep_prob(), torch.full((1000,), 0.95), atol=1e-5)
    assert gate.num_kept() == 950


def test_each_training_call_draws_a_fresh_sample_and_eval_is_deterministic():
    torch.manual_seed(1)
    gate = HardConcrete(64, init_keep_prob=0.5)
    gate.train()
    assert not torch.equal(gate(), gate())
    gate.eval()
    assert torch.equal(gate(), gate())


def test_eval_mask_keeps_expected_count_with_largest_log_alpha():
    gate = HardConcrete(10)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.linspace(-6.0, 6.0, 10))
    gate.eval()
    mask = gate()
    kept = int(round(float(gate.keep_prob().sum())))
    assert int((mask > 0).sum()) == kept
    assert torch.equal(mask > 0, torch.arange(10) >= 10 - kept)
    # Test-time value of Louizos et al.: clamp(sigmoid(log_alpha) * (r - l) + l, 0, 1).
    expected = (torch.sigmoid(gate.log_alpha) * 1.2 - 0.1).clamp(0, 1)
    assert torch.allclose(mask[mask > 0], expected[mask > 0].detach())


def test_min_keep_holds_even_when_all_gates_are_closed():
    gate = HardConcrete(8, min_keep=1)
    with torch.no_grad():
        gate.log_alpha.fill_(-20.0)
    assert gate.num_kept() == 1


@pytest.mark.parametrize("keep, expected", [(0.30, 24), (0.24, 16), (0.97, 80), (0.93, 72), (0.001, 8)])
def test_multiple_of_rounds_the_eval_mask_to_the_nearest_multiple(keep, expected):
    # 80 units (a multiple of 8) and 77 units (all kept once the nearest multiple would exceed them)
    gate = HardConcrete(80, init_keep_prob=keep, init_std=0.0, min_keep=1, multiple_of=8)
    assert gate.num_kept() == expected  # 80 * keep = 24.0, 19.2, 77.6, 74.4, 0.08 (min_keep 1 -> 8)
    assert HardConcrete(77, init_keep_prob=0.98, init_std=0.0, multiple_of=8).num_kept() == 77
    assert HardConcrete(77, init_keep_prob=0.9, init_std=0.0, multiple_of=8).num_kept() == 72
    assert HardConcrete(80, init_keep_prob=0.001, init_std=0.0, multiple_of=8).num_kept() == 0


def test_gradient_reaches_log_alpha_through_a_sample():
    torch.manual_seed(0)
    gate = HardConcrete(16, init_keep_prob=0.6)
    gate.train()
    gate().sum().backward()
    assert gate.log_alpha.grad is not None and gate.log_alpha.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "bad", [{"init_keep_prob": 1.0}, {"stretch": (0.0, 1.1)}, {"num_units": 0}, {"multiple_of": 0}]
)
def test_bad_gate_arguments_name_the_argument(bad):
    args = {"num_units": 4, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        HardConcrete(**args)


def _tiny_config(model_type: str = "wav2vec2") -> Wav2Vec2Config:
    """The shared tiny model with two CNN and two Transformer layers, the second without FFN."""
    return tiny_config(
        model_type=model_type,
        conv_layers=[(16, 10, 5), (16, 3, 2)],
        num_heads=[4, 2],
        ffn_dims=[48, 0],
        pos_conv_kernel=8,
    )


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm"])
def test_attach_gates_puts_one_gate_per_selected_structure(model_type):
    model = attach_gates(Wav2Vec2Model(_tiny_config(model_type)), GateConfig())
    sizes = {name: gate.num_units for name, gate in iter_gates(model)}
    assert sizes == {
        "feature_extractor.conv_layers.0.channel_gate": 16,
        "feature_extractor.conv_layers.1.channel_gate": 16,
        "encoder.layers.0.attention.head_gate": 4,
        "encoder.layers.0.attention.layer_gate": 1,
        "encoder.layers.0.feed_forward.unit_gate": 48,
        "encoder.layers.0.feed_forward.layer_gate": 1,
        "encoder.layers.1.attention.head_gate": 2,
        "encoder.layers.1.attention.layer_gate": 1,
    }
    transformer_only = attach_gates(
        Wav2Vec2Model(_tiny_config()), GateConfig(conv_channels=False, ffn_layers=False)
    )
    names = [name for name, _ in iter_gates(transformer_only)]
    assert not any("conv_layers" in n or "feed_forward.layer_gate" in n for n in names)
    with pytest.raises(ValueError, match="already has gates"):
        attach_gates(transformer_only)


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm"])
def test_fully_open_gates_leave_the_eval_output_unchanged(model_type):
    torch.manual_seed(0)
    dense = Wav2Vec2Model(_tiny_config(model_type)).eval()
    gated = Wav2Vec2Model(_tiny_config(model_type))
    gated.load_state_dict(dense.state_dict())
    attach_gates(gated)
    for _, gate in iter_gates(gated):
        with torch.no_grad():
            gate.log_alpha.fill_(math.log(1e6))
    gated.eval()
    wave = torch.randn(1, 4000)
    assert torch.allclose(dense(wave).last_hidden_state, gated(wave).last_hidden_state, atol=1e-5)
