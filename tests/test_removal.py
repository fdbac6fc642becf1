"""Mask removal is exact: the removed model equals the gated eval model, and costs match."""

from typing import Optional

import pytest
import torch

from espnet_prune.models import Wav2Vec2Config, Wav2Vec2Model
from espnet_prune.pruning.cost import exact_cost, measure_macs, measure_params
from espnet_prune.pruning.gating import GateConfig, attach_gates, iter_gates
from espnet_prune.pruning.removal import pruned_config, remove_masks

from conftest import tiny_config


def ragged_config(mode: str, layer_norm_first: bool) -> Wav2Vec2Config:
    """The shared tiny model with ragged sizes (conv channels, heads, FFN units differ between layers)."""
    return tiny_config(
        conv_layers=[(32, 10, 5), (24, 3, 2), (32, 3, 2), (16, 2, 2)],
        extractor_mode=mode,
        conv_bias=mode == "layer_norm",
        embed_dim=48,
        num_heads=[4, 4, 3, 4],
        head_dim=12,
        ffn_dims=[64, 64, 40, 64],
        layer_norm_first=layer_norm_first,
    )


# Gates shut (the units selected) on top of the random ones, so that every kind of structure is cut.
SHUT = {
    "encoder.layers.1.attention.head_gate": slice(None),  # every head of layer 1 pruned
    "encoder.layers.2.feed_forward.layer_gate": slice(None),  # whole FFN of layer 2 pruned
    "encoder.layers.3.feed_forward.unit_gate": slice(None),  # every unit of layer 3 pruned
    "feature_extractor.conv_layers.1.channel_gate": slice(None),  # CNN layer down to 1 channel
    "feature_extractor.conv_layers.3.channel_gate": slice(2, None),  # last CNN layer: few channels
}


def randomly_gated(config: Wav2Vec2Config, seed: int, gates: Optional[GateConfig] = None) -> Wav2Vec2Model:
    """``config`` with ``gates`` (default: every structure gated) at random keep probabilities, and the
    ``SHUT`` gates that it has shut; in eval mode."""
    torch.manual_seed(seed)
    model = attach_gates(Wav2Vec2Model(config), gates or GateConfig())
    with torch.no_grad():
        for name, gate in iter_gates(model):
            gate.log_alpha.normal_(0.5, 2.0)
            if name in SHUT:
                gate.log_alpha[SHUT[name]] = -10.0
    return model.eval()


