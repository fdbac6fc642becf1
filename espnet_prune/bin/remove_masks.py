"""Cut the pruned units out of a gated ESPnet ASR model: a smaller, ungated model that ESPnet decodes as usual.

    python -m espnet_prune.bin.remove_masks --asr_train_config exp/asr/config.yaml \\
        --asr_model_file exp/asr/latest.pth --out_dir exp/asr/pruned

writes OUT_DIR/config.yaml (encoder_conf / frontend_conf with an explicit ``model_config`` of the kept
sizes, no ``pruning``, no ``ssl_checkpoint``, ``model: espnet``) and OUT_DIR/model.pth, after checking
that the removed model's encoder output equals the gated model's (eval mode). Prints the SSL model's
params and MACs before (dense) and after, at the pruning block's reference duration, and per target the
target, the expected sparsity, the exact sparsity of the trained eval masks and that of the cut.

The budget: when the trained masks are within 3 points of every target, one shift of the controlled gates'
log_alpha brings the cut to the target (``espnet_prune.pruning.budget``); further off, nothing is written
and the exit status is 1, unless --allow_budget_miss (then the trained masks are cut as they are).

HJ-Latency (``variant: latency``): run on the machine the latency table was measured on (the deployment
machine), ``--calibrate_latency N`` times the cut against the dense model and moves the table target by
the miss, up to N times, so that the *measured* latency meets the target, not only the table's
(``espnet_prune.pruning.budget.calibrate_latency``); on another machine it is an error.

OUT_DIR is built in a temporary folder next to it and renamed into place once complete. It must be new,
empty, or the output of an earlier removal of the same run (which it replaces, decodings included): the
training directory itself, or a folder holding another run's config or other files, is refused before
anything is read or written.

Use one checkpoint of the end of training (latest.pth), not an average of gated checkpoints.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

from espnet_prune.cli import add_trust_checkpoint, exit_on_error
from espnet_prune.espnet import ConfigError
from espnet_prune.espnet.asr_removal import max_encode_difference, remove_asr_masks
from espnet_prune.espnet.loading import load_asr_model, read_train_config, read_yaml_mapping
from espnet_prune.espnet.ssl import find_ssl
from espnet_prune.io import atomic_dir
from espnet_prune.profiling import measured_latency_ratio
from espnet_prune.pruning.budget import calibrate_latency, exact_sparsity, fit_to_targets
from espnet_prune.pruning.cost import exact_cost
from espnet_prune.pruning.gating import weight_parameters
from espnet_prune.pruning.latency import LATENCY, exact_quantity, expected_quantity

TOLERANCE = 1e-3
# The trained masks may miss a target by this much; the fit closes it (to within FIT_TOLERANCE where the
# structures' granularity allows).
MAX_MISS = 0.03
# What a removal writes into OUT_DIR (later stages add decodings and reports next to them).
REMOVAL_FILES = ("config.yaml", "model.pth")
# Files that mark a training directory.
TRAINING_FILES = ("checkpoint.pth", "latest.pth", "train.log")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--asr_train_config", type=Path, required=True, help="config.yaml of the pruning run")
    parser.add_argument(
        "--asr_model_file", type=Path, required=True, help="its weights, e.g. exp/asr/latest.pth"
    )
    parser.add_argument(
        "--out_dir", type=Path, required=True, help="where config.yaml and model.pth are written"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="duration for the MAC counts (default: the pruning block's reference_seconds)",
    )
    parser.add_argument(
        "--allow_budget_miss",
        action="store_true",
        help=f"cut the trained masks even when they miss a target by more than {MAX_MISS * 100:g} points",
    )
    parser.add_argument(
        "--calibrate_latency",
        type=int,
        default=0,
        metavar="N",
        help="variant latency, on the latency table's machine: time the cut against the dense model and "
        "refit to the measured miss, at most N times (0: the table's fit only)",
    )
    add_trust_checkpoint(parser)
    return parser


def check_out_dir(out_dir: Path, asr_train_config: Path) -> None:
    """Raise ConfigError unless ``out_dir`` is new, empty, or an earlier removal of the run that
    ``asr_train_config`` describes (the whole folder is replaced, so nothing else may live there)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"--out_dir {out_dir}: exists and is not a directory")
    config = out_dir / "config.yaml"
    training = sorted(name for name in TRAINING_FILES if (out_dir / name).exists())
    if out_dir.resolve() == asr_train_config.resolve().parent or training:
        raise ConfigError(
            f"--out_dir {out_dir}: is a training directory (holds {', '.join(training) or 'config.yaml'}), "
            f"which removal would replace; give a folder of its own, e.g. {out_dir / 'pruned'}"
        )
    if not any(out_dir.iterdir()):
        return
    if not all((out_dir / name).is_file() for name in REMOVAL_FILES):
        found = sorted(p.name for p in out_dir.iterdir())
        raise ConfigError(
            f"--out_dir {out_dir}: holds other files ({', '.join(found[:5])}), which removal would "
            "replace; give a new or empty folder"
        )
    run = read_train_config(asr_train_config).get("output_dir")
    try:
        previous_run = read_yaml_mapping(config).get("output_dir")
    except ConfigError:  # unreadable: not a removal of this run either
        previous_run = None
    if previous_run != run:
        raise ConfigError(
            f"--out_dir {out_dir}: holds the config.yaml of another run (output_dir {previous_run}, "
            f"this run's is {run}); give a new or empty folder"
        )


