"""Lagrangian controller: config validation, update counting, dual ascent, resume, and the budget that the
*removed* model has after a pruning run (every variant, task losses of very different scales)."""

from __future__ import annotations

import copy
import io
from typing import Dict, List, Tuple

import pytest
import torch

from espnet_prune.models import Wav2Vec2Model
from espnet_prune.pruning import PruningConfig, PruningController, attach_gates, exact_cost, remove_masks
from espnet_prune.pruning.budget import fit_to_targets
from espnet_prune.pruning.cost import measure_macs
from espnet_prune.pruning.gating import gate_parameters, iter_gates

from conftest import tiny_config

REFERENCE_SECONDS = 2.0


def _gated(cfg: PruningConfig, seed: int = 0) -> Tuple[Wav2Vec2Model, Wav2Vec2Model]:
    """A dense tiny model and a gated copy of it."""
    torch.manual_seed(seed)
    dense = Wav2Vec2Model(tiny_config()).eval()
    return dense, attach_gates(copy.deepcopy(dense), cfg.gates)


def prune_by_distillation(
    pruning: Dict,
    updates: int = 400,
    warmup: int = 150,
    loss_scale: float = 1.0,
    seed: int = 0,
    device: str = "cpu",
) -> Tuple[Wav2Vec2Model, Wav2Vec2Model, PruningController, List[Dict[str, float]]]:
    """A pruning run with a real task: the gated model learns to reproduce every hidden state of the dense
    one (mean squared error relative to the variance, times ``loss_scale``) on random audio.

    Returns the dense model, the gated model (eval mode), its controller and the logged stats per update,
    with the models and the controller on ``device`` (the audio is drawn on the CPU, the same on any device).
    """
    cfg = PruningConfig.from_dict(
        {"reference_seconds": REFERENCE_SECONDS, "warmup_updates": warmup, "gate_lr": 0.1, **pruning}
    )
    dense, model = _gated(cfg, seed)
    dense, model = dense.to(device), model.to(device)
    controller = PruningController(model, cfg).to(device)
    gates = {id(p) for p in gate_parameters(model)}
    optimizer = torch.optim.Adam(
        [
            {"params": [p for p in model.parameters() if id(p) not in gates], "lr": 1e-3},
            *controller.param_groups(model),
        ]
    )
    controller.attach(optimizer)
    model.train()
    controller.train()
    data = torch.Generator().manual_seed(seed + 1)
    history = []
    for _ in range(updates):
        waves = torch.randn(2, 6000, generator=data).to(device)
        with torch.no_grad():
            reference = dense(waves).hidden_states[1:]
        hidden = model(waves).hidden_states[1:]
        task = (
            loss_scale * sum(((h - r) ** 2).mean() / r.var() for h, r in zip(hidden, reference)) / len(hidden)
        )
        pruning_loss, stats = controller(model, task)
        optimizer.zero_grad()
        (task + pruning_loss).backward()
        optimizer.step()
        history.append({key: float(value) for key, value in stats.items()})
    return dense, model.eval(), controller.eval(), history


def _sparsity(dense: Wav2Vec2Model, config, quantity: str) -> float:
    before, after = exact_cost(dense.config, REFERENCE_SECONDS), exact_cost(config, REFERENCE_SECONDS)
    return 1.0 - getattr(after, quantity) / getattr(before, quantity)


# Per variant, written out independently of the controller's table: the quantities that must sit at
# their targets in the removed model. The task loss times 1000 stands for ESPnet's CTC loss, which is
# summed over tokens: the same settings must reach the same budget.
RUNS = [
    ({"variant": "size", "target_sparsity": 0.4}, {"params": 0.4}, 1.0),
    (
        {"variant": "sep_size", "cnn_target_sparsity": 0.3, "transformer_target_sparsity": 0.5},
        {"cnn_params": 0.3, "transformer_params": 0.5},
        1.0,
    ),
    ({"variant": "mac", "target_sparsity": 0.5}, {"macs": 0.5}, 1.0),
    ({"variant": "mac", "target_sparsity": 0.5}, {"macs": 0.5}, 1000.0),
    ({"variant": "mac", "target_sparsity": 0.7}, {"macs": 0.7}, 1.0),
    ({"variant": "transformer_only", "target_sparsity": 0.6}, {"transformer_params": 0.6}, 1.0),
]


