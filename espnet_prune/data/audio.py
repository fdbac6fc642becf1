"""Sanity checks of audio files before they enter a data dir.

A broken file otherwise surfaces hours later as a crash inside a training data loader; here it is
one clear error naming the file, or (``skip_bad``) a skipped and counted utterance.
Only the header is read (``soundfile.info``), which keeps the check cheap on a full corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Collection, Optional, Sequence

import soundfile as sf

from espnet_prune.constants import SAMPLE_RATE
from espnet_prune.data.errors import BadInputs, DataPrepError
from espnet_prune.data.kaldi import Utterance


def check_audio(path: Path, sample_rate: int = SAMPLE_RATE) -> int:
    """Return the number of samples of a readable, non-empty, mono file at ``sample_rate``.

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
        raise DataPrepError(f"{path}: unreadable audio file ({' '.join(str(exc).split())})") from exc
    if info.frames == 0:
        raise DataPrepError(f"{path}: empty audio file (no samples)")
    if info.samplerate != sample_rate:
        raise DataPrepError(f"{path}: sample rate {info.samplerate} Hz, expected {sample_rate} Hz")
    if info.channels != 1:
        raise DataPrepError(f"{path}: {info.channels} channels, expected mono")
    return info.frames


def good_audio_samples(
    utterances: Sequence[Utterance], bad: BadInputs, sample_rate: int = SAMPLE_RATE
) -> dict[str, int]:
    """Samples per utterance id of each utterance whose audio file (``wav`` is a path) passes
    ``check_audio``; bad ones go to ``bad``, named with the line they came from."""
    samples = {}
    for utt in utterances:
        try:
            samples[utt.utt_id] = check_audio(Path(utt.wav), sample_rate)
        except DataPrepError as exc:
            where = f" (utterance {utt.utt_id} from {utt.source})" if utt.source else ""
            bad.report(f"{exc}{where}")
    return samples


def keep_good_audio(
    utterances: Sequence[Utterance], bad: BadInputs, sample_rate: int = SAMPLE_RATE
) -> list[Utterance]:
    """The utterances whose audio passes ``check_audio``; bad ones go to ``bad``."""
    samples = good_audio_samples(utterances, bad, sample_rate)
    return [utt for utt in utterances if utt.utt_id in samples]


def check_scp_audio(scp: Path, keys: Optional[Collection[str]] = None, sample_rate: int = SAMPLE_RATE) -> int:
    """Check the audio of every entry of a ``wav.scp`` (only ``keys`` when given) as ``check_audio`` does;
    returns how many were checked. Raises DataPrepError naming the line and the file."""
    scp = Path(scp)
    if not scp.is_file():
        raise DataPrepError(f"{scp}: missing")
    checked = 0
    for lineno, line in enumerate(scp.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DataPrepError(f"{scp}:{lineno}: expected '<utterance id> <audio file>', got {line!r}")
        if keys is None or parts[0] in keys:
            try:
                check_audio(Path(parts[1]), sample_rate)
            except DataPrepError as exc:
                raise DataPrepError(f"{scp}:{lineno}: {exc}") from None
            checked += 1
    return checked
