"""Measure a ``LatencyTable`` (``espnet_prune.pruning.latency``) on this machine.

Every prunable structure is built at the kept sizes of a grid, as the model's own modules (a CNN block
with its norm and GELU, the feature projection, one attention branch, one feed-forward branch), and timed
on its input at the reference duration, batch 1, eval mode; so are the positional convolution and the
whole dense model. All of them run in interleaved rounds (each round times every candidate once, so a
change of machine load spreads over all of them) and the median of each is kept.

Grids: sizes at multiples of the alignment (8), plus the smallest size a structure can keep (1 channel;
0 heads or units: the branch is removed, 0 ms) and the full size; CNN blocks on a 2-D grid of input x
output channels (bilinear in between), the one-axis curves (CNN layer 0, feature projection, FFN) on
``CURVE_POINTS_FACTOR`` times as many points (one axis is cheap, and CNN layer 0's time has steps: on
glibc, buffers over 32 MiB are mapped afresh on every call). Two more kinds of points are measured, never
fitted: held-out points between grid points (the fit error printed) and sizes one below an aligned grid
point (the alignment step: their smallest ratio to the fitted curve becomes the ``misaligned_factor`` when
above ``MISALIGNED_MIN_FACTOR``).

The whole-model check: random pruned shapes of the geometry (``probe_shapes``), timed whole in the same
rounds as the dense model; the table's latency ratio (shape / dense) against the measured one is what a
latency target is judged by, so its error is recorded and printed beside the per-structure fit error.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import random
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from espnet_prune.models.components import (
    ConvPositionalEmbedding,
    FeatureExtractor,
    FeatureProjection,
    FeedForward,
    SelfAttention,
)
from espnet_prune.models.config import Wav2Vec2Config
from espnet_prune.models.model import Wav2Vec2Model
from espnet_prune.pruning.cost import frame_counts
from espnet_prune.pruning.latency import (
    TABLE_FORMAT,
    Curve,
    LatencyTable,
    Surface,
    cpu_name,
    exact_latency_ms,
    geometry,
    monotone_fit,
    monotone_fit_2d,
)

ALIGNMENT = 8
CURVE_POINTS_FACTOR = 3  # a one-axis curve gets this many times the grid points of a CNN surface axis
PROBE_SHAPES = 8  # random pruned shapes of the whole-model check
# A measured alignment step smaller than this (misaligned / fitted time) is taken as noise.
MISALIGNED_MIN_FACTOR = 1.05
SAMPLE_RATE = 16000


def interleaved_medians(
    runs: Dict[str, Callable[[], None]], rounds: int, warmup: int = 1
) -> Dict[str, float]:
    """Median wall time in seconds of each callable, calling them in turn every round.

    Interleaving spreads changes in machine load over all the candidates instead of one of them.
    """
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: Dict[str, List[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def size_grid(full: int, points: int, smallest: int, alignment: int = ALIGNMENT) -> List[int]:
    """``smallest``, ``alignment``, about ``points`` evenly spread multiples of ``alignment`` and ``full``."""
    sizes = {smallest, full}
    if alignment < full:
        sizes.add(alignment)
    for j in range(1, points):
        sizes.add(max(alignment, round(full * j / points / alignment) * alignment))
    return sorted(s for s in sizes if smallest <= s <= full)


def held_out_sizes(nodes: Sequence[int], alignment: int = ALIGNMENT) -> List[int]:
    """A size between each pair of neighbouring positive grid points (aligned when the gap allows)."""
    middles = []
    for low, high in zip(nodes, nodes[1:]):
        if low > 0 and high - low > 1:
            middle = (low + high) // 2
            aligned = round(middle / alignment) * alignment
            middles.append(aligned if low < aligned < high else middle)
    return middles


def misaligned_sizes(nodes: Sequence[int], alignment: int = ALIGNMENT) -> List[int]:
    """One below every aligned grid point above ``alignment`` (a size no grid point has)."""
    return [n - 1 for n in nodes if n > alignment and n % alignment == 0 and n - 1 not in nodes]


@dataclass
class SizeGrid:
    """The (in size, out size) points one structure is timed at: its grid, held-out and misaligned sizes.
    A Curve's structure has the single in size 1; a CNN block's name starts with "cnn"."""

    name: str
    make: Callable[[int, int], Callable[[], None]]  # (in size, out size) -> one timed forward
    in_nodes: List[int]
    out_nodes: List[int]
    held_out: List[Tuple[int, int]]
    misaligned: List[Tuple[int, int]]

    def points(self) -> List[Tuple[int, int]]:
        grid = [(i, o) for i in self.in_nodes for o in self.out_nodes if o > 0]
        return grid + self.held_out + self.misaligned


def _runner(module: nn.Module, inputs: Sequence[Tensor], device: torch.device) -> Callable[[], None]:
    module = module.to(device).eval()

    def run() -> None:
        module(*inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def _structures(config: Wav2Vec2Config, seconds: float, points: int, device: torch.device) -> List[SizeGrid]:
    """Every structure of ``config`` the table prices as a function of a kept size."""
    frames = frame_counts(config, seconds, SAMPLE_RATE)
    time_frames, embed = frames[-1], config.embed_dim
    structures = []
    previous: Optional[int] = None  # the previous CNN layer's dense channels
    curve_points = CURVE_POINTS_FACTOR * points
    for i, (channels, kernel, stride) in enumerate(config.conv_layers):
        in_full = 1 if previous is None else previous
        waveform = torch.randn(1, in_full, frames[i], device=device)

        def make_conv(
            c_in: int,
            c_out: int,
            i: int = i,
            kernel: int = kernel,
            stride: int = stride,
            waveform: Tensor = waveform,
        ) -> Callable[[], None]:
            # The block as the model builds it (norm by extractor mode and position); earlier layers minimal.
            layers = [(1, 1, 1)] * max(i - 1, 0) + ([(c_in, 1, 1)] if i else []) + [(c_out, kernel, stride)]
            block = FeatureExtractor(
                layers, config.extractor_mode, config.conv_bias, config.layer_norm_eps
            ).conv_layers[i]
            return _runner(block, (waveform[:, :c_in], None), device)

        in_nodes = [1] if previous is None else size_grid(previous, points, smallest=1)
        out_nodes = size_grid(channels, curve_points if previous is None else points, smallest=1)
        if previous is None:
            held = [(1, o) for o in held_out_sizes(out_nodes)]
        else:  # the centres of the grid's diagonal cells
            held = list(zip(held_out_sizes(in_nodes), held_out_sizes(out_nodes)))
        probes = [(in_full, o) for o in misaligned_sizes(out_nodes)]
        if previous is not None:
            probes += [(c, channels) for c in misaligned_sizes(in_nodes)]
        structures.append(SizeGrid(f"cnn{i}", make_conv, in_nodes, out_nodes, held, probes))
        previous = channels

    features = torch.randn(1, time_frames, previous, device=device)
    hidden = torch.randn(1, time_frames, embed, device=device)

    def make_projection(_: int, c: int) -> Callable[[], None]:
        return _runner(FeatureProjection(c, embed, 0.0, config.layer_norm_eps), (features[..., :c],), device)

    def make_attention(_: int, heads: int) -> Callable[[], None]:
        return _runner(SelfAttention(embed, heads, config.head_dim, 0.0), (hidden, None), device)

    def make_ffn(_: int, units: int) -> Callable[[], None]:
        return _runner(FeedForward(embed, units, 0.0, 0.0), (hidden,), device)

    for name, make, full, smallest in (
        ("feature_projection", make_projection, previous, 1),
        ("ffn", make_ffn, max(config.ffn_dims), 0),
    ):
        nodes = size_grid(full, curve_points, smallest)
        structures.append(
            SizeGrid(
                name,
                make,
                [1],
                nodes,
                [(1, s) for s in held_out_sizes(nodes)],
                [(1, s) for s in misaligned_sizes(nodes)],
            )
        )
    heads = list(range(max(config.num_heads) + 1))  # every head count is a grid point
    structures.append(SizeGrid("attention", make_attention, [1], heads, [], []))
    return structures


def probe_shapes(config: Wav2Vec2Config, count: int = PROBE_SHAPES, seed: int = 0) -> List[Wav2Vec2Config]:
    """``count`` random pruned shapes of ``config``, from mildly (about 0.9 kept) to heavily pruned (about
    0.25): each CNN layer, attention and FFN keeps a random fraction near its shape's level, at sizes that
    need not be aligned, and whole attention / FFN branches are gone with probability 1 - level, as the
    gates leave them."""
    rng = random.Random(seed)

    def kept(full: int, level: float) -> int:
        return max(1, round(full * min(1.0, max(0.05, rng.uniform(level - 0.15, level + 0.15)))))

    shapes = []
    for k in range(count):
        level = 0.9 - 0.65 * k / max(count - 1, 1)
        shapes.append(
            config.replace(
                conv_layers=[(kept(c, level), kernel, stride) for c, kernel, stride in config.conv_layers],
                num_heads=[kept(h, level) if rng.random() < level else 0 for h in config.num_heads],
                ffn_dims=[kept(d, level) if rng.random() < level else 0 for d in config.ffn_dims],
            )
        )
    return shapes


def _at(fit: Union[Curve, Surface], point: Tuple[int, int]) -> float:
    """The fitted time at (in size, out size); a Curve reads the out size only."""
    return float(fit(point[0], point[1], ALIGNMENT) if isinstance(fit, Surface) else fit(point[1], ALIGNMENT))


def fit_grid(
    structure: SizeGrid, ms: Dict[Tuple[int, int], float]
) -> Tuple[Union[Curve, Surface], List[float]]:
    """The fitted Curve / Surface of a structure (with its alignment step) and the relative errors of its
    held-out points."""
    measured = [[ms.get((i, o), 0.0) for o in structure.out_nodes] for i in structure.in_nodes]  # 0: removed
    smooth: Union[Curve, Surface]
    if structure.name.startswith("cnn"):
        smooth = Surface(structure.in_nodes, structure.out_nodes, monotone_fit_2d(measured), measured)
    else:
        smooth = Curve(structure.out_nodes, monotone_fit(measured[0]), measured[0])
    # The smallest ratio: load only adds time, so one delayed probe cannot fake a step.
    step = min((ms[p] / _at(smooth, p) for p in structure.misaligned), default=1.0)
    fit = dataclasses.replace(
        smooth, misaligned_factor=round(step, 4) if step > MISALIGNED_MIN_FACTOR else 1.0
    )
    errors = [abs(_at(fit, p) - ms[p]) / ms[p] for p in structure.held_out]
    return fit, errors


def measured_latency_ratio(
    shape: Wav2Vec2Config, dense: Wav2Vec2Config, seconds: float, device: str = "cpu", rounds: int = 9
) -> float:
    """Eval latency of a model of ``shape`` over that of ``dense`` on this machine: one utterance of
    ``seconds``, batch 1, the medians of interleaved rounds (random weights: the time depends on the
    shape only)."""
    target = torch.device(device)
    torch.manual_seed(0)
    with torch.inference_mode():
        waveform = torch.randn(1, int(round(seconds * SAMPLE_RATE)), device=target)
        runs = {
            name: _runner(Wav2Vec2Model(c), (waveform,), target)
            for name, c in (("shape", shape), ("dense", dense))
        }
        medians = interleaved_medians(runs, rounds)
    return medians["shape"] / medians["dense"]


def measure_latency_table(
    config: Wav2Vec2Config,
    seconds: float = 10.0,
    device: str = "cpu",
    rounds: int = 9,
    points: int = 6,
    log: Callable[[str], None] = print,
    probe_count: int = PROBE_SHAPES,
) -> LatencyTable:
    """Measure the latency table of ``config`` on this machine (torch's current thread count), and check it
    on ``probe_count`` random pruned shapes timed whole."""
    if config.model_type == "wavlm":
        raise ValueError("model_type: WavLM's relative position bias is not in the latency model yet")
    target = torch.device(device)
    torch.manual_seed(0)
    with torch.inference_mode():
        structures = _structures(config, seconds, points, target)
        runs: Dict[str, Callable[[], None]] = {}
        for structure in structures:
            for point in structure.points():
                runs[f"{structure.name}{point}"] = structure.make(*point)
        hidden = torch.randn(
            1, frame_counts(config, seconds, SAMPLE_RATE)[-1], config.embed_dim, device=target
        )
        positional = ConvPositionalEmbedding(config.embed_dim, config.pos_conv_kernel, config.pos_conv_groups)
        runs["pos_conv"] = _runner(positional, (hidden,), target)
        inference = config.replace(
            dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, projection_dropout=0.0, layer_drop=0.0
        )
        waveform = torch.randn(1, int(round(seconds * SAMPLE_RATE)), device=target)
        runs["dense"] = _runner(Wav2Vec2Model(inference), (waveform,), target)
        probes = probe_shapes(inference, probe_count)
        for k, shape in enumerate(probes):
            runs[f"probe{k}"] = _runner(Wav2Vec2Model(shape), (waveform,), target)
        log(f"latency table: {len(runs)} forward passes per round, {rounds} rounds on {device}")
        medians = {name: 1e3 * value for name, value in interleaved_medians(runs, rounds).items()}

    fitted: Dict[str, Union[Curve, Surface]] = {}
    errors: List[float] = []
    for structure in structures:
        ms = {point: medians[f"{structure.name}{point}"] for point in structure.points()}
        fitted[structure.name], structure_errors = fit_grid(structure, ms)
        errors += structure_errors
        if structure_errors:
            log(
                f"  {structure.name}: held-out fit error median {statistics.median(structure_errors):.1%}, "
                f"max {max(structure_errors):.1%} ({len(structure_errors)} points); "
                f"misaligned factor {fitted[structure.name].misaligned_factor:g}"
            )
    is_cuda = target.type == "cuda"
    table = LatencyTable(
        format=TABLE_FORMAT,
        device=target.type,
        device_name=torch.cuda.get_device_name(target) if is_cuda else cpu_name(),
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        load_average=" ".join(f"{v:.2f}" for v in os.getloadavg()),
        seconds=seconds,
        sample_rate=SAMPLE_RATE,
        geometry=geometry(config),
        alignment=ALIGNMENT,
        rounds=rounds,
        cnn=[fitted[f"cnn{i}"] for i in range(len(config.conv_layers))],
        feature_projection=fitted["feature_projection"],
        attention=fitted["attention"],
        ffn=fitted["ffn"],
        fixed_ms={"pos_conv": medians["pos_conv"]},
        dense_measured_ms=medians["dense"],
        held_out={
            "median_rel_error": statistics.median(errors) if errors else 0.0,
            "max_rel_error": max(errors, default=0.0),
            "points": len(errors),
        },
    )
    parts = exact_latency_ms(table, config)
    other = max(0.0, medians["dense"] - parts)
    log(
        f"  dense model measured {medians['dense']:.1f} ms; its parts {parts:.1f} ms; the rest ({other:.1f} ms: "
        "residuals, norms, masks) is a fixed part"
    )
    table = dataclasses.replace(table, fixed_ms={**table.fixed_ms, "other": other})
    dense_table_ms = exact_latency_ms(table, config)
    ratio_errors = [
        abs(exact_latency_ms(table, shape) / dense_table_ms - medians[f"probe{k}"] / medians["dense"])
        for k, shape in enumerate(probes)
    ]
    if ratio_errors:
        whole = {
            "whole_model_median_ratio_error": statistics.median(ratio_errors),
            "whole_model_max_ratio_error": max(ratio_errors),
            "whole_models": len(ratio_errors),
        }
        table = dataclasses.replace(table, held_out={**table.held_out, **whole})
    log(
        f"held-out fit error: median {table.held_out['median_rel_error']:.1%}, "
        f"max {table.held_out['max_rel_error']:.1%} "
        f"over {len(errors)} points"
    )
    if ratio_errors:
        log(
            f"whole-model check: latency ratio to dense, table vs measured, on {len(ratio_errors)} random "
            f"pruned shapes: absolute error median {statistics.median(ratio_errors):.3f}, "
            f"max {max(ratio_errors):.3f}"
        )
    return table