@pytest.mark.parametrize(
    "pruning, targets, loss_scale",
    RUNS,
    ids=["size", "sep_size", "mac", "mac_summed_loss", "mac_0.7", "transformer_only"],
)
def test_removed_model_has_the_budget_of_each_variant(pruning, targets, loss_scale):
    dense, model, controller, history = prune_by_distillation(pruning, loss_scale=loss_scale)
    assert controller.num_updates == 400
    # The controller itself holds the eval masks near the target over the second half of the hold (no fit
    # yet); the fit then closes the rest.
    for quantity, final in targets.items():
        held = [row[f"exact_sparsity_{quantity}"] for row in history[-125:]]
        assert all(abs(s - final) <= 0.04 for s in held), (quantity, min(held), max(held))
    fits = fit_to_targets(model, controller.cfg.targets(), REFERENCE_SECONDS)
    removed, config = remove_masks(model)
    assert {fit.quantity: fit.target for fit in fits} == targets
    for quantity, final in targets.items():
        assert abs(_sparsity(dense, config, quantity) - final) <= 0.015, (quantity, fits)
    if pruning["variant"] == "transformer_only":
        assert config.conv_layers == dense.config.conv_layers
    # The cut follows the learned gates: every kept head has a larger log_alpha than every dropped head.
    gate = model.encoder.layers[0].attention.head_gate
    if 0 < config.num_heads[0] < 4:
        order = torch.argsort(gate.log_alpha, descending=True)
        kept = set(torch.nonzero(gate.deterministic() > 0).flatten().tolist())
        assert kept == set(order[: len(kept)].tolist())
    if targets.get("macs") == 0.7:
        assert 0 in config.num_heads or 0 in config.ffn_dims  # whole branches go at this budget


def test_eval_masks_cost_what_the_cost_model_expects_with_layer_gates_half_open():
    """A layer gate at keep probability 0.7 costs 70% of its branch in expectation; the eval masks keep
    70% of the branch's units instead of all of it (or none)."""
    cfg = PruningConfig.from_dict({"variant": "mac", "target_sparsity": 0.5})
    _, model = _gated(cfg)
    with torch.no_grad():
        for _, gate in iter_gates(model):
            gate.log_alpha.fill_(torch.logit(torch.tensor(0.7)) + gate.temperature * gate.log_ratio)
    model.eval()
    controller = PruningController(model, cfg).eval()
    _, stats = controller(model)
    assert stats["expected_sparsity_macs"] > 0.5  # layer x unit gates at 0.7 each remove about half
    assert abs(stats["exact_sparsity_macs"] - stats["expected_sparsity_macs"]) <= 0.03


def test_lambdas_ascend_once_per_optimizer_update_with_the_mean_gap_of_its_forward_passes():
    cfg = PruningConfig.from_dict(
        {"variant": "mac", "target_sparsity": 0.5, "warmup_updates": 0, "lambda_lr": 0.5}
    )
    _, model = _gated(cfg)
    controller = PruningController(model, cfg).train()
    optimizer = torch.optim.SGD(controller.param_groups(model), lr=0.0)
    controller.attach(optimizer)
    gaps = []
    for _ in range(3):  # gradient accumulation: three forward passes, then one step
        _, stats = controller(model)
        gaps.append(stats["exact_sparsity_macs"] - 0.5)
    assert torch.count_nonzero(controller.lambdas) == 0 and controller.num_updates == 0
    optimizer.step()
    gap = sum(float(g) for g in gaps) / 3
    assert gap < 0  # short of the target: lambda1 falls, which makes the model prune more
    assert controller.num_updates == 1
    assert float(controller.lambdas[0, 0]) == pytest.approx(0.5 * gap)
    assert float(controller.lambdas[0, 1]) == pytest.approx(10 * 0.5 * gap * gap)


def test_a_lambda_pushing_past_the_target_unwinds_in_proportion_to_its_size():
    cfg = PruningConfig.from_dict({"variant": "mac", "target_sparsity": 0.5, "warmup_updates": 0})
    _, model = _gated(cfg)
    controller = PruningController(model, cfg).train()
    with torch.no_grad():
        for gate in gate_parameters(model):
            gate.fill_(-10.0)  # everything closed: far past the target
        controller.lambdas[0, 0] = -4.0
    _, stats = controller(model)
    controller.update()
    gap = float(stats["exact_sparsity_macs"]) - 0.5
    assert gap > 0.3
    assert float(controller.lambdas[0, 0]) == pytest.approx(min(0.0, -4.0 + gap * 5.0), abs=1e-5)


