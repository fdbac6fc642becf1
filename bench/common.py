"""Helpers shared by the benchmarks: repository paths, CPU threads, machine load, timing (interleaved
medians live in ``espnet_prune.profiling``, which the latency table measures with)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from espnet_prune.models import Wav2Vec2Config
from espnet_prune.profiling import (
    interleaved_medians,  # noqa: F401 (the benchmarks' timing, shared with the profiler)
    measure_latency_table,
)
from espnet_prune.pruning.latency import LatencyTable, cpu_name

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
WORK_DIR = BENCH_DIR / "work"  # gitignored: cached models and per-run results
DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def cache_key(data: Any) -> str:
    """A short stable digest of JSON-able ``data``: the cache key of a result that ``data`` decides."""
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def cached_latency_table(
    config: Wav2Vec2Config, seconds: float, label: str = "", rounds: int = 9, points: int = 6
) -> Path:
    """The latency table of ``config`` at ``seconds`` on this machine (torch's thread count), measured once
    per ``label``, CPU, threads, length, grid and torch version and cached in WORK_DIR; a cached table must
    be of ``config``'s geometry."""
    name = f"{label}{cpu_name()}-{torch.get_num_threads()}t-{seconds:g}s-{points}p-torch{torch.__version__}"
    path = WORK_DIR / (
        "latency_table-" + "".join(c if c.isalnum() or c in ".-" else "_" for c in name) + ".json"
    )
    if path.is_file():
        LatencyTable.load(path).check_geometry(config)
        print(f"latency table from {path}")
        return path
    table = measure_latency_table(config, seconds, "cpu", rounds, points)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    table.save(path)
    return path


def use_cpu_threads(threads: int) -> None:
    """Pin intra-op threads so that timings are comparable between runs (the machine has 2 cores)."""
    torch.set_num_threads(threads)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other jobs share these cores and slow every timing."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (cores: {os.cpu_count()})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table (also readable as printed text)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


class Stopwatch:
    """Wall time since creation, for the 'took ...' line every benchmark prints."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> str:
        seconds = time.perf_counter() - self.start
        return f"{seconds / 60:.1f} min ({seconds:.0f} s)"
