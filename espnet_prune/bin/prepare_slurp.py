"""Prepare Kaldi-style data dirs from SLURP (recipe stage 1).

    python -m espnet_prune.bin.prepare_slurp --slurp_dir /corpora/slurp --out_dir data/

reads <slurp_dir>/dataset/slurp/*.jsonl (+ metadata.json) and <slurp_dir>/audio/slurp_{real,synth}/,
and writes data/train/, data/devel/, data/test/ (wav.scp, text "<scenario>_<action> TRANSCRIPT",
utt2spk, spk2utt), all or none. --annotations_dir / --audio_dir override the two halves of that layout.
With --entity the text also carries the entity spans of sentence_annotation (SLURP entity mode, as
ESPnet's egs2/slurp_entity): "alarm_set sep [time] fill SEVEN AM sep WAKE ME UP AT SEVEN AM".
With --download, SLURP is first downloaded into --slurp_dir (GitHub annotations, Zenodo audio).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet_prune.data.errors import DataPrepError
from espnet_prune.data.slurp import SETS, download_slurp, prepare_slurp


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slurp_dir", type=Path, help="SLURP root (dataset/slurp/ and audio/ inside)")
    parser.add_argument(
        "--annotations_dir",
        type=Path,
        help="folder with the jsonl files (default: <slurp_dir>/dataset/slurp)",
    )
    parser.add_argument(
        "--audio_dir", type=Path, help="folder with slurp_real/ and slurp_synth/ (default: <slurp_dir>/audio)"
    )
    parser.add_argument(
        "--metadata",
        type=Path,
        help="speaker metadata.json (default: <annotations_dir>/metadata.json when present)",
    )
    parser.add_argument(
        "--sets", nargs="+", default=list(SETS), choices=SETS, help="sets (default: %(default)s)"
    )
    parser.add_argument("--out_dir", type=Path, required=True, help="where the data dirs are written")
    parser.add_argument(
        "--skip_bad",
        action="store_true",
        help="skip and count bad inputs (bad jsonl lines, missing/unreadable audio) instead of failing",
    )
    parser.add_argument("--download", action="store_true", help="download SLURP into --slurp_dir first")
    parser.add_argument(
        "--entity",
        action="store_true",
        help="entity mode: text '<intent> sep [type] fill WORDS ... sep TRANSCRIPT' from "
        "sentence_annotation (checked against 'entities'), scored with SLU-F1",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the preparation; returns the exit status (1 with one clear message on bad input)."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.slurp_dir is None and (args.download or args.annotations_dir is None or args.audio_dir is None):
        parser.error("give --slurp_dir, or both --annotations_dir and --audio_dir (without --download)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.download:
            download_slurp(args.slurp_dir)
        prepared = prepare_slurp(
            args.annotations_dir or args.slurp_dir / "dataset" / "slurp",
            args.audio_dir or args.slurp_dir / "audio",
            args.out_dir,
            sets=args.sets,
            metadata=args.metadata,
            skip_bad=args.skip_bad,
            entity=args.entity,
        )
    except DataPrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, result in prepared.items():
        print(f"{name}: {result.num_utterances} utterances -> {result.path} (skipped {len(result.skipped)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
