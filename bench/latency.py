"""HJ-Latency against HJ-MAC and HJ-MAC with ``multiple_of: 8`` on this CPU (issue 16, item 4).

1. The latency table of wav2vec2-base at ``--seconds`` on this machine (``--threads``), as
   ``python -m espnet_prune.bin.profile --latency_table`` builds it; cached under bench/work/ per CPU,
   threads, length and torch version.
2. Per method one gate-only run (``bench.speed.gate_run_snapshots``: frozen random weights, proxy task,
   a slowly rising target) that takes the removed shape as its controlled quantity passes each target.
   "HJ-Latency calibrated": the HJ-Latency run's gates at each snapshot, fitted as ``remove_masks
   --calibrate_latency 3`` does (the cut timed against the dense model, the table target moved by the
   miss).
3. Every shape and the dense model timed in interleaved rounds (batch 1, median), with the load average,
   as the speed bench does: eager PyTorch, and onnxruntime on the ONNX export (``espnet_prune.export``,
   with a 32-token CTC head) of the same weights.

Per method and target sparsity: the MAC ratio, the table's latency ratio and the measured latency ratios.
Goal: HJ-Latency's measured latency ratio within 0.03 of its target at 0.5.

Run: ``python -m bench.latency`` (the table about 5 minutes at 10 s, each gate run 5-10; on 2 idle
cores); ``--quick`` for a smoke run (1 s of audio, a coarse table, 20 updates).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    RESULTS_DIR,
    WORK_DIR,
    Stopwatch,
    cached_latency_table,
    interleaved_medians,
    load_average,
    markdown_table,
    use_cpu_threads,
)
from bench.speed import describe_shape, gate_run_snapshots, inference_runs, timing_config
from espnet_prune.constants import SAMPLE_RATE
from espnet_prune.models import Wav2Vec2Config, Wav2Vec2Model
from espnet_prune.profiling import measured_latency_ratio
from espnet_prune.pruning.budget import calibrate_latency
from espnet_prune.pruning.cost import exact_cost
from espnet_prune.pruning.latency import LatencyTable, exact_latency_ms
from espnet_prune.pruning.removal import pruned_config

GOAL_TARGET = 0.5
GOAL_TOLERANCE = 0.03
CALIBRATION_ROUNDS = 3


def onnxruntime_runs(
    models: Dict[str, Wav2Vec2Model], seconds: float, threads: int
) -> Dict[str, Callable[[], None]]:
    """One onnxruntime forward of one ``seconds``-long waveform per model, each exported to ONNX (as
    ``espnet_prune.bin.export`` does, with a 32-token CTC head) and loaded with ``threads`` threads."""
    import espnet_prune.bin  # noqa: F401  (as the entry points: no nltk downloads on ESPnet's import)
    from espnet_prune.espnet.export import CTCExportModel, plain_copy
    from espnet_prune.export import export_onnx, load_exported

    speech = torch.randn(1, int(seconds * SAMPLE_RATE))
    lengths = torch.tensor([speech.shape[1]])

    def forward(session: Callable[[torch.Tensor, torch.Tensor], Any]) -> Callable[[], None]:
        def run() -> None:
            session(speech, lengths)

        return run

    runs: Dict[str, Callable[[], None]] = {}
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as folder:  # a session keeps its model in memory
        for index, (name, model) in enumerate(models.items()):
            path = Path(folder) / f"shape{index}.onnx"
            head = torch.nn.Linear(model.config.embed_dim, 32)
            export_onnx(CTCExportModel(plain_copy(model), head), path, {})
            runs[name] = forward(load_exported(path, "onnx", threads))
            path.unlink()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.5, 0.7], help="target sparsities")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="audio length of the table and the timings"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--rounds", type=int, default=15, help="interleaved timing rounds of the shapes (median)"
    )
    parser.add_argument("--table_rounds", type=int, default=9, help="interleaved rounds of the latency table")
    parser.add_argument("--grid_points", type=int, default=6, help="grid points per size axis of the table")
    parser.add_argument("--prune_updates", type=int, default=500, help="most gate updates per method")
    parser.add_argument("--clip_seconds", type=float, default=0.5, help="clip length of the proxy task")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: short audio, coarse table, few updates"
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.table_rounds, args.grid_points, args.prune_updates = 1.0, 3, 1, 3, 20
    stopwatch = Stopwatch()
    use_cpu_threads(args.threads)
    loads = {"start": load_average()}
    print(f"load average at start: {loads['start']}")

    config = timing_config(dropout=0.0, attention_dropout=0.0, projection_dropout=0.0)
    table_path = cached_latency_table(config, args.seconds, rounds=args.table_rounds, points=args.grid_points)
    table = LatencyTable.load(table_path)
    loads["after the table"] = load_average()
    dense_macs, dense_table_ms = exact_cost(config, args.seconds).macs, exact_latency_ms(table, config)

    def mac_ratio(shape: Wav2Vec2Config) -> float:
        return exact_cost(shape, args.seconds).macs / dense_macs

    def table_ratio(shape: Wav2Vec2Config) -> float:
        return exact_latency_ms(table, shape) / dense_table_ms

    methods: Dict[str, Tuple[Dict[str, Any], Callable[[Wav2Vec2Config], float]]] = {
        "HJ-Latency": (
            {"variant": "latency", "latency_table": str(table_path), "reference_seconds": args.seconds},
            table_ratio,
        ),
        "HJ-MAC": ({"variant": "mac", "reference_seconds": args.seconds}, mac_ratio),
        "HJ-MAC x8": (
            {"variant": "mac", "reference_seconds": args.seconds, "gates": {"multiple_of": 8}},
            mac_ratio,
        ),
    }
    kept = [1.0 - target for target in args.targets]
    torch.manual_seed(0)
    dense = Wav2Vec2Model(config)
    shapes: Dict[str, Wav2Vec2Config] = {"dense": config}
    gated: Dict[float, Wav2Vec2Model] = {}
    for method, (pruning, ratio_of) in methods.items():
        print(f"{method}: gate run of at most {args.prune_updates} updates")
        for ratio, shape in gate_run_snapshots(
            dense,
            kept,
            args.prune_updates,
            args.clip_seconds,
            8,
            seed=1,
            pruning=pruning,
            ratio_of=ratio_of,
            gated_models=gated if method == "HJ-Latency" else None,
        ).items():
            shapes[f"{method} {1.0 - ratio:g}"] = shape
        loads[f"after the {method} run"] = load_average()

    def measure(shape: Wav2Vec2Config) -> float:
        return measured_latency_ratio(shape, config, args.seconds, rounds=args.table_rounds)

    calibrations = []
    for ratio, model in gated.items():
        steps = calibrate_latency(model, 1.0 - ratio, args.seconds, table, measure, CALIBRATION_ROUNDS)
        calibrations.append(
            f"- HJ-Latency calibrated {1.0 - ratio:g}: "
            + "; ".join(
                f"table target {s.table_target:.3f} -> measured {s.measured_sparsity:.3f}" for s in steps
            )
        )
        print(calibrations[-1])
        shapes[f"HJ-Latency calibrated {1.0 - ratio:g}"] = pruned_config(model)
    loads["after the calibration"] = load_average()

    torch.manual_seed(0)
    models = {name: Wav2Vec2Model(shape).eval() for name, shape in shapes.items()}
    onnx = onnxruntime_runs(models, args.seconds, args.threads)
    eager = inference_runs(models, args.seconds)
    runs = {
        **{f"eager: {n}": run for n, run in eager.items()},
        **{f"onnx: {n}": run for n, run in onnx.items()},
    }
    medians = interleaved_medians(runs, args.rounds)
    measured = {name: medians[f"eager: {name}"] for name in models}
    measured_onnx = {name: medians[f"onnx: {name}"] for name in models}
    loads["after the timings"] = load_average()
    rows: List[Dict[str, Any]] = []
    for name, shape in shapes.items():
        method, _, target = name.rpartition(" ") if name != "dense" else ("dense", "", "0")
        rows.append(
            {
                "method": method,
                "target": float(target),
                "mac_ratio": mac_ratio(shape),
                "table_latency_ratio": table_ratio(shape),
                "latency_ms": measured[name] * 1e3,
                "latency_ratio": measured[name] / measured["dense"],
                "onnx_latency_ms": measured_onnx[name] * 1e3,
                "onnx_latency_ratio": measured_onnx[name] / measured_onnx["dense"],
                "shape": describe_shape(shape),
            }
        )
    result_table = markdown_table(
        [
            "method",
            "target sparsity",
            "MAC ratio",
            "table latency ratio",
            "eager latency ratio",
            "eager ms",
            "onnxruntime latency ratio",
            "onnxruntime ms",
        ],
        [
            (
                r["method"],
                f"{r['target']:g}",
                f"{r['mac_ratio']:.3f}",
                f"{r['table_latency_ratio']:.3f}",
                f"{r['latency_ratio']:.3f}",
                f"{r['latency_ms']:.0f}",
                f"{r['onnx_latency_ratio']:.3f}",
                f"{r['onnx_latency_ms']:.0f}",
            )
            for r in rows
        ],
    )
    verdicts = []
    for method in ("HJ-Latency", "HJ-Latency calibrated"):
        goal = [r for r in rows if r["method"] == method and abs(r["target"] - GOAL_TARGET) < 1e-9]
        if not goal:
            verdicts.append(f"no {method} shape at the goal's target")
            continue
        miss = abs(goal[0]["latency_ratio"] - (1.0 - GOAL_TARGET))
        verdicts.append(
            f"{method} at target {GOAL_TARGET}: measured (eager) latency ratio {goal[0]['latency_ratio']:.3f} "
            f"(goal within {GOAL_TOLERANCE} of {1.0 - GOAL_TARGET}): {'met' if miss <= GOAL_TOLERANCE else 'NOT met'}"
        )
    verdict = "\n\n".join(verdicts)
    report = "\n\n".join(
        [
            "# Latency: HJ-Latency vs HJ-MAC vs HJ-MAC x8, wav2vec2-base on CPU",
            f"{args.seconds:g} s of audio, batch 1, eval forward (eager PyTorch; onnxruntime on the ONNX export), "
            f"{args.threads} thread(s), median of {args.rounds} "
            f"interleaved rounds; random weights; shapes from gate-only runs (proxy task). Table: {table_path.name} "
            f"(held-out fit error median {table.held_out['median_rel_error']:.1%}, "
            f"max {table.held_out['max_rel_error']:.1%}; whole-model check on "
            f"{table.held_out.get('whole_models', 0):.0f} random pruned shapes: latency ratio error median "
            f"{table.held_out.get('whole_model_median_ratio_error', float('nan')):.3f}, "
            f"max {table.held_out.get('whole_model_max_ratio_error', float('nan')):.3f}).",
            result_table,
            "Kept structures per layer:\n" + "\n".join(f"- {n}: {r['shape']}" for n, r in zip(shapes, rows)),
            "Calibration rounds (sparsities; measured in their own interleaved rounds of the cut and the dense "
            "model):\n" + "\n".join(calibrations),
            verdict,
            "Load average (1/5/15 min): " + "; ".join(f"{k}: {v}" for k, v in loads.items()),
            f"Took {stopwatch.elapsed()}.",
        ]
    )
    print(report)
    out_dir = WORK_DIR if args.quick else RESULTS_DIR  # a smoke run's numbers are not results
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latency.md").write_text(report + "\n")
    (out_dir / "latency.json").write_text(json.dumps({"rows": rows, "load": loads}, indent=1))
    print(f"wrote {out_dir / 'latency.md'} and latency.json")


if __name__ == "__main__":
    main()
