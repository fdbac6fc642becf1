"""Sanity checks of audio files before they enter a data dir.

A broken file otherwise surfaces hours later as a crash inside a training data loader; here it is
one clear error naming the file, or (``skip_bad``) a skipped and counted utterance.
Only the header is read (``soundfile.info``), which keeps the check cheap on a full corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import soundfile as sf

from espnet_prune.constants import SAMPLE_RATE
from espnet_prune.data.errors import BadInputs, DataPrepError
from espnet_prune.data.kaldi import Utterance


def check_audio(path: Path, sample_rate: int = SAMPLE_RATE) -> float:
    """Return the duration in seconds of a readable, non-empty, mono file at ``sample_rate``.

    Raises DataPrepError naming the file otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise DataPrepError(f"{path}: audio file missing")
    if path.stat().st_size == 0:
        raise DataPrepError(f"{path}: empty audio file (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise DataPrepError(f"{path}: unreadable audio file ({exc})") from exc
    if info.frames == 0:
        raise DataPrepError(f"{path}: empty audio file (no samples)")
    if info.samplerate != sample_rate:
        raise DataPrepError(f"{path}: sample rate {info.samplerate} Hz, expected {sample_rate} Hz")
    if info.channels != 1:
        raise DataPrepError(f"{path}: {info.channels} channels, expected mono")
    return info.frames / info.samplerate


def keep_good_audio(
    utterances: Sequence[Utterance], bad: BadInputs, sample_rate: int = SAMPLE_RATE
) -> list[Utterance]:
    """Check the audio file (``wav`` is a path) of each utterance; bad ones go to ``bad``."""
    good = []
    for utt in utterances:
        try:
            check_audio(Path(utt.wav), sample_rate)
        except DataPrepError as exc:
            where = f" (utterance {utt.utt_id} from {utt.source})" if utt.source else ""
            bad.report(f"{exc}{where}")
            continue
        good.append(utt)
    return good
