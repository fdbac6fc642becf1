"""Latency cost model (HJ-Latency): a table of measured times per prunable structure and kept size.

A ``LatencyTable`` is built on the deployment machine by ``python -m espnet_prune.bin.profile
--latency_table OUT.json`` (``espnet_prune.profiling`` measures it) for one dense geometry at one
reference duration. It holds, in milliseconds of an eval forward pass of one utterance:

- ``cnn[i]``: CNN block i (conv, norm, GELU) on a grid of input x output channels (layer 0: one input
  channel), bilinear between the grid points;
- ``feature_projection``: LayerNorm + Linear over the last CNN layer's channels;
- ``attention`` / ``ffn``: one attention branch at h heads / one feed-forward branch at u units (0: removed);
- ``fixed_ms``: what no gate changes (the positional convolution; the rest of the dense model's measured
  time that the parts do not cover, e.g. residuals and norms).

Curves are piecewise linear between their grid points and monotone (fitted by isotonic regression). A
kept size that is not a multiple of ``alignment`` (and not a grid point) costs ``misaligned_factor``
times the curve, the step that the profiler measured for such sizes (1.0 where it saw none).

The same formulas take python numbers (a concrete config: the exact latency of what removal cuts) or
0-dim tensors (expected kept sizes under the gates: the expected latency, differentiable in every
``log_alpha``; the alignment step only changes its value, never its gradient).
"""

from __future__ import annotations

import bisect
import json
import platform
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from espnet_prune.config_schema import from_mapping, join_key
from espnet_prune.io import atomic_write
from espnet_prune.models.config import Wav2Vec2Config
from espnet_prune.models.model import Wav2Vec2Model
from espnet_prune.pruning.cost import UnitCounts, exact_cost, expected_cost

Number = Union[int, float, Tensor]

LATENCY = "latency"  # the controlled quantity of variant "latency"
TABLE_FORMAT = "espnet_prune.latency_table/1"
# The Wav2Vec2Config keys a table is measured for (regularisation does not change eval latency).
GEOMETRY_KEYS = (
    "conv_layers",
    "extractor_mode",
    "conv_bias",
    "embed_dim",
    "num_heads",
    "head_dim",
    "ffn_dims",
    "layer_norm_first",
    "pos_conv_kernel",
    "pos_conv_groups",
    "model_type",
    "normalize_waveform",
)


