"""The espeak-ng engine: speak one text into a 16 kHz mono FLAC, or many texts on a process pool.

``espeak-ng -v VOICE -s SPEED -p PITCH --stdout`` with the text on stdin (22050 Hz), resampled to 16 kHz
mono with a polyphase filter, trailing silence trimmed, written as 16-bit FLAC.
"""

from __future__ import annotations

import io
import logging
import math
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from espnet_prune.constants import SAMPLE_RATE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice (language + variant) with its speaking rate (words/min) and pitch (0-99)."""

    name: str
    speed: int
    pitch: int


# Demo speakers: distinct accents, variants (male/female), rates and pitches.
VOICES = (
    Voice("en-us", 165, 50),
    Voice("en-us+f2", 155, 65),
    Voice("en-gb+m3", 150, 40),
    Voice("en-gb-x-rp+f4", 170, 70),
    Voice("en-us-nyc+m1", 160, 45),
    Voice("en-gb-scotland+f3", 150, 60),
    Voice("en-029+m4", 160, 35),
    Voice("en-gb-x-gbclan+f1", 175, 55),
)


@dataclass(frozen=True)
class SynthJob:
    """One utterance to synthesize into ``out_path``."""

    text: str
    out_path: Path
    voice: Voice


@dataclass(frozen=True)
class SynthStats:
    """How much was synthesized and how long it took."""

    utterances: int
    audio_seconds: float
    wall_seconds: float
    workers: int

    def __str__(self) -> str:
        rate = self.utterances / max(self.wall_seconds, 1e-9)
        return (
            f"synthesized {self.utterances} utterances ({self.audio_seconds / 60:.1f} min of audio) in "
            f"{self.wall_seconds:.1f} s with {self.workers} worker(s): {rate:.1f} utterances/s"
        )


def trim_trailing_silence(
    audio: np.ndarray, sample_rate: int, keep_seconds: float = 0.1, threshold: float = 0.01
) -> np.ndarray:
    """Cut espeak-ng's trailing silence (about 0.3 s, 12% of a demo utterance, all of it training compute)
    down to ``keep_seconds`` after the last sample above ``threshold`` x the peak."""
    magnitude = np.abs(audio)
    loud = np.flatnonzero(magnitude > threshold * float(magnitude.max()))
    if loud.size == 0:
        return audio
    return audio[: min(audio.size, int(loud[-1]) + 1 + int(keep_seconds * sample_rate))]


def synthesize(
    text: str,
    out_path: Path,
    voice: str = "en-us",
    speed: int = 160,
    pitch: int = 50,
    sample_rate: int = SAMPLE_RATE,
) -> float:
    """Speak ``text`` with espeak-ng into a mono 16-bit file at ``sample_rate``; returns its duration (s)."""
    command = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout"]
    try:  # text on stdin: never mistaken for an option
        result = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise RuntimeError("espeak-ng not found: install it (apt-get install espeak-ng)") from exc
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"espeak-ng failed for voice {voice!r} and text {text!r}: {stderr}")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != sample_rate:
        g = math.gcd(rate, sample_rate)
        audio = resample_poly(audio, sample_rate // g, rate // g).astype(np.float32)
    if audio.size == 0:
        raise RuntimeError(f"espeak-ng produced no audio for voice {voice!r} and text {text!r}")
    audio = trim_trailing_silence(audio, sample_rate)
    sf.write(str(out_path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
    return audio.size / sample_rate


def _run_job(job: SynthJob) -> float:
    """Worker entry point (top-level, so it pickles into the process pool)."""
    job.out_path.parent.mkdir(parents=True, exist_ok=True)
    return synthesize(job.text, job.out_path, job.voice.name, job.voice.speed, job.voice.pitch)


def synthesize_many(jobs: Sequence[SynthJob], workers: int = 2) -> SynthStats:
    """Run the jobs on ``workers`` processes (each job mostly waits on its espeak-ng process)."""
    start = time.perf_counter()
    if workers <= 1:
        durations = [_run_job(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            durations = list(pool.map(_run_job, jobs, chunksize=8))
    stats = SynthStats(len(jobs), float(sum(durations)), time.perf_counter() - start, max(workers, 1))
    logger.info("%s", stats)
    return stats
