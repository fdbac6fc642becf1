"""Recipe stages 2-4: copy data dirs to ESPnet's raw dump layout, checking the audio and dropping too
short / too long utterances.

    python -m espnet_prune.bin.format_data --data_dir data --dump_dir dump/raw \
        --sets train_clean_100 dev_clean --min_seconds 0.5 --max_seconds 20 [--skip_bad true]

Every audio file must be readable, mono, 16 kHz and not empty: a bad one is an error naming the line of
wav.scp and the file, or with --skip_bad it is skipped, counted and the count printed. For each set
writes dump/raw/<set>/ with wav.scp, text, utt2spk, spk2utt, utt2num_samples and feats_type ("raw"), all
sets or none. The audio stays where it is (ESPnet reads FLAC and WAV directly).
"""

from __future__ import annotations

import argparse
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_prune.cli import add_switch, exit_on_error
from espnet_prune.data.audio import SAMPLE_RATE, good_audio_samples
from espnet_prune.data.errors import BadInputs, DataPrepError
from espnet_prune.data.kaldi import Utterance, read_data_dir, write_data_dir
from espnet_prune.io import atomic_dir


def _filter_by_duration(
    utterances: List[Utterance], samples: Dict[str, int], min_seconds: float, max_seconds: float
) -> List[Utterance]:
    """The utterances (with good audio, i.e. in ``samples``) within the duration limits."""
    return [
        u
        for u in utterances
        if u.utt_id in samples and min_seconds <= samples[u.utt_id] / SAMPLE_RATE <= max_seconds
    ]


def format_sets(
    data_dir: Path,
    dump_dir: Path,
    sets: Sequence[str],
    min_seconds: float,
    max_seconds: float,
    skip_bad: bool = False,
) -> Dict[str, Tuple[int, int]]:
    """Write dump dirs for ``sets``; returns (utterances kept, bad audio files skipped) per set. All sets
    are written or none; a bad audio file is a DataPrepError unless ``skip_bad``."""
    planned = {}
    for name in sets:
        utterances = read_data_dir(data_dir / name)
        bad = BadInputs(skip_bad, f"{data_dir / name}")
        samples = good_audio_samples(utterances, bad)
        kept = _filter_by_duration(utterances, samples, min_seconds, max_seconds)
        if not kept:
            raise DataPrepError(
                f"{data_dir / name}: no utterance between {min_seconds} and {max_seconds} s with good audio; "
                "check the limits"
            )
        logging.info(
            "%s: %d utterances kept, %d outside [%.1f, %.1f] s, %d bad audio files skipped",
            name,
            len(kept),
            len(samples) - len(kept),
            min_seconds,
            max_seconds,
            bad.count,
        )
        bad.log_summary()
        planned[name] = (kept, samples, bad.count)
    with ExitStack() as stack:
        for name, (kept, samples, _) in planned.items():
            staging = stack.enter_context(atomic_dir(dump_dir / name))
            write_data_dir(staging, kept)
            (staging / "utt2num_samples").write_text(
                "".join(f"{u.utt_id} {samples[u.utt_id]}\n" for u in kept)
            )
            (staging / "feats_type").write_text("raw\n")
    return {name: (len(kept), skipped) for name, (kept, _, skipped) in planned.items()}


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_dir", type=Path, required=True, help="folder holding the prepared data dirs")
    parser.add_argument("--dump_dir", type=Path, required=True, help="output folder (e.g. dump/raw)")
    parser.add_argument("--sets", nargs="+", required=True, help="data dir names to format")
    parser.add_argument(
        "--min_seconds", type=float, default=0.5, help="drop shorter utterances (default 0.5)"
    )
    parser.add_argument("--max_seconds", type=float, default=20.0, help="drop longer utterances (default 20)")
    add_switch(
        parser,
        "--skip_bad",
        "skip and count utterances whose audio is missing, unreadable, empty, "
        "not mono or not 16 kHz, instead of stopping at the first",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = get_parser().parse_args(argv)
    with exit_on_error("format_data"):
        counts = format_sets(
            args.data_dir, args.dump_dir, args.sets, args.min_seconds, args.max_seconds, args.skip_bad
        )
    for name, (count, skipped) in counts.items():
        print(
            f"{args.dump_dir / name}: {count} utterances"
            + (f", {skipped} bad audio files skipped" if skipped else "")
        )


if __name__ == "__main__":
    main()
