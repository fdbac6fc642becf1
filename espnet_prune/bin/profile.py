"""Cost report of a (pruned) wav2vec2 / HuBERT model: params and MACs per component at a stated duration,
measured CPU latency, kept CNN channels / heads / FFN units per layer, and a PNG of the kept sizes.

    python -m espnet_prune.bin.profile --asr_train_config exp/asr/pruned/config.yaml \\
        --asr_model_file exp/asr/pruned/model.pth --seconds 10 --png exp/asr/pruned/profile.png
    python -m espnet_prune.bin.profile --preset wav2vec2_base --seconds 10
    python -m espnet_prune.bin.profile --asr_train_config conf/train.yaml --latency_table lat.json \\
        --seconds 10 --threads 4 --device cpu

``--latency_table OUT.json`` measures the latency table of HJ-Latency (``pruning.variant: latency``) for
the dense geometry of the model (a gated run's config gives the geometry it prunes) on this machine
(``--device``, ``--threads``) instead of the report, with ``--repeats`` interleaved rounds; run it on
the deployment hardware, idle. It prints the fit error on held-out sizes.

An ESPnet model is read through its config (gated models are measured after mask removal, against their
dense geometry); ``--model_config`` / ``--preset`` profile a bare geometry with random weights.
``--reference_config`` / ``--reference_preset`` name the dense model to compare with.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from espnet_prune.cli import add_trust_checkpoint, exit_on_error
from espnet_prune.constants import SAMPLE_RATE
from espnet_prune.io import atomic_write
from espnet_prune.models import PRESETS, Wav2Vec2Config, Wav2Vec2Model
from espnet_prune.profiling import measure_latency_table
from espnet_prune.pruning.cost import exact_cost
from espnet_prune.pruning.removal import remove_masks

# (structure, kept units per layer, dense units per layer or None)
Rows = List[Tuple[str, List[int], Optional[List[int]]]]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--asr_train_config", type=Path, help="config.yaml of an ESPnet run (gated or removed)"
    )
    source.add_argument("--model_config", type=Path, help="a Wav2Vec2Config YAML file")
    source.add_argument("--preset", choices=sorted(PRESETS), help="a named geometry")
    parser.add_argument("--asr_model_file", type=Path, default=None, help="weights for --asr_train_config")
    reference = parser.add_mutually_exclusive_group()
    reference.add_argument("--reference_config", type=Path, help="dense Wav2Vec2Config YAML to compare with")
    reference.add_argument(
        "--reference_preset", choices=sorted(PRESETS), help="dense geometry to compare with"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="audio duration for MACs and latency")
    parser.add_argument(
        "--num_threads",
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="CPU threads for latency",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes (median reported)")
    parser.add_argument(
        "--png", type=Path, default=None, help="write a bar chart of the kept sizes per layer"
    )
    add_trust_checkpoint(parser)
    parser.add_argument(
        "--latency_table",
        type=Path,
        default=None,
        help="measure the HJ-Latency table of the dense geometry on this machine and write it here",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of --latency_table")
    parser.add_argument(
        "--grid_points", type=int, default=6, help="grid points per size axis of --latency_table"
    )
    return parser


def load_model(args: argparse.Namespace) -> Tuple[Wav2Vec2Model, Optional[Wav2Vec2Config]]:
    """The ungated model to measure, and the dense geometry it came from when that is known."""
    if args.asr_train_config is not None:
        from espnet_prune.espnet.loading import load_asr_model
        from espnet_prune.espnet.ssl import find_ssl

        model, _ = load_asr_model(args.asr_train_config, args.asr_model_file, args.trust_checkpoint)
        ssl = find_ssl(model, str(args.asr_train_config))[1].eval()
        if ssl.controller is None:
            return ssl.model, None
        return remove_masks(ssl.model)[0], ssl.config
    if args.model_config is not None:
        return Wav2Vec2Model(Wav2Vec2Config.load_yaml(args.model_config)), None
    return Wav2Vec2Model(PRESETS[args.preset]()), None


@torch.inference_mode()
def measure_latency(model: Wav2Vec2Model, seconds: float, repeats: int) -> float:
    """Median wall time (s) of an eval forward pass on one random waveform, after one warm-up pass."""
    model.eval()
    waveform = torch.randn(1, int(seconds * SAMPLE_RATE))
    model(waveform)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(waveform)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kept_rows(config: Wav2Vec2Config, reference: Optional[Wav2Vec2Config]) -> Rows:
    """(structure, kept per layer, reference per layer) for CNN channels, heads and FFN units."""

    def sizes(c: Wav2Vec2Config) -> List[List[int]]:
        return [[layer[0] for layer in c.conv_layers], c.num_heads, c.ffn_dims]

    names = ["CNN channels", "attention heads", "FFN units"]
    if reference is None:
        return [(name, kept, None) for name, kept in zip(names, sizes(config))]
    # Layers the reference has beyond this model (e.g. dropped by output_layer) count as fully removed.
    rows = zip(names, sizes(config), sizes(reference))
    return [(name, kept + [0] * (len(ref) - len(kept)), ref) for name, kept, ref in rows]


def plot(rows: Rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.5))
    for ax, (name, kept, reference) in zip(axes, rows):
        if reference is not None:
            ax.bar(range(1, len(reference) + 1), reference, color="lightgray", label="dense")
        ax.bar(range(1, len(kept) + 1), kept, color="tab:blue", label="kept")
        ax.set_title(name)
        ax.set_xlabel("layer")
        ax.set_xticks(range(1, max(len(kept), len(reference or [])) + 1))
        if reference is not None:
            ax.legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    if args.asr_model_file is not None and args.asr_train_config is None:
        parser.error("--asr_model_file needs --asr_train_config")
    with exit_on_error("profile"):
        model, dense = load_model(args)
        reference = dense
        if args.reference_config is not None:
            reference = Wav2Vec2Config.load_yaml(args.reference_config)
        elif args.reference_preset is not None:
            reference = PRESETS[args.reference_preset]()
    torch.set_num_threads(args.num_threads)
    if args.latency_table is not None:
        with exit_on_error("profile"):
            geometry = dense if dense is not None else model.config
            table = measure_latency_table(geometry, args.seconds, args.device, args.repeats, args.grid_points)
        table.save(args.latency_table)
        print(f"wrote {args.latency_table}")
        return
    config = model.config
    cost = exact_cost(config, args.seconds)
    print(cost.table())
    if reference is not None:
        dense = exact_cost(reference, args.seconds)
        print(f"vs dense: params {cost.params / dense.params:.1%}, MACs {cost.macs / dense.macs:.1%}")
    latency = measure_latency(model, args.seconds, args.repeats)
    print(
        f"CPU latency ({args.num_threads} threads, {args.seconds:g} s of audio): {latency * 1000:.1f} ms "
        f"(real-time factor {latency / args.seconds:.3f})"
    )
    rows = kept_rows(config, reference)
    for name, kept, ref in rows:
        shown = kept if ref is None else [f"{k}/{r}" for k, r in zip(kept, ref)]
        print(f"{name:<16} " + " ".join(str(s) for s in shown))
    if args.png is not None:
        plot(rows, args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
