"""Recipe stages 2-4: copy data dirs to ESPnet's raw dump layout, dropping too short / too long audio.

    python -m espnet_prune.bin.format_data --data_dir data --dump_dir dump/raw \
        --sets train_clean_100 dev_clean --min_seconds 0.5 --max_seconds 20

For each set writes dump/raw/<set>/ with wav.scp, text, utt2spk, spk2utt, utt2num_samples and
feats_type ("raw"), all sets or none. The audio stays where it is (ESPnet reads FLAC and WAV directly).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import soundfile as sf

from espnet_prune.data.errors import DataPrepError
from espnet_prune.data.kaldi import Utterance, read_data_dir, replace_dir, write_data_dir


def _filter_by_duration(
    utterances: List[Utterance], min_seconds: float, max_seconds: float
) -> Tuple[List[Utterance], Dict[str, int], int]:
    """Utterances within the duration limits, their sample counts, and how many were dropped."""
    kept, samples = [], {}
    for utt in utterances:
        try:
            info = sf.info(utt.wav)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise DataPrepError(f"{utt.source}: unreadable audio {utt.wav} ({exc})") from exc
        seconds = info.frames / info.samplerate
        if min_seconds <= seconds <= max_seconds:
            kept.append(utt)
            samples[utt.utt_id] = info.frames
    return kept, samples, len(utterances) - len(kept)


def format_sets(
    data_dir: Path, dump_dir: Path, sets: Sequence[str], min_seconds: float, max_seconds: float
) -> Dict[str, int]:
    """Write dump dirs for ``sets``; returns utterances kept per set. All sets are written or none."""
    planned = {}
    for name in sets:
        utterances = read_data_dir(data_dir / name)
        kept, samples, dropped = _filter_by_duration(utterances, min_seconds, max_seconds)
        if not kept:
            raise DataPrepError(
                f"{data_dir / name}: no utterance between {min_seconds} and {max_seconds} s; check the limits"
            )
        logging.info("%s: %d utterances kept, %d outside [%.1f, %.1f] s", name, len(kept), dropped, min_seconds, max_seconds)
        planned[name] = (kept, samples)
    dump_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".format_data-", dir=dump_dir))
    try:
        for name, (kept, samples) in planned.items():
            write_data_dir(staging / name, kept)
            lines = "".join(f"{utt.utt_id} {samples[utt.utt_id]}\n" for utt in kept)
            (staging / name / "utt2num_samples").write_text(lines)
            (staging / name / "feats_type").write_text("raw\n")
        for name in planned:
            replace_dir(staging / name, dump_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {name: len(kept) for name, (kept, _) in planned.items()}


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, required=True, help="folder holding the prepared data dirs")
    parser.add_argument("--dump_dir", type=Path, required=True, help="output folder (e.g. dump/raw)")
    parser.add_argument("--sets", nargs="+", required=True, help="data dir names to format")
    parser.add_argument("--min_seconds", type=float, default=0.5, help="drop shorter utterances (default 0.5)")
    parser.add_argument("--max_seconds", type=float, default=20.0, help="drop longer utterances (default 20)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = get_parser().parse_args(argv)
    try:
        counts = format_sets(args.data_dir, args.dump_dir, args.sets, args.min_seconds, args.max_seconds)
    except DataPrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    for name, count in counts.items():
        print(f"{args.dump_dir / name}: {count} utterances")


if __name__ == "__main__":
    main()
