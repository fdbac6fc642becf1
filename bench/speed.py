"""Speed of HJ-MAC-pruned wav2vec2-base on CPU: inference latency versus MACs, and the training overhead of gates.

Shapes: an HJ-MAC run trains the gates of wav2vec2-base (random weights, frozen) with the Lagrangian
controller plus a proxy task signal (match the dense model's output on noise clips) while its target
falls slowly; the shape ``remove_masks`` would cut is taken as it passes each MAC ratio. The proxy keeps
the gates' movement realistic: without a task signal Adam moves every log_alpha at the same speed and
the gates of whole layers close together with the units. Shapes are cached under bench/work/.

Run: ``python -m bench.speed`` (10-15 minutes on 2 idle cores, 4 once the shapes are cached;
``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO_ROOT,
    RESULTS_DIR,
    WORK_DIR,
    Stopwatch,
    cache_key,
    interleaved_medians,
    load_average,
    markdown_table,
    use_cpu_threads,
)
from espnet_prune.constants import SAMPLE_RATE
from espnet_prune.models import Wav2Vec2Config, Wav2Vec2Model
from espnet_prune.models.config import wav2vec2_base
from espnet_prune.pruning import (
    PruningConfig,
    PruningController,
    attach_gates,
    exact_cost,
    gate_parameters,
    pruned_config,
)
from espnet_prune.pruning.distill import LayerDistiller

LATENCY_GOAL_AT_HALF_MACS = 0.55
TRAIN_OVERHEAD_GOAL = 1.15


def timing_config(**regularisation: float) -> Wav2Vec2Config:
    """wav2vec2-base geometry; no layer drop so that every timed step runs every layer."""
    settings = dict(layer_drop=0.0)
    settings.update(regularisation)
    return wav2vec2_base(**settings)


def gate_run_snapshots(
    dense: Wav2Vec2Model,
    mac_ratios: List[float],
    updates: int,
    clip_seconds: float,
    clips: int,
    seed: int,
    pruning: Optional[Dict[str, Any]] = None,
    ratio_of: Optional[Callable[[Wav2Vec2Config], float]] = None,
    gated_models: Optional[Dict[float, Wav2Vec2Model]] = None,
) -> Dict[float, Wav2Vec2Config]:
    """One gate-only HJ-MAC run on a copy of ``dense`` whose target falls slowly; the removed shape per ratio.

    ``pruning`` replaces the variant (e.g. HJ-Latency, or gates with ``multiple_of``); ``ratio_of`` then gives
    the kept ratio of its controlled quantity for a shape (default: the MAC ratio). ``gated_models`` (when
    given) receives a copy of the gated model at each snapshot, for a fit after the run.

    The target sparsity warms up linearly over 80% of the updates to 0.1 beyond the smallest ratio; the
    first time the deterministic masks' exact MAC ratio reaches a requested ratio, the shape that
    ``remove_masks`` would cut is taken. (Short runs with a fixed target lag and then overshoot it;
    snapshots of one slowly tracking run land on the requested ratios.) Task signal: mean squared error
    to the dense model's last hidden state on a few noise clips, normalised by its variance. Weights
    stay frozen.
    """
    torch.manual_seed(seed)
    cfg = PruningConfig.from_dict(
        {
            "variant": "mac",
            "target_sparsity": min(0.95, 1.1 - min(mac_ratios)),
            "warmup_updates": int(0.8 * updates),
            "gate_lr": 0.05,
            **(pruning or {}),
        }
    )
    quantity = cfg.targets()[0][0]
    dense = dense.eval()
    dense_macs = exact_cost(dense.config).macs
    waves = torch.randn(clips, int(clip_seconds * SAMPLE_RATE))
    with torch.no_grad():
        teacher = [dense(wave[None]).last_hidden_state for wave in waves]
    gated = attach_gates(copy.deepcopy(dense), cfg.gates).train()
    gated.requires_grad_(False)
    for parameter in gate_parameters(gated):
        parameter.requires_grad_(True)
    controller = PruningController(gated, cfg).train()
    optimizer = torch.optim.Adam(controller.param_groups(gated))
    controller.attach(optimizer)
    waiting = sorted(mac_ratios, reverse=True)
    snapshots: Dict[float, Wav2Vec2Config] = {}
    for step in range(updates):
        index = step % clips
        output = gated(waves[index][None]).last_hidden_state
        task = F.mse_loss(output, teacher[index]) / teacher[index].var()
        pruning, stats = controller(gated, task)
        optimizer.zero_grad()
        (task + pruning).backward()
        optimizer.step()
        config = pruned_config(gated)
        mac_ratio = ratio_of(config) if ratio_of else exact_cost(config).macs / dense_macs
        while waiting and (mac_ratio <= waiting[0] or step == updates - 1):
            if gated_models is not None:
                gated_models[waiting[0]] = copy.deepcopy(gated).eval()
            snapshots[waiting.pop(0)] = config
            print(
                f"  update {step + 1}: cut at {quantity} ratio {mac_ratio:.3f} (proxy loss {float(task.detach()):.3f})"
            )
        if not waiting:
            break
        if (step + 1) % 50 == 0:
            print(
                f"  update {step + 1}: {quantity} ratio {mac_ratio:.3f}, "
                f"expected {1 - float(stats[f'expected_sparsity_{quantity}']):.3f}"
            )
    return snapshots


def describe_shape(config: Wav2Vec2Config) -> str:
    """Kept conv channels, heads and FFN units per layer in one line."""
    channels = ",".join(str(c) for c, _, _ in config.conv_layers)
    heads = ",".join(str(h) for h in config.num_heads)
    ffn = ",".join(str(d) for d in config.ffn_dims)
    return f"conv [{channels}] heads [{heads}] ffn [{ffn}]"


def cached_shapes(args: argparse.Namespace, config: Wav2Vec2Config) -> Dict[float, Wav2Vec2Config]:
    """The HJ-MAC shapes per target ratio, from bench/work/ when this exact run was done before.

    Latency depends only on the shapes, so re-timing (e.g. on a quieter machine) skips the gate run.
    """
    settings = {k: getattr(args, k) for k in ("mac_ratios", "prune_updates", "clip_seconds")}
    key = cache_key({**settings, "config": config.to_dict()})
    path = WORK_DIR / f"speed_shapes-{key}.json"
    if path.is_file():
        print(f"HJ-MAC shapes from {path.relative_to(WORK_DIR.parent.parent)}")
        saved = json.loads(path.read_text())
        return {float(ratio): Wav2Vec2Config.from_dict(cfg, source=str(path)) for ratio, cfg in saved.items()}
    print(f"HJ-MAC gate run: at most {args.prune_updates} updates on {args.clip_seconds:g} s noise clips")
    torch.manual_seed(0)
    dense = Wav2Vec2Model(config)
    shapes = gate_run_snapshots(dense, args.mac_ratios, args.prune_updates, args.clip_seconds, 8, seed=1)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({str(ratio): cfg.to_dict() for ratio, cfg in shapes.items()}, indent=1))
    return shapes


def aligned(config: Wav2Vec2Config, multiple: int) -> Wav2Vec2Config:
    """``config`` with conv channels and FFN units rounded down to a multiple (kept >= ``multiple``, 0 stays 0).

    A what-if, not an HJ output: oneDNN convolutions with an odd number of output channels run far
    below their usual MAC rate on this CPU.
    """

    def down(size: int) -> int:
        return 0 if size == 0 else max(multiple, size // multiple * multiple)

    return config.replace(
        conv_layers=[(down(c), k, s) for c, k, s in config.conv_layers],
        ffn_dims=[down(d) for d in config.ffn_dims],
    )


def inference_runs(models: Dict[str, Wav2Vec2Model], seconds: float) -> Dict[str, Callable[[], None]]:
    """One eval forward of one ``seconds``-long waveform per model."""
    waveform = torch.randn(1, int(seconds * SAMPLE_RATE))

    def forward(model: Wav2Vec2Model) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                model(waveform)

        return run

    return {name: forward(model.eval()) for name, model in models.items()}


def _components(model: Wav2Vec2Model) -> Dict[str, List[nn.Module]]:
    return {
        "CNN layer 0": [model.feature_extractor.conv_layers[0]],
        "CNN layers 1-6": list(model.feature_extractor.conv_layers[1:]),
        "feature projection": [model.feature_projection],
        "positional conv": [model.encoder.pos_conv_embed],
        "Transformer layers": list(model.encoder.layers),
    }


def component_medians(
    models: Dict[str, Wav2Vec2Model], seconds: float, rounds: int
) -> Dict[str, Dict[str, float]]:
    """Median milliseconds per component of an eval forward (interleaved rounds after one warm-up, module hooks)."""
    waveform = torch.randn(1, int(seconds * SAMPLE_RATE))
    started: Dict[int, float] = {}
    current: Dict[str, float] = {}

    def hooks(component: str) -> Tuple[Callable, Callable]:
        def pre(module: nn.Module, inputs: object) -> None:
            started[id(module)] = time.perf_counter()

        def post(module: nn.Module, inputs: object, output: object) -> None:
            current[component] = current.get(component, 0.0) + time.perf_counter() - started[id(module)]

        return pre, post

    handles = []
    for model in models.values():
        for component, modules in _components(model).items():
            pre, post = hooks(component)
            for module in modules:
                handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    samples: Dict[str, Dict[str, List[float]]] = {name: {} for name in models}
    try:
        with torch.no_grad():
            for round_index in range(rounds + 1):
                for name, model in models.items():
                    current.clear()
                    model.eval()(waveform)
                    for component, value in current.items():
                        if round_index:
                            samples[name].setdefault(component, []).append(value)
    finally:
        for handle in handles:
            handle.remove()
    return {name: {c: 1e3 * statistics.median(v) for c, v in per.items()} for name, per in samples.items()}


TRAIN_STEPS = ("dense", "gated", "gated + distillation")


def train_step_runs(
    batch: int, seconds: float, kinds: Tuple[str, ...] = TRAIN_STEPS
) -> Dict[str, Callable[[], None]]:
    """A forward+backward step of dense wav2vec2-base, of the same model with HJ-MAC gates and controller,
    and of that gated model distilled from the dense one (layers 4, 8, 12, DPHuBERT-style); only ``kinds``
    are built."""
    torch.manual_seed(0)
    dense = Wav2Vec2Model(timing_config()).train()
    waves = torch.randn(batch, int(seconds * SAMPLE_RATE))
    lengths = torch.full((batch,), waves.shape[1])
    runs: Dict[str, Callable[[], None]] = {}

    def dense_step() -> None:
        dense.zero_grad(set_to_none=True)
        dense(waves, lengths).last_hidden_state.square().mean().backward()

    def gated_step_of(distill: Optional[Dict[str, Any]]) -> Callable[[], None]:
        cfg = PruningConfig.from_dict({"variant": "mac", "target_sparsity": 0.5, "distill": distill})
        distiller = None if distill is None else LayerDistiller(copy.deepcopy(dense).eval(), cfg.distill)
        gated = attach_gates(copy.deepcopy(dense), cfg.gates).train()
        controller = PruningController(gated, cfg).train()

        def step() -> None:
            gated.zero_grad(set_to_none=True)
            controller.zero_grad(set_to_none=True)
            output = gated(waves, lengths)
            task = output.last_hidden_state.square().mean()
            loss = task + controller(gated, task)[0]
            if distiller is not None:
                loss = loss + distiller(waves, lengths, output)
            loss.backward()
            controller.update()  # what the optimizer's step hook does

        return step

    if "dense" in kinds:
        runs["dense"] = dense_step
    if "gated" in kinds:
        runs["gated"] = gated_step_of(None)
    if "gated + distillation" in kinds:
        runs["gated + distillation"] = gated_step_of({"layers": [4, 8, 12]})
    return runs


def step_memory_mb(kind: str, batch: int, seconds: float) -> Tuple[float, float]:
    """Resident memory (MB) of a fresh process that builds what one ``kind`` of training step needs, after
    building and at its peak over two such steps (CPU; the peak includes the allocator's caching, so only
    differences larger than a few tens of MB mean something)."""
    code = (
        "import re, resource; from bench.speed import train_step_runs; "
        f"step = train_step_runs({batch}, {seconds}, ({kind!r},))[{kind!r}]; "
        "built = re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1); step(); step(); "
        "print(built, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    built, peak = done.stdout.split()[-2:]
    return int(built) / 1024, int(peak) / 1024


def profile_difference(runs: Dict[str, Callable[[], None]], top: int = 15) -> str:
    """Per-op self CPU time of one gated and one dense training step, largest increases first."""
    totals: Dict[str, Dict[str, float]] = {}
    for name in ("dense", "gated"):
        runs[name]()  # warm caches and allocator before profiling
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            runs[name]()
        totals[name] = {event.key: event.self_cpu_time_total / 1e3 for event in prof.key_averages()}
    ops = set(totals["dense"]) | set(totals["gated"])
    rows = sorted(
        ((op, totals["dense"].get(op, 0.0), totals["gated"].get(op, 0.0)) for op in ops),
        key=lambda row: row[2] - row[1],
        reverse=True,
    )[:top]
    table_rows = [(op, f"{d:.0f}", f"{g:.0f}", f"{g - d:+.0f}") for op, d, g in rows]
    dense_total, gated_total = sum(totals["dense"].values()), sum(totals["gated"].values())
    table_rows.append(
        ("(all ops)", f"{dense_total:.0f}", f"{gated_total:.0f}", f"{gated_total - dense_total:+.0f}")
    )
    return markdown_table(["op (self CPU)", "dense ms", "gated ms", "difference ms"], table_rows)


def plot_latency(rows: List[Dict], threads: List[int], path: Path) -> None:
    """Latency ratio versus MAC ratio per thread count; the ideal (latency proportional to MACs) dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    axis.plot([0, 1], [0, 1], "k--", linewidth=1, label="latency = MACs")
    hj_rows = [r for r in rows if not r["what_if"]]
    for count_ in threads:
        line = axis.plot(
            [r["mac_ratio"] for r in hj_rows],
            [r["latency_ratio"][count_] for r in hj_rows],
            "o-",
            label=f"HJ-MAC removed, {count_} thread(s)",
        )
        for r in rows:
            if r["what_if"]:
                axis.plot(
                    r["mac_ratio"],
                    r["latency_ratio"][count_],
                    "x",
                    color=line[0].get_color(),
                    markersize=9,
                    label=f"{r['name']}, {count_} thread(s)",
                )
    axis.set_xlabel("MAC ratio (pruned / dense, 10 s)")
    axis.set_ylabel("latency ratio (pruned / dense)")
    axis.set_title("wav2vec2-base on CPU, 10 s of audio")
    axis.set_xlim(0, 1.05)
    axis.set_ylim(0, 1.05)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mac_ratios", type=float, nargs="+", default=[0.9, 0.7, 0.5, 0.3])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length of the latency runs")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (median)")
    parser.add_argument("--prune_updates", type=int, default=500, help="most gate updates of the HJ-MAC run")
    parser.add_argument("--clip_seconds", type=float, default=0.5, help="clip length of the proxy task")
    parser.add_argument("--train_batch", type=int, default=2)
    parser.add_argument("--train_seconds", type=float, default=4.0)
    parser.add_argument("--train_rounds", type=int, default=7)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[2],
        help="thread counts to time latency with; the first also times the breakdown and training",
    )
    parser.add_argument(
        "--align",
        type=int,
        default=8,
        help="add a what-if row: the ~0.5 shape with channels and FFN units rounded down to this (0: off)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few updates and rounds")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.prune_updates, args.train_rounds, args.train_seconds = 3, 20, 2, 1.0
    stopwatch = Stopwatch()
    use_cpu_threads(args.threads[0])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    loads = {"start": load_average()}
    print(f"load average at start: {loads['start']}")

    config = timing_config(dropout=0.0, attention_dropout=0.0, projection_dropout=0.0)
    dense_cost = exact_cost(config, args.seconds)
    shapes = cached_shapes(args, config)
    loads["after the gate run"] = load_average()
    configs = {"dense": config, **{f"HJ-MAC {ratio:g}": cfg for ratio, cfg in shapes.items()}}
    half = min(
        (n for n in configs if n != "dense"),
        key=lambda n: abs(exact_cost(configs[n]).macs / dense_cost.macs - 0.5),
    )
    what_if = f"{half} aligned x{args.align}"
    if args.align:
        configs[what_if] = aligned(configs[half], args.align)
    torch.manual_seed(0)
    models = {name: Wav2Vec2Model(cfg).eval() for name, cfg in configs.items()}

    latency: Dict[int, Dict[str, float]] = {}
    for threads in args.threads:
        use_cpu_threads(threads)
        latency[threads] = interleaved_medians(inference_runs(models, args.seconds), args.rounds)
        loads[f"after latency, {threads} thread(s)"] = load_average()
    use_cpu_threads(args.threads[0])
    rows: List[Dict] = []
    for name, cfg in configs.items():
        cost = exact_cost(cfg, args.seconds)
        rows.append(
            {
                "name": name,
                "what_if": name == what_if,
                "mac_ratio": cost.macs / dense_cost.macs,
                "cnn_mac_ratio": cost.cnn_macs / dense_cost.cnn_macs,
                "param_ratio": cost.params / dense_cost.params,
                "gmacs": cost.macs / 1e9,
                "latency_ms": {t: latency[t][name] * 1e3 for t in args.threads},
                "latency_ratio": {t: latency[t][name] / latency[t]["dense"] for t in args.threads},
                "shape": describe_shape(cfg),
            }
        )
    latency_table = markdown_table(
        [
            "model",
            "MAC ratio",
            "CNN MAC ratio",
            "param ratio",
            f"GMACs @ {args.seconds:g} s",
            *[f"{t} thr: ms / ratio" for t in args.threads],
        ],
        [
            (
                r["name"],
                f"{r['mac_ratio']:.3f}",
                f"{r['cnn_mac_ratio']:.3f}",
                f"{r['param_ratio']:.3f}",
                f"{r['gmacs']:.1f}",
                *[f"{r['latency_ms'][t]:.0f} / {r['latency_ratio'][t]:.3f}" for t in args.threads],
            )
            for r in rows
        ],
    )
    shape_lines = "\n".join(f"- {r['name']}: {r['shape']}" for r in rows[1:])

    compared = ["dense", half] + ([what_if] if args.align else [])
    breakdown = component_medians({n: models[n] for n in compared}, args.seconds, max(3, args.rounds // 3))
    loads["after the breakdown"] = load_average()
    breakdown_table = markdown_table(
        ["component", *[f"{n} ms" for n in compared], *[f"{n} / dense" for n in compared[1:]]],
        [
            (
                c,
                *[f"{breakdown[n][c]:.0f}" for n in compared],
                *[f"{breakdown[n][c] / breakdown['dense'][c]:.2f}" for n in compared[1:]],
            )
            for c in breakdown["dense"]
        ],
    )

    train_runs = train_step_runs(args.train_batch, args.train_seconds)
    train_times = interleaved_medians(train_runs, args.train_rounds)
    loads["after the training steps"] = load_average()
    overhead = train_times["gated"] / train_times["dense"]
    memory = {kind: step_memory_mb(kind, args.train_batch, args.train_seconds) for kind in TRAIN_STEPS}
    loads["after the memory runs"] = load_average()
    labels = {
        "gated": "gated (HJ-MAC gates + controller)",
        "gated + distillation": "gated + distillation (4, 8, 12)",
    }
    train_table = markdown_table(
        [
            "model",
            f"train step ms ({args.train_batch} x {args.train_seconds:g} s, fwd+bwd, median)",
            "ratio",
            "memory MB built / peak (own process)",
        ],
        [
            (
                labels.get(kind, kind),
                f"{train_times[kind] * 1e3:.0f}",
                f"{train_times[kind] / train_times['dense']:.3f}",
                f"{memory[kind][0]:.0f} / {memory[kind][1]:.0f}",
            )
            for kind in TRAIN_STEPS
        ],
    )
    half_row = next(r for r in rows if r["name"] == half)
    half_ratio = half_row["latency_ratio"][args.threads[0]]
    verdict = [
        f"- latency ratio at MAC ratio {half_row['mac_ratio']:.3f} ({args.threads[0]} threads): {half_ratio:.3f} "
        f"(goal <= {LATENCY_GOAL_AT_HALF_MACS}, ideal 0.50): "
        f"{'met' if half_ratio <= LATENCY_GOAL_AT_HALF_MACS else 'NOT met'}",
        f"- training overhead of the gated model: {overhead:.3f} (goal <= {TRAIN_OVERHEAD_GOAL}): "
        f"{'met' if overhead <= TRAIN_OVERHEAD_GOAL else 'NOT met'}",
    ]
    profile = profile_difference(train_runs) if overhead > TRAIN_OVERHEAD_GOAL else ""
    report = "\n\n".join(
        filter(
            None,
            [
                "# Speed: HJ-MAC-pruned wav2vec2-base on CPU",
                f"{args.seconds:g} s of audio, batch 1, eval forward, "
                f"median of {args.rounds} interleaved rounds; random "
                "weights; shapes cut from one HJ-MAC gate run (proxy task) as it passed each ratio.",
                latency_table,
                "Kept structures per layer:\n" + shape_lines,
                f"Where the time goes ({args.threads[0]} threads, median "
                f"of {max(3, args.rounds // 3)} rounds, module hooks):",
                breakdown_table,
                train_table,
                "\n".join(verdict),
                ("Where the gated step spends its extra time (one profiled step each):\n\n" + profile)
                if profile
                else "",
                "Load average (1/5/15 min): " + "; ".join(f"{k}: {v}" for k, v in loads.items()),
                f"Took {stopwatch.elapsed()}.",
            ],
        )
    )
    print(report)
    (RESULTS_DIR / "speed.md").write_text(report + "\n")
    (RESULTS_DIR / "speed.json").write_text(
        json.dumps(
            {
                "latency": rows,
                "breakdown_ms": breakdown,
                "train_step_s": train_times,
                "train_step_peak_memory_mb": memory,
                "overhead": overhead,
                "load": loads,
            },
            indent=1,
        )
    )
    plot_latency(rows, args.threads, RESULTS_DIR / "speed.png")
    print(f"wrote {RESULTS_DIR / 'speed.md'}, speed.json, speed.png")


if __name__ == "__main__":
    main()
