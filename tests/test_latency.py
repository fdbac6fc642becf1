"""HJ-Latency: the latency table (format, fit, interpolation, validation), the expected latency under the
gates, the profiler's table on a tiny geometry (structure only, never timings) and a pruning run that
reaches its latency target after removal."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import List

import pytest
import torch
from test_controller import REFERENCE_SECONDS, prune_by_distillation

from espnet_prune.bin import profile
from espnet_prune.models import Wav2Vec2Config, Wav2Vec2Model
from espnet_prune.models.config import wav2vec2_base
from espnet_prune.profiling import PROBE_SHAPES, SizeGrid, fit_grid, probe_shapes, size_grid
from espnet_prune.pruning import PruningConfig, PruningController, attach_gates, pruned_config, remove_masks
from espnet_prune.pruning.budget import MEASURED_TOLERANCE, calibrate_latency, fit_to_targets
from espnet_prune.pruning.controller import CONTROLLED
from espnet_prune.pruning.cost import exact_cost, frame_counts
from espnet_prune.pruning.gating import GateConfig, iter_gates
from espnet_prune.pruning.latency import (
    TABLE_FORMAT,
    Curve,
    LatencyTable,
    Surface,
    cpu_name,
    exact_latency_ms,
    expected_latency_ms,
    geometry,
    monotone_fit,
    monotone_fit_2d,
)

from conftest import tiny_config


def synthetic_table(config: Wav2Vec2Config, seconds: float = REFERENCE_SECONDS) -> LatencyTable:
    """A table for ``config`` from formulas shaped like measurements (CNN layer 0 costly per channel, a
    launch cost per structure), stamped with this machine, so that nothing depends on timings."""
    frames = frame_counts(config, seconds)
    surfaces: List[Surface] = []
    previous = None
    for i, (channels, kernel, _) in enumerate(config.conv_layers):
        in_sizes = [1] if previous is None else size_grid(previous, 3, smallest=1)
        out_sizes = size_grid(channels, 3, smallest=1)
        per_channel = 0.02 if i == 0 else 0.0
        ms = [
            [0.1 + per_channel * o + 1e-7 * c * o * kernel * frames[i + 1] for o in out_sizes]
            for c in in_sizes
        ]
        surfaces.append(Surface(in_sizes, out_sizes, ms, ms))
        previous = channels

    def curve(full: int, smallest: int, launch: float, per_unit: float) -> Curve:
        sizes = list(range(full + 1)) if full <= 16 else size_grid(full, 4, smallest)
        ms = [0.0 if s == 0 else launch + per_unit * s for s in sizes]
        return Curve(sizes, ms, ms)

    return LatencyTable(
        format=TABLE_FORMAT,
        device="cpu",
        device_name=cpu_name(),
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        date="2026-12-02T00:00:00+00:00",
        load_average="0.00 0.00 0.00",
        seconds=seconds,
        sample_rate=16000,
        geometry=geometry(config),
        alignment=8,
        rounds=1,
        cnn=surfaces,
        feature_projection=curve(previous, 1, 0.05, 0.002),
        attention=curve(max(config.num_heads), 0, 0.1, 0.15),
        ffn=curve(max(config.ffn_dims), 0, 0.05, 0.004),
        fixed_ms={"pos_conv": 0.3, "other": 0.2},
        dense_measured_ms=10.0,
    )


@pytest.fixture
def table_path(tmp_path: Path) -> Path:
    path = tmp_path / "latency.json"
    synthetic_table(tiny_config()).save(path)
    return path


# --- fit and interpolation -------------------------------------------------------------------------------


def test_monotone_fit_pools_the_dips_of_noisy_medians():
    assert monotone_fit([1.0, 3.0, 2.0, 4.0]) == [1.0, 2.5, 2.5, 4.0]
    assert monotone_fit([5.0, 1.0, 0.0]) == [2.0, 2.0, 2.0]
    surface = monotone_fit_2d([[1.0, 4.0, 3.0], [0.5, 5.0, 6.0], [2.0, 1.0, 7.0]])
    for row in surface:
        assert row == sorted(row)
    for column in zip(*surface):
        assert list(column) == sorted(column)


def test_curves_are_exact_at_grid_points_linear_between_and_step_when_misaligned():
    curve = Curve(
        sizes=[0, 8, 16, 32], ms=[0.0, 2.0, 3.0, 7.0], measured_ms=[0.0, 2.0, 3.0, 7.0], misaligned_factor=1.5
    )
    for size, ms in zip(curve.sizes, curve.ms):
        assert curve(size, 8) == ms
    assert curve(24, 8) == pytest.approx(5.0)  # aligned, between grid points
    assert curve(12, 8) == pytest.approx(1.5 * 2.5)  # off the alignment
    surface = Surface(
        in_sizes=[1, 8], out_sizes=[8, 16], ms=[[1.0, 2.0], [3.0, 5.0]], measured_ms=[[1.0, 2.0], [3.0, 5.0]]
    )
    for i, c_in in enumerate(surface.in_sizes):
        for j, c_out in enumerate(surface.out_sizes):
            assert surface(c_in, c_out, 8) == surface.ms[i][j]
    assert surface(4.5, 12, 1) == pytest.approx((1.0 + 2.0 + 3.0 + 5.0) / 4)  # bilinear at the cell's centre


def test_table_latency_of_a_tensor_size_has_the_curves_slope_as_gradient():
    curve = Curve(sizes=[0, 8, 16], ms=[0.0, 2.0, 5.0], measured_ms=[0.0, 2.0, 5.0])
    size = torch.tensor(12.0, requires_grad=True)
    value = curve(size, 8)
    value.backward()
    assert value.item() == pytest.approx(3.5) and float(size.grad) == pytest.approx(3.0 / 8)


# --- validation -------------------------------------------------------------------------------------------


def test_a_missing_table_names_the_key_and_the_file(tmp_path: Path):
    path = tmp_path / "nowhere.json"
    with pytest.raises(FileNotFoundError, match=f"latency_table: no latency table at {path}"):
        LatencyTable.load(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("ffn"), r"latency.json: missing key\(s\) \['ffn'\]"),
        (lambda d: d.update(threads="two"), r"latency.json: threads: expected an integer"),
        (lambda d: d.update(format="other/1"), "latency.json: format: expected"),
        (
            lambda d: d["ffn"].update(ms=[0.0, 2.0, 1.0] + d["ffn"]["ms"][3:]),
            "latency.json: ffn: ms: fitted times must be",
        ),
        (lambda d: d["cnn"].pop(), "cnn: 3 layers, but geometry.conv_layers has 4"),
        (
            lambda d: d["attention"].update(misaligned_factor=0.5),
            "latency.json: attention: misaligned_factor: must be >= 1",
        ),
    ],
)
def test_a_bad_table_names_the_file_and_key(table_path: Path, change, message):
    data = json.loads(table_path.read_text())
    change(data)
    table_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        LatencyTable.load(table_path)


def test_the_table_of_another_geometry_is_an_error_and_another_machine_a_warning(table_path: Path):
    table = LatencyTable.load(table_path)
    assert table == synthetic_table(tiny_config())  # the file round trip keeps every value
    with pytest.raises(
        ValueError, match=r"latency_table: .*another geometry \(ffn_dims: table \[128, 128, 128, 128\]"
    ):
        table.check_geometry(tiny_config(ffn_dims=[64] * 4))
    other = dataclasses.replace(table, threads=table.threads + 1)
    with pytest.warns(UserWarning, match=rf"measured on another machine \({table.threads + 1} thread"):
        other.warn_machine_mismatch()


# --- expected and exact latency ---------------------------------------------------------------------------


def _gated_tiny() -> Wav2Vec2Model:
    torch.manual_seed(0)
    return attach_gates(Wav2Vec2Model(tiny_config()), GateConfig(conv_channels=True))


def test_expected_latency_is_the_table_value_when_every_gate_is_decided():
    table = synthetic_table(tiny_config())
    model = _gated_tiny().eval()
    with torch.no_grad():
        for _, gate in iter_gates(model):
            gate.log_alpha.fill_(30.0)  # every unit kept for sure
    dense = exact_latency_ms(table, tiny_config())
    assert expected_latency_ms(table, model).item() == pytest.approx(dense, rel=1e-5)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, gate in iter_gates(model):  # a random 0/1 pattern, every CNN layer keeping a channel
            closed = torch.rand(gate.num_units, generator=generator) < 0.5
            closed[0] = closed[0] and gate.num_units > 1
            gate.log_alpha.copy_(torch.where(closed, -30.0, 30.0))
    exact = exact_latency_ms(table, pruned_config(model))
    assert exact < 0.9 * dense
    assert expected_latency_ms(table, model).item() == pytest.approx(exact, rel=1e-5)


def test_expected_latency_has_a_gradient_for_every_gated_structure():
    table = synthetic_table(tiny_config())
    model = _gated_tiny()
    expected_latency_ms(table, model).backward()
    for name, gate in iter_gates(model):
        assert gate.log_alpha.grad is not None and float(gate.log_alpha.grad.abs().sum()) > 0, name


# --- controller -------------------------------------------------------------------------------------------


def test_the_latency_variant_controls_the_table_latency():
    assert CONTROLLED["latency"] == {"target_sparsity": "latency"}


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            {"variant": "latency", "target_sparsity": 0.5},
            "pruning.latency_table: variant 'latency' needs the path",
        ),
        (
            {"variant": "mac", "target_sparsity": 0.5, "latency_table": "t.json"},
            "pruning.latency_table: only variant 'latency' uses it",
        ),
    ],
)
def test_the_latency_table_key_belongs_to_the_latency_variant(bad, message):
    with pytest.raises(ValueError, match=message):
        PruningConfig.from_dict(bad)


def test_the_controller_checks_the_table(tmp_path: Path, table_path: Path):
    def controller(
        config: Wav2Vec2Config, path: Path, seconds: float = REFERENCE_SECONDS
    ) -> PruningController:
        cfg = PruningConfig.from_dict(
            {
                "variant": "latency",
                "target_sparsity": 0.5,
                "latency_table": str(path),
                "reference_seconds": seconds,
            }
        )
        return PruningController(attach_gates(Wav2Vec2Model(config), cfg.gates), cfg)

    with pytest.raises(FileNotFoundError, match="latency_table: no latency table at .*missing.json"):
        controller(tiny_config(), tmp_path / "missing.json")
    with pytest.raises(ValueError, match="latency_table: the table was measured for another geometry"):
        controller(tiny_config(num_heads=[2] * 4), table_path)
    with pytest.raises(ValueError, match="reference_seconds: 4, but latency table .* was measured at 2 s"):
        controller(tiny_config(), table_path, seconds=4.0)
    built = controller(tiny_config(), table_path).eval()
    assert built.dense_costs == [
        pytest.approx(exact_latency_ms(synthetic_table(tiny_config()), tiny_config()))
    ]
    _, stats = built(_gated_tiny())
    assert {"expected_latency_ms", "exact_latency_ms", "exact_sparsity_latency", "lambda1_latency"} <= set(
        stats
    )


def test_removed_model_has_the_latency_budget(table_path: Path):
    pruning = {"variant": "latency", "target_sparsity": 0.5, "latency_table": str(table_path)}
    dense, model, controller, history = prune_by_distillation(pruning)
    # The controller holds the eval masks near the target (a bit looser than for MACs: the launch cost of a
    # branch makes its last head a 3-point step of this table); the fit then closes the rest.
    held = [row["exact_sparsity_latency"] for row in history[-125:]]
    assert all(abs(s - 0.5) <= 0.05 for s in held), (min(held), max(held))
    table = controller.latency_table
    fits = fit_to_targets(model, controller.cfg.targets(), REFERENCE_SECONDS, table)
    assert {fit.quantity: fit.target for fit in fits} == {"latency": 0.5}
    _, config = remove_masks(model)
    removed = 1.0 - exact_latency_ms(table, config) / exact_latency_ms(table, dense.config)
    assert abs(removed - 0.5) <= 0.015, fits


def test_calibration_fits_the_cut_to_the_measured_latency_where_the_table_misses():
    config = tiny_config()
    table = synthetic_table(config)
    # The "machine": CNN layer 0 takes three times what the table says, as a table can miss a structure.
    layer0 = table.cnn[0]
    slow = [[3 * v for v in row] for row in layer0.ms]
    machine = dataclasses.replace(
        table, cnn=[dataclasses.replace(layer0, ms=slow, measured_ms=slow), *table.cnn[1:]]
    )

    def measured_sparsity(shape: Wav2Vec2Config) -> float:
        return 1.0 - exact_latency_ms(machine, shape) / exact_latency_ms(machine, config)

    model = _gated_tiny()
    with torch.no_grad():  # distinct keep probabilities: a cut for almost any sparsity
        for _, gate in iter_gates(model):
            gate.log_alpha.copy_(2.0 * torch.randn(gate.num_units))
    by_table = copy.deepcopy(model)
    fit_to_targets(by_table, [("latency", 0.5)], REFERENCE_SECONDS, table)
    miss = measured_sparsity(pruned_config(by_table)) - 0.5
    assert abs(miss) > 2 * MEASURED_TOLERANCE  # the table's own fit misses on this machine

    history = calibrate_latency(
        model, 0.5, REFERENCE_SECONDS, table, lambda shape: 1.0 - measured_sparsity(shape), rounds=4
    )
    assert history[0].table_target == 0.5 and history[0].measured_sparsity == pytest.approx(0.5 + miss)
    assert history[1].table_target == pytest.approx(0.5 - miss)  # moved by the miss
    final = measured_sparsity(pruned_config(model))
    assert abs(final - 0.5) <= MEASURED_TOLERANCE or len(history) == 4
    assert abs(final - 0.5) < abs(miss) / 3
    assert final == pytest.approx(min((h.measured_sparsity for h in history), key=lambda m: abs(m - 0.5)))


# --- the profiler's table (structure only: timings here mean nothing) -----------------------------------


def test_profile_writes_a_latency_table_of_the_geometry(tmp_path: Path, capsys):
    config = tiny_config(conv_layers=[(16, 10, 5), (16, 3, 2)], num_heads=[2] * 2, ffn_dims=[32] * 2)
    config_path, out = tmp_path / "model.yaml", tmp_path / "table.json"
    config.save_yaml(config_path)
    torch.manual_seed(0)
    profile.main(
        [
            "--model_config",
            str(config_path),
            "--latency_table",
            str(out),
            "--seconds",
            "0.25",
            "--threads",
            "1",
            "--repeats",
            "1",
            "--grid_points",
            "2",
        ]
    )
    printed = capsys.readouterr().out
    assert "held-out fit error" in printed and f"wrote {out}" in printed
    table = LatencyTable.load(out)
    assert (table.device, table.threads, table.torch_version, table.seconds) == (
        "cpu",
        1,
        torch.__version__,
        0.25,
    )
    assert table.geometry == geometry(config) and table.date and table.device_name == cpu_name()
    assert [s.in_sizes for s in table.cnn] == [[1], [1, 8, 16]] and table.cnn[1].out_sizes == [1, 8, 16]
    assert table.attention.sizes == [0, 1, 2] and table.attention.ms[0] == 0.0
    # One-axis curves get three times the grid points of a CNN surface axis (2 -> 6 points of 32 units).
    assert table.ffn.sizes == [0, 8, 16, 24, 32] and table.ffn.ms[0] == 0.0
    for curve in (table.feature_projection, table.attention, table.ffn):
        assert curve.ms == monotone_fit(curve.measured_ms) and curve.misaligned_factor >= 1.0
    assert set(table.fixed_ms) == {"pos_conv", "other"} and table.dense_measured_ms > 0
    assert table.held_out["points"] > 0 and math.isfinite(table.held_out["max_rel_error"])
    assert table.held_out["whole_models"] == PROBE_SHAPES and "whole-model check" in printed
    assert (
        0 <= table.held_out["whole_model_median_ratio_error"] <= table.held_out["whole_model_max_ratio_error"]
    )
    table.check_geometry(config)


def test_probe_shapes_are_buildable_pruned_shapes_from_mild_to_heavy():
    config = wav2vec2_base()
    shapes = probe_shapes(config, 8)
    assert shapes == probe_shapes(config, 8) and len(shapes) == 8  # seeded: the same shapes every time
    macs = [exact_cost(shape, REFERENCE_SECONDS).macs for shape in shapes]
    dense_macs = exact_cost(config, REFERENCE_SECONDS).macs
    assert dense_macs > macs[0] and macs[0] > macs[-1] and macs[-1] < 0.4 * dense_macs
    sizes = [c for shape in shapes for c, _, _ in shape.conv_layers] + [
        d for shape in shapes for d in shape.ffn_dims if d
    ]
    assert all(1 <= c <= 512 for c, _, _ in (layer for shape in shapes for layer in shape.conv_layers))
    assert any(size % 8 for size in sizes), "the gates leave unaligned sizes; so must the probes"
    assert any(0 in shape.num_heads for shape in shapes) and any(0 in shape.ffn_dims for shape in shapes)
    for shape in shapes[-2:]:  # the heavy ones build and run
        Wav2Vec2Model(shape).eval()(torch.randn(1, 4000))


def test_the_fit_finds_the_alignment_step_only_where_the_measurements_show_it():
    def measured(step: float) -> dict:
        linear = {(1, size): 0.5 + 0.1 * size for size in (8, 16, 24, 32)}
        return {**linear, **{(1, size): step * (0.5 + 0.1 * size) for size in (15, 31)}}

    grid = SizeGrid(
        "ffn",
        make=None,
        in_nodes=[1],
        out_nodes=[0, 8, 16, 32],
        held_out=[(1, 24)],
        misaligned=[(1, 15), (1, 31)],
    )
    curve, errors = fit_grid(grid, measured(1.6))
    assert curve.sizes == [0, 8, 16, 32] and curve.measured_ms[:2] == [0.0, 1.3]
    assert curve.ms == monotone_fit(curve.measured_ms) and curve.ms[0] == 0.0
    assert curve.misaligned_factor == pytest.approx(1.6, rel=0.05)
    assert errors == [pytest.approx(abs(curve(24, 8) - 2.9) / 2.9)]
    assert fit_grid(grid, measured(1.02))[0].misaligned_factor == 1.0  # within noise: no step
    delayed = {**measured(1.0), (1, 31): 5 * (0.5 + 0.1 * 31)}  # one probe hit by load
    assert fit_grid(grid, delayed)[0].misaligned_factor == 1.0


def test_the_cnn_grid_is_bilinear_so_a_bilinear_cost_has_no_held_out_error():
    nodes = [1, 8, 16]
    grid = SizeGrid(
        "cnn1", make=None, in_nodes=nodes, out_nodes=nodes, held_out=[(4, 4), (12, 12)], misaligned=[]
    )
    ms = {(c_in, c_out): 0.2 + 0.01 * c_in * c_out for c_in in range(1, 17) for c_out in range(1, 17)}
    surface, errors = fit_grid(grid, ms)
    assert isinstance(surface, Surface) and surface.misaligned_factor == 1.0
    assert max(errors) < 1e-12


def test_a_latency_target_below_the_tables_floor_is_refused(table_path: Path):
    """The floor by hand from the synthetic table's formulas: every CNN layer at one channel, no attention,
    no FFN; what is left is the fixed parts, the CNN and the feature projection."""
    config = tiny_config()
    frames = frame_counts(config, REFERENCE_SECONDS)
    cnn = sum(
        0.1 + (0.02 if i == 0 else 0.0) + 1e-7 * kernel * frames[i + 1]
        for i, (_, kernel, _) in enumerate(config.conv_layers)
    )
    floor_ms = 0.3 + 0.2 + cnn + 0.05 + 0.002
    reachable = 1.0 - floor_ms / exact_latency_ms(synthetic_table(config), config)

    def controller(target: float) -> PruningController:
        cfg = PruningConfig.from_dict(
            {
                "variant": "latency",
                "target_sparsity": target,
                "latency_table": str(table_path),
                "reference_seconds": REFERENCE_SECONDS,
            }
        )
        return PruningController(attach_gates(Wav2Vec2Model(config), cfg.gates), cfg)

    with pytest.raises(
        ValueError, match=rf"keeps .* of its table latency at 2 s, so at most {reachable:.3f}"
    ):
        controller(reachable + 0.01)
    controller(reachable - 0.01)