def test_the_warm_up_counts_optimizer_steps_not_forward_passes():
    cfg = PruningConfig.from_dict({"variant": "size", "target_sparsity": 0.4, "warmup_updates": 10})
    _, model = _gated(cfg)
    controller = PruningController(model, cfg).train()
    optimizer = torch.optim.SGD(controller.param_groups(model), lr=0.0)
    controller.attach(optimizer)
    controller.attach(optimizer)  # attaching twice still counts once
    targets = []
    for step in range(24):
        targets.append(float(controller(model)[1]["target_params"]))
        if step % 3 == 2:  # accum_grad 3
            optimizer.step()
    assert controller.num_updates == 8
    assert (
        targets[:3] == [0.0, 0.0, 0.0]
        and targets[3] == pytest.approx(0.04)
        and targets[-1] == pytest.approx(0.28)
    )
    controller.eval()
    controller(model)
    assert controller.num_updates == 8 and int(controller.pending_passes) == 0  # eval calls do not count


def test_a_non_finite_task_loss_stays_out_of_the_loss_scale():
    cfg = PruningConfig.from_dict({"variant": "mac", "target_sparsity": 0.5})
    _, model = _gated(cfg)
    controller = PruningController(model, cfg).train()
    controller(model, torch.tensor(float("nan")))  # the first loss, before any finite one
    assert float(controller.loss_scale) == 0.0
    controller(model, torch.tensor(2.0))
    for bad in (float("nan"), float("inf")):  # ESPnet skips these updates (non-finite gradient norm)
        loss, stats = controller(model, torch.tensor(bad))
        assert float(controller.loss_scale) == 2.0 and float(stats["task_loss_scale"]) == 2.0
    controller(model, torch.tensor(4.0))
    assert float(controller.loss_scale) == pytest.approx(2.0 + 0.02 * (4.0 - 2.0))


def test_training_without_an_attached_optimizer_is_an_error():
    cfg = PruningConfig.from_dict({"variant": "mac", "target_sparsity": 0.5})
    _, model = _gated(cfg)
    controller = PruningController(model, cfg).train()
    with pytest.raises(RuntimeError, match=r"attach\(optimizer\)"):
        for _ in range(100):
            controller(model)


def test_state_dict_round_trip_gives_identical_next_step():
    pruning = {"variant": "mac", "target_sparsity": 0.5}
    _, model, controller, _ = prune_by_distillation(pruning, updates=20, warmup=50)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "controller": controller.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    cfg = controller.cfg
    _, restored_model = _gated(cfg, seed=123)
    restored_model.load_state_dict(saved["model"])
    restored = PruningController(restored_model, cfg)
    restored.load_state_dict(saved["controller"])
    assert restored.num_updates == 20
    for a, b in ((controller, restored), (model, restored_model)):
        a.train()
        b.train()
    task = torch.tensor(0.3)
    loss, stats = controller(model, task)
    restored_loss, restored_stats = restored(restored_model, task)
    assert torch.equal(loss, restored_loss)
    assert stats == restored_stats
    controller.update()
    restored.update()
    for key, value in controller.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"variant": "l1", "target_sparsity": 0.5}, "pruning.variant: 'l1'"),
        ({"target_sparsity": 1.2}, r"pruning.target_sparsity: must be a number in \(0, 1\)"),
        ({"target_sparsity": 0}, "pruning.target_sparsity"),
        ({"variant": "mac"}, r"pruning.target_sparsity: must be a number in \(0, 1\) .* got None"),
        ({"variant": "sep_size", "cnn_target_sparsity": 0.5}, "pruning.transformer_target_sparsity"),
        (
            {
                "variant": "sep_size",
                "cnn_target_sparsity": 0.5,
                "transformer_target_sparsity": 0.5,
                "target_sparsity": 0.5,
            },
            "pruning.target_sparsity: variant 'sep_size' does not use it",
        ),
        (
            {"target_sparsity": 0.5, "cnn_target_sparsity": 0.3},
            "pruning.cnn_target_sparsity: variant 'mac' does not use it; its target key",
        ),
        ({"target_sparsity": 0.5, "warmup_updates": -1}, "pruning.warmup_updates"),
        (
            {"target_sparsity": 0.5, "warmup_updates": "10k"},
            r"pruning.warmup_updates: expected an integer, got '10k'",
        ),
        ({"target_sparsity": 0.5, "gate_lr": "fast"}, r"pruning.gate_lr: expected a number, got 'fast'"),
        ({"targett": 0.5}, r"unknown key\(s\) \['targett'\]"),
        ({"target_sparsity": 0.5, "gates": {"heads": True}}, r"pruning.gates: unknown key\(s\) \['heads'\]"),
        (
            {"target_sparsity": 0.5, "gates": {"conv_channels": False}},
            "pruning.gates.conv_channels: variant 'mac'",
        ),
        (
            {"variant": "transformer_only", "target_sparsity": 0.5, "gates": {"conv_channels": True}},
            "pruning.gates.conv_channels: variant 'transformer_only' keeps the CNN whole",
        ),
    ],
)
def test_bad_pruning_config_names_the_key(bad, message):
    with pytest.raises(ValueError, match=message):
        PruningConfig.from_dict(bad)


