"""The comparison table a recipe prints at the end: params, MACs, CPU latency and error rates per model.

    python -m espnet_prune.bin.compare --dump_dir dump/raw --sets test_clean \
        --run dense=exp/asr_demo_dense --run HJ-MAC=exp/asr_demo_hj_mac/pruned [--intent_first | --entity] \
        --out exp/asr_demo_table.md

A run dir holds config.yaml and the model (model.pth after mask removal, else latest.pth) and the
decoding outputs decode_*/<set>/1best_recog/text of recipe stage 12. MACs are counted and latency (the
median wall time of the SSL model with --num_threads CPU threads) measured on --seconds of random audio:
by default the ``reference_seconds`` the pruned runs' budget was set at (10 s when no run has one).
With --entity (SLURP entity mode) each set also gets SLU-F1 and span F1 (espnet_prune/eval/slu_f1.py).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from espnet_prune.cli import add_trust_checkpoint, exit_on_error
from espnet_prune.eval.scoring import score
from espnet_prune.io import atomic_write
from espnet_prune.pruning.cost import exact_cost


def _model_file(run_dir: Path) -> Path:
    for name in ("model.pth", "latest.pth"):
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir}: neither model.pth nor latest.pth")


def _decode_dir(run_dir: Path) -> Path:
    found = sorted(run_dir.glob("decode_*"))
    if not found:
        raise FileNotFoundError(f"{run_dir}: no decode_* dir (run stage 12 first)")
    return found[0]


# train.log as ESPnet's launcher renames it when a run is started again (train.1.log is the newest).
LOG_ROTATED = re.compile(r"train\.(\d+)\.log")


def training_updates(run_dir: Path) -> str:
    """Updates the run's model was trained for, from ESPnet's train.log: "1800", or "1800 + 600" when
    it was initialised from another run (``init_param``); "?" when no log counts them.

    A resumed run starts a new train.log and ESPnet renames the older ones train.1.log, train.2.log, ...
    (its count is cumulative), so the newest log with an epoch's results has the count."""
    train_dir = run_dir if (run_dir / "train.log").is_file() else run_dir.parent
    numbered = [(int(m[1]), p) for p in train_dir.glob("train.*.log") if (m := LOG_ROTATED.fullmatch(p.name))]
    updates = "?"
    for log in [train_dir / "train.log", *(path for _, path in sorted(numbered))]:  # newest first
        if not log.is_file():
            continue
        counts = re.findall(r"epoch results: \[train\].*?total_count=(\d+)", log.read_text(errors="replace"))
        if counts:
            updates = counts[-1]
            break
    from espnet_prune.espnet.loading import read_train_config

    config = read_train_config(train_dir / "config.yaml") if (train_dir / "config.yaml").is_file() else {}
    init = config.get("init_param") or []
    if init:
        source = Path(str(init[0]).split(":")[0]).parent
        return f"{training_updates(source)} + {updates}"
    return updates


def budget_seconds(run_dirs: Sequence[Path]) -> float:
    """The ``reference_seconds`` of the pruning blocks of the runs' training configs (a removed model's
    dir: its parent's), so the table prices MACs where the budget was set; 10 s when no run is gated."""
    from espnet_prune.espnet.loading import read_train_config
    from espnet_prune.espnet.ssl import load_mapping
    from espnet_prune.pruning import PruningConfig

    found = {}
    for run_dir in run_dirs:
        for config_file in (run_dir / "config.yaml", run_dir.parent / "config.yaml"):
            if config_file.is_file():
                key = f"{config_file}: encoder_conf.pruning"
                encoder_conf = read_train_config(config_file).get("encoder_conf") or {}
                pruning = load_mapping(encoder_conf.get("pruning"), key)
                if pruning is not None:  # parsed as training parses it: its default, its checks
                    found[config_file] = PruningConfig.from_dict(pruning, source=key).reference_seconds
                    break
    if len(set(found.values())) > 1:
        listing = ", ".join(f"{path}: {seconds:g}" for path, seconds in found.items())
        raise ValueError(f"the runs price MACs at different reference_seconds ({listing}); give --seconds")
    return next(iter(found.values()), 10.0)


