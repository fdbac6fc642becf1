"""Helpers shared by the benchmarks: repository paths, CPU threads, machine load, timing."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
WORK_DIR = BENCH_DIR / "work"  # gitignored: cached models and per-run results
DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def use_cpu_threads(threads: int) -> None:
    """Pin intra-op threads so that timings are comparable between runs (the machine has 2 cores)."""
    torch.set_num_threads(threads)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other jobs share these cores and slow every timing."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (cores: {os.cpu_count()})"


def interleaved_medians(runs: Dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> Dict[str, float]:
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
