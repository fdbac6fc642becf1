"""Synthesize an espeak-ng demo corpus in a real corpus layout (no download needed).

    python -m espnet_prune.bin.synthesize_corpus librispeech --out_dir demo/   # demo/LibriSpeech/...
    python -m espnet_prune.bin.synthesize_corpus slurp --out_dir demo_slurp/     # template commands
    python -m espnet_prune.bin.synthesize_corpus slurp --out_dir demo_slurp/ \\
        --from_annotations ../shared/data/slurp --limit 500                       # real SLURP sentences

The output is read unchanged by prepare_librispeech (--librispeech_dir demo/LibriSpeech) and
prepare_slurp (--slurp_dir demo_slurp). Prints how long the synthesis took.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet_prune.data.synth import (
    VOICES,
    build_librispeech_corpus,
    build_slurp_corpus,
    build_slurp_from_annotations,
)


def get_parser() -> argparse.ArgumentParser:
    """Command-line options (one sub-command per corpus layout)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="corpus", required=True)

    libri = sub.add_parser("librispeech", help="sentences of a small grammar in the LibriSpeech layout")
    libri.add_argument("--n_train", type=int, default=600, help="training sentences (default: %(default)s)")
    libri.add_argument("--n_dev", type=int, default=100, help="dev sentences (default: %(default)s)")
    libri.add_argument("--n_test", type=int, default=100, help="test sentences (default: %(default)s)")
    libri.add_argument(
        "--utts_per_sentence", type=int, default=2, help="speakers per sentence (default: %(default)s)"
    )
    libri.add_argument(
        "--num_speakers",
        type=int,
        default=len(VOICES),
        help=f"espeak-ng voices used, at most {len(VOICES)} (default: %(default)s)",
    )

    slurp = sub.add_parser("slurp", help="voice commands with intents in the SLURP layout")
    slurp.add_argument("--n_train", type=int, default=800, help="training sentences (default: %(default)s)")
    slurp.add_argument("--n_devel", type=int, default=100, help="devel sentences (default: %(default)s)")
    slurp.add_argument("--n_test", type=int, default=150, help="test sentences (default: %(default)s)")
    slurp.add_argument(
        "--recordings_per_sentence",
        type=int,
        default=None,
        help="voices per sentence (default: 2 for the template corpus, 1 with --from_annotations)",
    )
    slurp.add_argument(
        "--from_annotations",
        type=Path,
        help="speak the real SLURP sentences of this folder (devel.jsonl -> train/devel, "
        "test.jsonl -> test) under their real recording names instead",
    )
    slurp.add_argument(
        "--limit", type=int, help="with --from_annotations: at most this many sentences per file"
    )

    for p in (libri, slurp):
        p.add_argument("--out_dir", type=Path, required=True, help="corpus root to write")
        p.add_argument("--seed", type=int, default=0, help="seed of the sentence and voice choices")
        p.add_argument(
            "--workers", type=int, default=2, help="parallel espeak-ng processes (default: %(default)s)"
        )
        p.add_argument("--overwrite", action="store_true", help="replace an existing corpus in --out_dir")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Build the corpus; returns the exit status."""
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    common = dict(seed=args.seed, workers=args.workers, overwrite=args.overwrite)
    try:
        if args.corpus == "librispeech":
            path, stats = build_librispeech_corpus(
                args.out_dir,
                args.n_train,
                args.n_dev,
                args.n_test,
                args.utts_per_sentence,
                args.num_speakers,
                **common,
            )
        elif args.from_annotations is not None:
            path, stats = build_slurp_from_annotations(
                args.from_annotations, args.out_dir, args.limit, args.recordings_per_sentence or 1, **common
            )
        else:
            path, stats = build_slurp_corpus(
                args.out_dir,
                args.n_train,
                args.n_devel,
                args.n_test,
                args.recordings_per_sentence or 2,
                **common,
            )
    except (ValueError, RuntimeError) as exc:  # DataPrepError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