def _summary(before, after, n_before: int, n_after: int) -> str:
    rows = [
        ("SSL params (M)", before.params / 1e6, after.params / 1e6),
        ("  CNN params (M)", before.cnn_params / 1e6, after.cnn_params / 1e6),
        ("  Transformer params (M)", before.transformer_params / 1e6, after.transformer_params / 1e6),
        (f"SSL GMACs @ {before.seconds:g} s", before.macs / 1e9, after.macs / 1e9),
        ("  CNN GMACs", before.cnn_macs / 1e9, after.cnn_macs / 1e9),
        ("  Transformer GMACs", before.transformer_macs / 1e9, after.transformer_macs / 1e9),
        ("whole ASR model params (M)", n_before / 1e6, n_after / 1e6),
    ]
    lines = [f"{'':<28}{'dense':>12}{'removed':>12}{'kept':>8}"]
    lines += [f"{name:<28}{a:>12.3f}{b:>12.3f}{(b / a if a else 0.0):>8.1%}" for name, a, b in rows]
    return "\n".join(lines)


def budget_report(ssl, allow_budget_miss: bool, calibrate_rounds: int = 0) -> List[str]:
    """Check the trained masks against the targets, fit the gates to them (for a latency target with
    ``calibrate_rounds`` > 0: to the measured latency), and describe both.

    Raises ConfigError when the trained masks miss a target by more than MAX_MISS (unless
    ``allow_budget_miss``: then the trained masks are cut as they are), naming the warm-up as the cause
    when training stopped before it ended, and when calibration is asked where it cannot measure.
    """
    controller, cfg = ssl.controller, ssl.controller.cfg
    seconds, table = cfg.reference_seconds, controller.latency_table
    if calibrate_rounds:
        check_calibration(cfg.variant, table)
    trained = {quantity: exact_sparsity(ssl.model, quantity, seconds, table) for quantity, _ in cfg.targets()}
    misses = [(q, t) for q, t in cfg.targets() if abs(trained[q] - t) > MAX_MISS]
    lines = []
    for quantity, target in cfg.targets():
        dense = exact_quantity(ssl.config, quantity, seconds, table)
        expected_sparsity = (
            1.0 - float(expected_quantity(ssl.model, quantity, seconds, table).detach()) / dense
        )
        lines.append(
            f"{quantity} @ {seconds:g} s: target {target:.1%}, expected {expected_sparsity:.1%}, "
            f"exact (trained masks) {trained[quantity]:.1%}"
        )
    if misses:
        why = ", ".join(f"{q} {trained[q]:.1%} for a target of {t:.1%}" for q, t in misses)
        cause = ""
        if controller.num_updates < cfg.warmup_updates:
            cause = (
                f" Training stopped at update {controller.num_updates}, before the target's warm-up ended "
                f"(update {cfg.warmup_updates}): train longer or shorten warmup_updates."
            )
        message = f"the trained masks miss the budget by more than {MAX_MISS * 100:g} points: {why}.{cause}"
        if not allow_budget_miss:
            raise ConfigError(message + " Pass --allow_budget_miss to cut them as they are.")
        logging.warning(message + " Cutting them as they are (--allow_budget_miss).")
        return lines
    for fit in fit_to_targets(ssl.model, cfg.targets(), seconds, table):
        lines.append(
            f"{fit.quantity}: cut at {fit.fitted:.1%} (every controlled log_alpha shifted by {fit.shift:+.3f})"
        )
    if calibrate_rounds:
        target = dict(cfg.targets())[LATENCY]

        def measure(shape) -> float:
            return measured_latency_ratio(shape, ssl.config, seconds, table.device)

        for k, step in enumerate(
            calibrate_latency(ssl.model, target, seconds, table, measure, calibrate_rounds)
        ):
            lines.append(
                f"latency calibration {k + 1}: table target {step.table_target:.1%}, cut at "
                f"{step.table_sparsity:.1%} by the table, {step.measured_sparsity:.1%} measured"
            )
        lines.append(f"latency: cut at {exact_sparsity(ssl.model, LATENCY, seconds, table):.1%} by the table")
    return lines


