"""Cut the pruned units out of a gated ESPnet ASR model: a smaller, ungated model that ESPnet decodes as usual.

    python -m espnet_prune.bin.remove_masks --asr_train_config exp/asr/config.yaml \\
        --asr_model_file exp/asr/latest.pth --out_dir exp/asr/removed

writes OUT_DIR/config.yaml (encoder_conf / frontend_conf with an explicit ``model_config`` of the kept
sizes, no ``pruning``, no ``ssl_checkpoint``, ``model: espnet``) and OUT_DIR/model.pth, after checking
that the removed model's encoder output equals the gated model's (eval mode). Prints the SSL model's
params and MACs before (dense) and after, at the pruning block's reference duration.

Use one checkpoint of the end of training (latest.pth), not an average of gated checkpoints.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

from espnet_prune.espnet import ConfigError, PrunedASRTask
from espnet_prune.espnet.removal import gated_module, max_encode_difference, remove_asr_masks
from espnet_prune.pruning.cost import exact_cost

TOLERANCE = 1e-3


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asr_train_config", type=Path, required=True, help="config.yaml of the pruning run")
    parser.add_argument("--asr_model_file", type=Path, required=True, help="its weights, e.g. exp/asr/latest.pth")
    parser.add_argument("--out_dir", type=Path, required=True, help="where config.yaml and model.pth are written")
    parser.add_argument("--seconds", type=float, default=None,
                        help="duration for the MAC counts (default: the pruning block's reference_seconds)")
    return parser


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


def run(asr_train_config: Path, asr_model_file: Path, out_dir: Path, seconds: Optional[float] = None) -> None:
    """Remove, verify, report, then write both files (each atomically)."""
    model, args = PrunedASRTask.build_model_from_file(asr_train_config, asr_model_file)
    model.eval()
    name, ssl = gated_module(model)
    controller = ssl.controller
    cfg = controller.cfg
    dense_config = ssl.config
    n_dense = sum(p.numel() for key, p in model.named_parameters() if not key.endswith(("log_alpha", "lambdas")))

    removed, new_args = remove_asr_masks(model, args)
    difference = max_encode_difference(model, removed)
    if difference > TOLERANCE:
        raise RuntimeError(f"the removed model's encoder output differs from the gated model's by {difference:.2e}")
    removed_config = removed.get_submodule(name).config
    seconds = seconds or cfg.reference_seconds
    before, after = exact_cost(dense_config, seconds), exact_cost(removed_config, seconds)
    print(_summary(before, after, n_dense, sum(p.numel() for p in removed.parameters())))
    print(f"\nremoved SSL model, per component:\n{after.table()}\n")
    reference = exact_cost(dense_config, cfg.reference_seconds), exact_cost(removed_config, cfg.reference_seconds)
    for quantity, final in cfg.targets():
        achieved = 1.0 - getattr(reference[1], quantity) / getattr(reference[0], quantity)
        print(f"sparsity of {quantity} @ {cfg.reference_seconds:g} s: {achieved:.1%} (target {final:.1%})")
    if controller.num_updates < int(cfg.warmup_updates):
        logging.warning(f"the checkpoint is from update {controller.num_updates}, before the target warm-up ended "
                        f"({cfg.warmup_updates} updates): its sparsity is below the final target")

    out_dir.mkdir(parents=True, exist_ok=True)
    model_tmp, config_tmp = out_dir / ".model.pth.tmp", out_dir / ".config.yaml.tmp"
    torch.save(removed.state_dict(), model_tmp)
    with config_tmp.open("w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(vars(new_args), f, indent=4, sort_keys=False)
    os.replace(model_tmp, out_dir / "model.pth")
    os.replace(config_tmp, out_dir / "config.yaml")
    print(f"wrote {out_dir / 'config.yaml'} and {out_dir / 'model.pth'} (encoder outputs agree to {difference:.1e})")


def main(cmd: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        run(args.asr_train_config, args.asr_model_file, args.out_dir, args.seconds)
    except ConfigError as exc:
        sys.exit(f"remove_masks: error: {exc}")


if __name__ == "__main__":
    main()