def test_yaml_numbers_without_a_dot_are_the_numbers_the_user_meant():
    cfg = PruningConfig.from_dict({"variant": "mac", "target_sparsity": "5e-1", "gate_lr": "1e-2"})
    assert cfg.target_sparsity == 0.5 and cfg.gate_lr == 0.01


def test_config_round_trip_writes_only_the_targets_the_variant_uses():
    cfg = PruningConfig.from_dict(
        {"variant": "sep_size", "cnn_target_sparsity": 0.3, "transformer_target_sparsity": 0.5}
    )
    data = cfg.to_dict()
    assert "target_sparsity" not in data and data["gates"]["conv_channels"] is True
    assert PruningConfig.from_dict(data) == cfg
    only = PruningConfig.from_dict({"variant": "transformer_only", "target_sparsity": 0.5})
    assert only.gates.conv_channels is False and PruningConfig.from_dict(only.to_dict()) == only


def _smallest_model(heads_gated: bool, cnn_gated: bool) -> Wav2Vec2Model:
    """Written out by hand: the tiny model with every gated CNN layer at one channel and every gated
    attention / FFN branch gone (what the gates reach with all of them shut)."""
    dense = tiny_config()
    return Wav2Vec2Model(
        tiny_config(
            conv_layers=[(1 if cnn_gated else c, k, s) for c, k, s in dense.conv_layers],
            num_heads=[0 if heads_gated else h for h in dense.num_heads],
            ffn_dims=[0] * dense.num_layers,
        )
    )


def _transformer_params(model: Wav2Vec2Model) -> int:
    """Counted from the modules: every parameter outside the CNN feature extractor."""
    return sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in model.feature_extractor.parameters()
    )


@pytest.mark.parametrize(
    "pruning, key, heads_gated, cnn_gated",
    [
        ({"variant": "mac"}, "target_sparsity", True, True),
        (
            {"variant": "mac", "gates": {"attention_heads": False, "attention_layers": False}},
            "target_sparsity",
            False,
            True,
        ),
        ({"variant": "transformer_only"}, "target_sparsity", True, False),
    ],
)
def test_a_target_beyond_the_smallest_reachable_model_is_refused_naming_the_key(
    pruning, key, heads_gated, cnn_gated
):
    torch.manual_seed(0)
    dense = Wav2Vec2Model(tiny_config())
    smallest = _smallest_model(heads_gated, cnn_gated)
    if pruning["variant"] == "mac":
        quantity = "MACs at 2 s"
        reachable = 1.0 - measure_macs(smallest, REFERENCE_SECONDS) / measure_macs(dense, REFERENCE_SECONDS)
    else:
        quantity = "Transformer parameters"
        reachable = 1.0 - _transformer_params(smallest) / _transformer_params(dense)
    assert 0.05 < reachable < 0.99  # the floor is a real constraint of this geometry
    base = {"reference_seconds": REFERENCE_SECONDS, **pruning}
    beyond = PruningConfig.from_dict({**base, key: reachable + 0.005})
    with pytest.raises(
        ValueError, match=rf"{key}: .* keeps .* of its {quantity}, so at most {reachable:.3f}"
    ):
        PruningController(attach_gates(copy.deepcopy(dense), beyond.gates), beyond)
    within = PruningConfig.from_dict({**base, key: reachable - 0.005})
    PruningController(attach_gates(copy.deepcopy(dense), within.gates), within)
