"""Shared test fixtures: the tiny wav2vec2 every test builds, directly (``tiny_config``, with the overrides a
test needs) or through the ESPnet configs of the repository (``TINY_MODEL``, ``TINY_TRAIN_CONFIG``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, List, Sequence

from espnet_prune.models import Wav2Vec2Config

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = REPO / "conf" / "model" / "tiny_wav2vec2.yaml"  # the tiny geometry of the ESPnet tests and demo
TINY_TRAIN_CONFIG = REPO / "conf" / "train" / "tiny_hj_mac_50.yaml"  # HJ-MAC at 50% for that model
TINY_TOKENS = ["<blank>", "<unk>", "<space>", "A", "B", "C", "<sos/eos>"]
# The demo's closing line (pruned_asr_demo.sh): the total, its two parts and the load average.
_MINUTES = r"\d+ min \d+ s"
DEMO_FINISHED = re.compile(
    rf"demo finished in {_MINUTES} \(data and stand-in: {_MINUTES}; fine-tunings, decoding, table: {_MINUTES}; "
    r"load average: [\d.]+ [\d.]+ [\d.]+\)"
)


def tiny_asr_args(root: Path, tokens: Sequence[str] = TINY_TOKENS) -> List[str]:
    """ESPnet asr_train arguments of the tiny HJ-MAC model (TINY_TRAIN_CONFIG with TINY_MODEL): the token list
    is written into ``root``, the output dir is ``root/exp``."""
    (root / "tokens.txt").write_text("\n".join(tokens) + "\n")
    return [
        "--config",
        str(TINY_TRAIN_CONFIG),
        "--encoder_conf",
        f"model_config={TINY_MODEL}",
        "--token_list",
        str(root / "tokens.txt"),
        "--output_dir",
        str(root / "exp"),
    ]


def tiny_config(**overrides: Any) -> Wav2Vec2Config:
    """A tiny pre-LN wav2vec2 (layer-norm CNN with bias): about 0.2 M parameters, builds in milliseconds.

    Its CNN holds about 15% of the parameters, so totals and Transformer-only counts differ visibly.
    Tests that need another geometry (fewer layers, ragged sizes, another norm) pass it as overrides.
    """
    settings: Any = dict(
        conv_layers=[(32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 2, 2)],
        extractor_mode="layer_norm",
        conv_bias=True,
        embed_dim=32,
        num_heads=[4] * 4,
        head_dim=8,
        ffn_dims=[128] * 4,
        layer_norm_first=True,
        pos_conv_kernel=16,
        pos_conv_groups=4,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        projection_dropout=0.0,
        layer_drop=0.0,
    )
    settings.update(overrides)
    return Wav2Vec2Config(**settings)