def monotone_fit(values: Sequence[float]) -> List[float]:
    """The non-decreasing sequence nearest to ``values`` in squared error (pool adjacent violators).

    Measured medians of a growing structure can dip by noise; the fitted curve never does.
    """
    blocks: List[List[float]] = []  # [mean, count]
    for value in values:
        blocks.append([float(value), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, count = blocks.pop()
            blocks[-1][0] = (blocks[-1][0] * blocks[-1][1] + mean * count) / (blocks[-1][1] + count)
            blocks[-1][1] += count
    return [mean for mean, count in blocks for _ in range(int(count))]


def monotone_fit_2d(rows: Sequence[Sequence[float]]) -> List[List[float]]:
    """Non-decreasing along both axes: ``monotone_fit`` of every row, then of every column (the fit is
    order-preserving, so the columns' fit keeps the rows monotone)."""
    by_rows = [monotone_fit(row) for row in rows]
    columns = [monotone_fit(column) for column in zip(*by_rows)]
    return [list(row) for row in zip(*columns)]


def _interpolate(nodes: Sequence[int], values: Sequence[float], x: Number) -> Number:
    """Piecewise-linear interpolation; the end segments extend beyond the nodes."""
    if len(nodes) == 1:
        return values[0]
    j = min(max(bisect.bisect_right(nodes, _value(x)) - 1, 0), len(nodes) - 2)
    slope = (values[j + 1] - values[j]) / (nodes[j + 1] - nodes[j])
    return values[j] + (x - nodes[j]) * slope


def _value(x: Number) -> float:
    return float(x.detach()) if isinstance(x, Tensor) else float(x)


def _misaligned(x: Number, nodes: Sequence[int], alignment: int) -> bool:
    """Whether the size nearest to ``x`` is off the alignment and not itself a measured grid point."""
    size = int(round(_value(x)))
    return size % alignment != 0 and size not in nodes


@dataclass(frozen=True)
class Curve:
    """Time (ms) of one structure at kept sizes ``sizes`` (increasing): ``ms`` fitted, ``measured_ms`` raw
    medians."""

    sizes: List[int]
    ms: List[float]
    measured_ms: List[float]
    misaligned_factor: float = 1.0

    def __post_init__(self) -> None:
        _check_nodes("sizes", self.sizes)
        for key in ("ms", "measured_ms"):
            if len(getattr(self, key)) != len(self.sizes):
                raise ValueError(f"{key}: {len(getattr(self, key))} values for {len(self.sizes)} sizes")
        _check_fitted("ms", self.ms)
        _check_factor(self.misaligned_factor)

    def __call__(self, size: Number, alignment: int) -> Number:
        value = _interpolate(self.sizes, self.ms, size)
        return value * self.misaligned_factor if _misaligned(size, self.sizes, alignment) else value


@dataclass(frozen=True)
class Surface:
    """Time (ms) of a CNN block at ``in_sizes`` x ``out_sizes`` channels (``ms[i][j]``), bilinear in between."""

    in_sizes: List[int]
    out_sizes: List[int]
    ms: List[List[float]]
    measured_ms: List[List[float]]
    misaligned_factor: float = 1.0

    def __post_init__(self) -> None:
        _check_nodes("in_sizes", self.in_sizes)
        _check_nodes("out_sizes", self.out_sizes)
        for key in ("ms", "measured_ms"):
            grid = getattr(self, key)
            if len(grid) != len(self.in_sizes) or any(len(row) != len(self.out_sizes) for row in grid):
                raise ValueError(f"{key}: expected {len(self.in_sizes)} rows of {len(self.out_sizes)} values")
        for i, row in enumerate(self.ms):
            _check_fitted(f"ms[{i}]", row)
        for column in zip(*self.ms):
            _check_fitted("ms (a column)", column)
        _check_factor(self.misaligned_factor)

    def __call__(self, in_channels: Number, out_channels: Number, alignment: int) -> Number:
        rows = [_interpolate(self.out_sizes, row, out_channels) for row in self.ms]
        value = _interpolate(self.in_sizes, rows, in_channels) if len(rows) > 1 else rows[0]
        misaligned = _misaligned(out_channels, self.out_sizes, alignment) or (
            len(self.in_sizes) > 1 and _misaligned(in_channels, self.in_sizes, alignment)
        )
        return value * self.misaligned_factor if misaligned else value


def _check_nodes(key: str, nodes: Sequence[int]) -> None:
    if not nodes or any(b <= a for a, b in zip(nodes, nodes[1:])) or nodes[0] < 0:
        raise ValueError(f"{key}: expected increasing sizes >= 0, got {list(nodes)}")


def _check_fitted(key: str, values: Sequence[float]) -> None:
    if any(v < 0 for v in values) or any(b < a for a, b in zip(values, values[1:])):
        raise ValueError(f"{key}: fitted times must be >= 0 and non-decreasing, got {list(values)}")


def _check_factor(factor: float) -> None:
    if factor < 1.0:
        raise ValueError(f"misaligned_factor: must be >= 1, got {factor}")


def geometry(config: Wav2Vec2Config) -> Dict[str, Any]:
    """The keys of ``config`` that decide eval latency, as plain JSON values."""
    data = config.to_dict()
    return json.loads(json.dumps({key: data[key] for key in GEOMETRY_KEYS}))


@dataclass(frozen=True)
class LatencyTable:
    """Measured latency per prunable structure of one geometry on one machine (see the module docstring)."""

    format: str
    device: str  # "cpu" or "cuda"
    device_name: str  # CPU model or GPU name
    threads: int  # torch intra-op threads (CPU)
    torch_version: str
    date: str
    load_average: str
    seconds: float
    sample_rate: int
    geometry: Dict[str, Any]
    alignment: int
    rounds: int
    cnn: List[Surface]
    feature_projection: Curve
    attention: Curve
    ffn: Curve
    fixed_ms: Dict[str, float]
    dense_measured_ms: float  # the whole dense model, measured in the same rounds
    held_out: Dict[str, float] = field(default_factory=dict)  # relative fit error on held-out grid points

    def __post_init__(self) -> None:
        if self.format != TABLE_FORMAT:
            raise ValueError(f"format: expected {TABLE_FORMAT!r}, got {self.format!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {self.device!r}")
        if self.alignment < 1:
            raise ValueError(f"alignment: must be >= 1, got {self.alignment}")
        if len(self.cnn) != len(self.geometry.get("conv_layers", [])):
            raise ValueError(
                f"cnn: {len(self.cnn)} layers, but geometry.conv_layers has "
                f"{len(self.geometry.get('conv_layers', []))}"
            )

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str) -> LatencyTable:
        missing = [f.name for f in fields(cls) if f.name not in data and f.name != "held_out"]
        if missing:
            raise ValueError(join_key(source, f"missing key(s) {missing}"))
        return from_mapping(cls, data, source)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def save(self, path: Union[str, Path]) -> None:
        with atomic_write(path) as f:
            f.write(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Union[str, Path], key: str = "latency_table") -> LatencyTable:
        """Read a table; a missing file or a bad key is an error naming ``key``, the file and what is wrong."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{key}: no latency table at {path}; build it on the deployment machine with "
                f"`python -m espnet_prune.bin.profile --preset NAME --latency_table {path}`"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{key}: {path} is not JSON: {exc}") from None
        try:
            return cls.from_dict(data, str(path))
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None

    def check_geometry(self, config: Wav2Vec2Config, key: str = "latency_table") -> None:
        """ValueError naming every geometry key where ``config`` differs from the table's model."""
        mine = geometry(config)
        differing = [k for k in GEOMETRY_KEYS if mine[k] != self.geometry.get(k)]
        if differing:
            details = "; ".join(f"{k}: table {self.geometry.get(k)!r}, model {mine[k]!r}" for k in differing)
            raise ValueError(
                f"{key}: the table was measured for another geometry ({details}); "
                "build a table for this model"
            )

    def machine_mismatches(self) -> List[str]:
        """How this machine differs from the one the table was measured on (empty when it matches)."""
        differences = []
        if self.device == "cuda":
            if torch.cuda.is_available() and torch.cuda.get_device_name() != self.device_name:
                differences.append(f"GPU {self.device_name!r} vs {torch.cuda.get_device_name()!r} here")
        else:
            here = cpu_name()
            if here != self.device_name:
                differences.append(f"CPU {self.device_name!r} vs {here!r} here")
            if torch.get_num_threads() != self.threads:
                differences.append(f"{self.threads} thread(s) vs {torch.get_num_threads()} here")
        return differences

    def warn_machine_mismatch(self, key: str = "latency_table") -> None:
        differences = self.machine_mismatches()
        if differences:
            warnings.warn(
                f"{key}: measured on another machine ({'; '.join(differences)}): the latencies "
                "the pruning targets are those of the table's machine",
                stacklevel=2,
            )

    def latency_ms(self, units: UnitCounts) -> Number:
        """Latency of a model with ``units`` kept (exact for python numbers, expected for tensors)."""
        alignment = self.alignment
        total: Number = sum(self.fixed_ms.values())
        in_channels: Number = 1
        for surface, out_channels in zip(self.cnn, units.conv_channels):
            total = total + surface(in_channels, out_channels, alignment)
            in_channels = out_channels
        total = total + self.feature_projection(in_channels, alignment)
        for heads in units.heads:
            total = total + self.attention(heads, alignment)
        for ffn_units in units.ffn_units:
            total = total + self.ffn(ffn_units, alignment)
        return total


def cpu_name() -> str:
    """The CPU model name (/proc/cpuinfo on Linux), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def exact_latency_ms(table: LatencyTable, config: Wav2Vec2Config) -> float:
    """Table latency of a model built from ``config``."""
    return float(table.latency_ms(UnitCounts.from_config(config)))


def expected_latency_ms(table: LatencyTable, model: Wav2Vec2Model) -> Tensor:
    """Table latency at the expected kept sizes under ``model``'s gates (differentiable in log_alpha)."""
    device = next(model.parameters()).device
    return torch.as_tensor(table.latency_ms(UnitCounts.expected(model)), dtype=torch.float32, device=device)


def exact_quantity(
    config: Wav2Vec2Config, quantity: str, seconds: float, table: Optional[LatencyTable] = None
) -> float:
    """A controlled quantity of a model built from ``config``: a cost-report attribute (params, macs,
    cnn_params, ...) at ``seconds``, or ``latency`` from ``table``."""
    if quantity == LATENCY:
        return exact_latency_ms(_needs(table), config)
    return float(getattr(exact_cost(config, seconds), quantity))


def expected_quantity(
    model: Wav2Vec2Model, quantity: str, seconds: float, table: Optional[LatencyTable] = None
) -> Tensor:
    """``exact_quantity``'s expectation under the model's gates (differentiable in log_alpha)."""
    if quantity == LATENCY:
        return expected_latency_ms(_needs(table), model)
    return getattr(expected_cost(model, seconds), quantity)


def _needs(table: Optional[LatencyTable]) -> LatencyTable:
    if table is None:
        raise ValueError("the latency quantity needs a latency table")
    return table