def check_calibration(variant: str, table) -> None:
    """ConfigError unless a latency target's cut can be timed here: variant latency, on the table's
    machine (its CPU or its GPU). On a CPU it first sets torch's thread count to the table's, the timing
    then runs with it."""
    if variant != LATENCY:
        raise ConfigError(
            f"--calibrate_latency: the pruning variant is {variant!r}; only variant 'latency' has a "
            "measured target"
        )
    if table.device == "cpu":
        torch.set_num_threads(table.threads)
    differences = table.machine_mismatches()
    if differences:
        raise ConfigError(
            f"--calibrate_latency: this machine is not the latency table's ({'; '.join(differences)}); "
            "calibrate where the table was measured"
        )


def run(
    asr_train_config: Path,
    asr_model_file: Path,
    out_dir: Path,
    seconds: Optional[float] = None,
    allow_budget_miss: bool = False,
    trust_checkpoint: bool = False,
    calibrate_rounds: int = 0,
) -> None:
    """Check the output folder and the budget, fit, remove, verify, report, then write the folder atomically."""
    check_out_dir(out_dir, asr_train_config)
    model, args = load_asr_model(asr_train_config, asr_model_file, trust_checkpoint)
    model.eval()
    name, ssl = find_ssl(model, str(asr_train_config), gated=True)
    dense_config = ssl.config
    n_dense = sum(p.numel() for _, p in weight_parameters(model))
    budget = budget_report(ssl, allow_budget_miss, calibrate_rounds)

    removed, new_args = remove_asr_masks(model, args)
    difference = max_encode_difference(model, removed)
    if difference > TOLERANCE:
        raise RuntimeError(
            f"the removed model's encoder output differs from the gated model's by {difference:.2e}"
        )
    removed_config = removed.get_submodule(name).config
    seconds = seconds or ssl.controller.cfg.reference_seconds
    before, after = exact_cost(dense_config, seconds), exact_cost(removed_config, seconds)
    print(_summary(before, after, n_dense, sum(p.numel() for p in removed.parameters())))
    print(f"\nremoved SSL model, per component:\n{after.table()}\n")
    print("\n".join(budget))

    with atomic_dir(out_dir) as staging:
        torch.save(removed.state_dict(), staging / "model.pth")
        with (staging / "config.yaml").open("w", encoding="utf-8") as f:
            yaml_no_alias_safe_dump(vars(new_args), f, indent=4, sort_keys=False)
    print(
        f"wrote {out_dir / 'config.yaml'} and {out_dir / 'model.pth'} (encoder outputs agree to {difference:.1e})"
    )


def main(cmd: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"
    )
    with exit_on_error("remove_masks"):
        run(
            args.asr_train_config,
            args.asr_model_file,
            args.out_dir,
            args.seconds,
            args.allow_budget_miss,
            args.trust_checkpoint,
            args.calibrate_latency,
        )


if __name__ == "__main__":
    main()
