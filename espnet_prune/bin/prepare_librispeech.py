"""Prepare Kaldi-style data dirs from LibriSpeech (recipe stage 1).

    python -m espnet_prune.bin.prepare_librispeech --librispeech_dir /corpora/LibriSpeech \\
        --subsets train-clean-100 dev-clean test-clean --out_dir data/

writes data/train_clean_100/, data/dev_clean/, ... (wav.scp, text, utt2spk, spk2utt), all or none.
With --download_dir the subsets are first downloaded from openslr (resumable, md5-checked).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet_prune.data.errors import DataPrepError
from espnet_prune.data.librispeech import SUBSETS, download_librispeech, prepare_librispeech

DEFAULT_SUBSETS = ["train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other"]


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--librispeech_dir", type=Path, help="existing folder holding the subsets (.../LibriSpeech)"
    )
    source.add_argument(
        "--download_dir",
        type=Path,
        help="download the subsets into this folder first (.../LibriSpeech inside)",
    )
    parser.add_argument(
        "--subsets",
        nargs="+",
        default=DEFAULT_SUBSETS,
        choices=SUBSETS,
        metavar="SUBSET",
        help=f"subsets to prepare (default: %(default)s; known: {' '.join(SUBSETS)})",
    )
    parser.add_argument("--out_dir", type=Path, required=True, help="where the data dirs are written")
    parser.add_argument(
        "--skip_bad",
        action="store_true",
        help="skip and count bad inputs (missing text/audio, unreadable audio) instead of failing",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the preparation; returns the exit status (1 with one clear message on bad input)."""
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        root = args.librispeech_dir or download_librispeech(args.subsets, args.download_dir)
        prepared = prepare_librispeech(root, args.subsets, args.out_dir, skip_bad=args.skip_bad)
    except DataPrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for subset, result in prepared.items():
        print(
            f"{subset}: {result.num_utterances} utterances -> {result.path} (skipped {len(result.skipped)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
