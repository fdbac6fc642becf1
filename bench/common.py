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

from espnet_prune.profiling import interleaved_medians  # noqa: F401 (the benchmarks' timing, shared with the profiler)

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
WORK_DIR = BENCH_DIR / "work"  # gitignored: cached models and per-run results
DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def cache_key(data: Any) -> str:
    """A short stable digest of JSON-able ``data``: the cache key of a result that ``data`` decides."""
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


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