@pytest.mark.parametrize("mode", ["group_norm", "layer_norm"])
@pytest.mark.parametrize("layer_norm_first", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_removed_model_equals_gated_eval_model(mode, layer_norm_first, seed):
    gated = randomly_gated(ragged_config(mode, layer_norm_first), seed)
    removed, config = remove_masks(gated)
    assert config.num_heads[1] == 0 and config.ffn_dims[2] == 0 and config.ffn_dims[3] == 0
    assert config.conv_layers[1][0] == 1 and config.conv_layers[3][0] <= 2
    assert not list(iter_gates(removed))

    torch.manual_seed(seed + 10)
    waves, lengths = torch.randn(3, 9000), torch.tensor([9000, 7000, 5123])
    with torch.no_grad():
        expected, actual = gated(waves, lengths), removed(waves, lengths)
    valid = ~expected.padding_mask
    assert torch.equal(expected.lengths, actual.lengths)
    for mine, theirs in zip(
        expected.hidden_states + [expected.last_hidden_state],
        actual.hidden_states + [actual.last_hidden_state],
    ):
        assert (mine - theirs)[valid].abs().max() <= 1e-4

    # The removed model's measured size and MACs are the cost model's numbers for its config.
    report = exact_cost(config, seconds=1.0)
    assert measure_params(removed) == report.params
    assert measure_macs(removed, seconds=1.0) == pytest.approx(report.macs, rel=0.01)
    assert pruned_config(gated) == config
    assert report.params < exact_cost(gated.config, seconds=1.0).params


@pytest.mark.parametrize("mode", ["group_norm", "layer_norm"])
@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_removed_wavlm_equals_gated_eval_model(mode, layer_norm_first):
    """WavLM: the kept heads keep their pretrained relative-position-bias columns and input slices; the bias
    table, shared by all layers, outlives the first layer's attention and loses the column no layer keeps."""
    config = ragged_config(mode, layer_norm_first).replace(
        model_type="wavlm", num_buckets=32, max_distance=40
    )
    gated = randomly_gated(config, seed=2)
    layers = gated.encoder.layers
    with torch.no_grad():
        for name, parameter in gated.named_parameters():  # attention patterns that depend on the input
            if not name.endswith("log_alpha"):
                parameter.add_(0.1 * torch.randn_like(parameter))
        # Most of the last CNN layer kept: frames as varied as the attention needs to show its bias.
        gated.feature_extractor.conv_layers[3].channel_gate.log_alpha.normal_(1.5, 1.0)
        layers[0].attention.layer_gate.log_alpha.fill_(-10.0)  # the first layer's whole attention pruned
        layers[2].attention.head_gate.log_alpha.copy_(torch.tensor([2.0, -10.0, -10.0]))  # keeps head 0
        layers[3].attention.head_gate.log_alpha.copy_(
            torch.tensor([-10.0, 2.0, -10.0, 2.0])
        )  # keeps heads 1, 3
        for layer in layers[2:]:
            layer.attention.layer_gate.log_alpha.fill_(1.5)  # kept, with a soft value to fold
    removed, pruned = remove_masks(gated)
    assert pruned.num_heads == [0, 0, 1, 2] and pruned.head_ids == [[], [], [0], [1, 3]]
    assert removed.encoder.rel_attn_embed.weight.shape == (32, 3)  # columns of heads 0, 1, 3
    assert not list(iter_gates(removed))

    torch.manual_seed(12)
    waves, lengths = torch.randn(3, 9000), torch.tensor([9000, 7000, 5123])
    with torch.no_grad():
        expected, actual = gated(waves, lengths), removed(waves, lengths)
    valid = ~expected.padding_mask
    for mine, theirs in zip(
        expected.hidden_states + [expected.last_hidden_state],
        actual.hidden_states + [actual.last_hidden_state],
    ):
        assert (mine - theirs)[valid].abs().max() <= 1e-4

    report = exact_cost(pruned, seconds=1.0)
    assert measure_params(removed) == report.params
    assert measure_macs(removed, seconds=1.0) == pytest.approx(report.macs, rel=0.01)
    assert pruned_config(gated) == pruned

    # Pruning the removed model again composes the head indices.
    regated = attach_gates(removed, GateConfig(conv_channels=False, ffn_units=False))
    with torch.no_grad():
        for _, gate in iter_gates(regated):
            gate.log_alpha.fill_(10.0)
        regated.encoder.layers[3].attention.head_gate.log_alpha[0] = -10.0  # drops pretrained head 1
    assert pruned_config(regated.eval()).head_ids == [[], [], [0], [3]]


def test_removal_with_multiple_of_8_keeps_aligned_sizes_and_stays_exact():
    config = ragged_config("layer_norm", True)
    torch.manual_seed(3)
    gated = attach_gates(Wav2Vec2Model(config), GateConfig(multiple_of=8))
    with torch.no_grad():
        for _, gate in iter_gates(gated):
            gate.log_alpha.normal_(0.5, 2.0)
    gated.eval()
    removed, pruned = remove_masks(gated)
    widths = [c[0] for c in pruned.conv_layers] + [d for d in pruned.ffn_dims]
    originals = [c[0] for c in config.conv_layers] + list(config.ffn_dims)
    assert all(w % 8 == 0 or w == o for w, o in zip(widths, originals)) and widths != originals
    waves, lengths = torch.randn(2, 8000), torch.tensor([8000, 6100])
    with torch.no_grad():
        expected, actual = gated(waves, lengths), removed(waves, lengths)
    valid = ~expected.padding_mask
    assert (expected.last_hidden_state - actual.last_hidden_state)[valid].abs().max() <= 1e-4


def test_removal_leaves_the_gated_model_unchanged_and_keeps_ungated_structures_whole():
    config = ragged_config("group_norm", False)
    torch.manual_seed(0)
    model = attach_gates(Wav2Vec2Model(config), GateConfig(conv_channels=False, ffn_units=False))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    _, removed_config = remove_masks(model)
    assert removed_config.conv_layers == config.conv_layers
    assert all(d in (0, config.ffn_dims[i]) for i, d in enumerate(removed_config.ffn_dims))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