def measure_run(
    run_dir: Path, seconds: float, repeats: int, trust_checkpoint: bool = False
) -> Tuple[int, int, float]:
    """(SSL params, SSL MACs at ``seconds``, median CPU latency in s) of a run's (removed) model."""
    from espnet_prune.bin.profile import measure_latency
    from espnet_prune.espnet.loading import load_asr_model
    from espnet_prune.espnet.ssl import find_ssl
    from espnet_prune.pruning.removal import remove_masks

    model, _ = load_asr_model(run_dir / "config.yaml", _model_file(run_dir), trust_checkpoint)
    ssl = find_ssl(model, str(run_dir / "config.yaml"))[1].eval()
    ssl_model = remove_masks(ssl.model)[0] if ssl.controller is not None else ssl.model
    cost = exact_cost(ssl_model.config, seconds)
    return cost.params, cost.macs, measure_latency(ssl_model, seconds, repeats)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", action="append", required=True, metavar="NAME=DIR", help="a model to compare"
    )
    parser.add_argument("--dump_dir", type=Path, required=True, help="folder of the reference data dirs")
    parser.add_argument("--sets", nargs="+", required=True, help="test sets")
    parser.add_argument("--intent_first", action="store_true", help="first token is an intent (SLU)")
    parser.add_argument(
        "--entity",
        action="store_true",
        help="SLURP entity mode texts: intent accuracy, SLU-F1 and span F1, WER/CER of the transcript",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="audio duration for MACs and latency (default: the gated runs' reference_seconds, else 10)",
    )
    parser.add_argument("--num_threads", type=int, default=2, help="CPU threads for the latency")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes (median reported)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    add_trust_checkpoint(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    torch.set_num_threads(args.num_threads)
    rows: List[List[str]] = []
    reference: Optional[Tuple[int, int, float]] = None
    with exit_on_error("compare"):
        runs = []
        for spec in args.run:
            name, sep, run_dir = spec.partition("=")
            if not sep:
                raise ValueError(f"--run {spec!r}: expected NAME=DIR")
            runs.append((name, Path(run_dir)))
        if args.seconds is None:
            args.seconds = budget_seconds([run_dir for _, run_dir in runs])
        for name, run_dir in runs:
            params, macs, latency = measure_run(run_dir, args.seconds, args.repeats, args.trust_checkpoint)
            reference = reference or (params, macs, latency)
            decode_dir = _decode_dir(run_dir)
            row = [
                name,
                f"{params / 1e6:.2f} ({params / reference[0]:.0%})",
                f"{macs / 1e9:.3f} ({macs / reference[1]:.0%})",
                f"{latency * 1000:.0f} ({latency / reference[2]:.0%})",
                training_updates(run_dir),
            ]
            for dset in args.sets:
                result = score(
                    args.dump_dir / dset / "text",
                    decode_dir / dset / "1best_recog" / "text",
                    args.intent_first,
                    args.entity,
                )
                if args.intent_first or args.entity:
                    row.append(f"{100 * result.intent_accuracy:.1f}")
                if result.slu is not None:
                    row += [f"{100 * result.slu.slu.f1:.1f}", f"{100 * result.slu.span.f1:.1f}"]
                row += [f"{100 * result.wer:.1f}", f"{100 * result.cer:.1f}"]
            rows.append(row)
    header = [
        "model",
        "SSL params M",
        f"GMACs / {args.seconds:g} s",
        f"CPU ms / {args.seconds:g} s",
        "training updates",
    ]
    for dset in args.sets:
        header += [f"{dset} intent acc %"] if args.intent_first or args.entity else []
        header += [f"{dset} SLU-F1 %", f"{dset} span F1 %"] if args.entity else []
        header += [f"{dset} WER %", f"{dset} CER %"]
    table = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(r) + " |" for r in rows]
    )
    print(table)
    if args.out is not None:
        with atomic_write(args.out) as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
