"""Lagrangian controller: config validation, warm-up, convergence to targets, exact resume."""

import io

import pytest
import torch

from espnet_prune.models import Wav2Vec2Config, Wav2Vec2Model
from espnet_prune.pruning.controller import PruningConfig, PruningController
from espnet_prune.pruning.gating import attach_gates, gate_parameters


def _model(cfg: PruningConfig, seed: int = 0) -> Wav2Vec2Model:
    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        conv_layers=[(64, 10, 5), (64, 3, 2), (64, 3, 2), (64, 2, 2)],
        embed_dim=64,
        num_heads=[4] * 4,
        head_dim=16,
        ffn_dims=[256] * 4,
        pos_conv_kernel=16,
        pos_conv_groups=4,
    )
    return attach_gates(Wav2Vec2Model(config), cfg.gates)


def _optimizer(model: Wav2Vec2Model, controller: PruningController) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        [
            {"params": list(gate_parameters(model)), "lr": 0.05},
            {"params": controller.lambda_parameters(), "lr": 0.05},
        ]
    )


def _step(model, controller, optimizer):
    optimizer.zero_grad()
    loss, stats = controller(model)
    loss.backward()
    optimizer.step()
    return loss, stats


@pytest.mark.parametrize(
    "pruning",
    [
        {"variant": "size", "target_sparsity": 0.4},
        {"variant": "mac", "target_sparsity": 0.5},
        {"variant": "transformer_only", "target_sparsity": 0.6},
        {"variant": "sep_size", "cnn_target_sparsity": 0.3, "transformer_target_sparsity": 0.5},
    ],
)
def test_each_variant_reaches_its_final_target_after_warmup(pruning):
    cfg = PruningConfig.from_dict({**pruning, "warmup_updates": 300, "reference_seconds": 2.0})
    model = _model(cfg)
    model.train()
    controller = PruningController(model, cfg).train()
    optimizer = _optimizer(model, controller)
    for _ in range(600):
        _, stats = _step(model, controller, optimizer)
    assert controller.num_updates == 600
    for quantity, final in cfg.targets():
        assert stats[f"target_{quantity}"] == pytest.approx(final)
        assert abs(float(stats[f"sparsity_{quantity}"]) - final) <= 0.02, (quantity, stats)
    if cfg.variant == "transformer_only":
        assert not any("channel_gate" in name for name, _ in model.named_parameters())


def test_lambdas_ascend_when_the_model_is_short_of_its_target():
    cfg = PruningConfig.from_dict({"variant": "mac", "target_sparsity": 0.5, "warmup_updates": 0})
    model = _model(cfg)
    controller = PruningController(model, cfg)
    loss, stats = controller(model)
    loss.backward()
    gap = float(stats["sparsity_macs"]) - 0.5
    assert gap < 0
    # Gradient ascent on lambda1: the stored gradient is the negated d(loss)/d(lambda1) = -gap.
    assert controller.lambdas.grad[0, 0] == pytest.approx(-gap)
    assert controller.lambdas.grad[0, 1] == pytest.approx(-gap * gap)


def test_target_warms_up_linearly_in_updates_with_gradient_accumulation():
    cfg = PruningConfig.from_dict({"variant": "size", "target_sparsity": 0.4, "warmup_updates": 10})
    model = _model(cfg)
    controller = PruningController(model, cfg).train()
    controller.accum_grad = 2
    targets = [float(controller(model)[1]["target_params"]) for _ in range(24)]
    assert targets[0] == 0.0 and targets[1] == 0.0  # two forward passes make one update
    assert targets[2] == pytest.approx(0.04) and targets[10] == pytest.approx(0.2)
    assert targets[-1] == pytest.approx(0.4)
    controller.eval()
    controller(model)
    assert int(controller.forward_passes) == 24  # eval calls do not count


def test_state_dict_round_trip_gives_identical_next_step():
    cfg = PruningConfig.from_dict({"variant": "mac", "target_sparsity": 0.5, "warmup_updates": 50})
    model = _model(cfg)
    controller = PruningController(model, cfg).train()
    optimizer = _optimizer(model, controller)
    for _ in range(20):
        _step(model, controller, optimizer)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "controller": controller.state_dict(), "optim": optimizer.state_dict()}, buffer)
    expected_loss, expected_stats = _step(model, controller, optimizer)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    restored_model = _model(cfg, seed=123)
    restored_model.load_state_dict(saved["model"])
    restored = PruningController(restored_model, cfg).train()
    restored.load_state_dict(saved["controller"])
    restored_optimizer = _optimizer(restored_model, restored)
    restored_optimizer.load_state_dict(saved["optim"])
    assert restored.num_updates == 20
    loss, stats = _step(restored_model, restored, restored_optimizer)
    assert torch.equal(loss, expected_loss)
    assert torch.equal(restored.lambdas, controller.lambdas)
    assert stats["target_macs"] == expected_stats["target_macs"]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"variant": "l1"}, "pruning.variant: 'l1'"),
        ({"target_sparsity": 1.2}, r"pruning.target_sparsity: must be a number in \(0, 1\)"),
        ({"target_sparsity": 0}, "pruning.target_sparsity"),
        ({"variant": "sep_size", "cnn_target_sparsity": 0.5}, "pruning.transformer_target_sparsity"),
        ({"warmup_updates": -1}, "pruning.warmup_updates"),
        ({"targett": 0.5}, r"unknown key\(s\) \['targett'\]"),
        ({"gates": {"heads": True}}, r"pruning.gates: unknown key\(s\) \['heads'\]"),
        ({"variant": "mac", "gates": {"conv_channels": False}}, "use transformer_only"),
    ],
)
def test_bad_pruning_config_names_the_key(bad, message):
    with pytest.raises(ValueError, match=message):
        PruningConfig.from_dict(bad)
