"""The two real-speech tasks of the accuracy benchmark, held in memory as 16 kHz waveforms.

- ``cathy``: read English (one speaker), CTC on characters. Text is normalised to upper-case letters,
  apostrophes and single spaces. Split by CMU ARCTIC prompt id (``arctic_a0001``), because some prompts
  were recorded more than once: 10% of the prompt ids (shuffled with a fixed seed) are test, 10% dev.
- ``fsdd``: spoken digits (4 speakers, 8 kHz, resampled to 16 kHz), digit classification. Every speaker
  is in every split (the speakers "as given"): recording index 0-4 is test, 5-9 dev, 10 and up train.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from espnet_prune.constants import SAMPLE_RATE

CHARACTERS = " '" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # CTC labels 1..28; 0 is the blank
NUM_DIGITS = 10
AUDIO_SUFFIXES = (".flac", ".wav")
_PROMPT_ID = re.compile(r"^(arctic_[ab]\d{4})_")
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")

Target = Union[str, int]


@dataclass
class Item:
    """An audio file and its target, before the audio is read."""

    path: Path
    target: Target


@dataclass
class Example:
    """One utterance: a normalised 16 kHz waveform and its target (normalised text or digit)."""

    name: str
    waveform: Tensor
    target: Target


Splits = Dict[str, List[Example]]


def normalise_text(text: str) -> str:
    """Upper-case; keep letters, apostrophes and spaces; one space between words."""
    kept = re.sub(r"[^A-Z' ]+", " ", text.upper())
    return " ".join(kept.split())


def encode_text(text: str) -> List[int]:
    return [CHARACTERS.index(char) + 1 for char in text]


def decode_labels(labels: Sequence[int]) -> str:
    """Greedy CTC: merge repeats, drop blanks."""
    chars, previous = [], 0
    for label in labels:
        if label != previous and label != 0:
            chars.append(CHARACTERS[label - 1])
        previous = label
    return " ".join("".join(chars).split())


def read_waveform(path: Path) -> Tensor:
    """Mono float waveform at 16 kHz, zero mean and unit variance (as wav2vec2 fine-tuning expects)."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    wave = torch.from_numpy(data.mean(axis=1))
    if rate != SAMPLE_RATE:
        wave = AF.resample(wave, rate, SAMPLE_RATE)
    return (wave - wave.mean()) / (wave.std() + 1e-5)


def read_examples(items: List[Item]) -> List[Example]:
    return [Example(item.path.stem, read_waveform(item.path), item.target) for item in items]


def _audio_files(folder: Path) -> Iterator[Path]:
    return (path for path in sorted(folder.iterdir()) if path.suffix.lower() in AUDIO_SUFFIXES)


def list_transcribed(folder: Path) -> List[Item]:
    """Every audio file of ``folder`` with a non-empty ``.txt`` transcript beside it."""
    items = []
    for path in _audio_files(folder):
        transcript = path.with_suffix(".txt")
        if transcript.is_file():
            text = normalise_text(transcript.read_text(encoding="utf-8"))
            if text:
                items.append(Item(path, text))
    return items


def list_digits(folder: Path) -> List[Item]:
    """Every ``{digit}_{speaker}_{index}`` audio file of ``folder``."""
    items = []
    for path in _audio_files(folder):
        match = _FSDD_NAME.match(path.stem)
        if match:
            items.append(Item(path, int(match.group(1))))
    return items


def split_cathy(items: List[Item], held_out_fraction: float = 0.1, seed: int = 0) -> Dict[str, List[Item]]:
    """Train/dev/test by prompt id, so that no prompt's text is in two splits."""
    prompts = sorted({_prompt_id(item.path.stem) for item in items})
    random.Random(seed).shuffle(prompts)
    held_out = int(round(held_out_fraction * len(prompts)))
    test, dev = set(prompts[:held_out]), set(prompts[held_out : 2 * held_out])
    splits: Dict[str, List[Item]] = {"train": [], "dev": [], "test": []}
    for item in items:
        prompt = _prompt_id(item.path.stem)
        splits["test" if prompt in test else "dev" if prompt in dev else "train"].append(item)
    return splits


def _prompt_id(name: str) -> str:
    match = _PROMPT_ID.match(name)
    if not match:
        raise ValueError(f"{name}: cathy file name without an arctic prompt id (arctic_a0001_...)")
    return match.group(1)


def split_fsdd(items: List[Item]) -> Dict[str, List[Item]]:
    """Recording index 0-4 test, 5-9 dev, the rest train, for every speaker."""
    splits: Dict[str, List[Item]] = {"train": [], "dev": [], "test": []}
    for item in items:
        index = int(item.path.stem.rsplit("_", 1)[1])
        splits["test" if index < 5 else "dev" if index < 10 else "train"].append(item)
    return splits


def load_task(
    name: str, folder: Path, limits: Optional[Dict[str, int]] = None, seed: int = 0
) -> Optional[Splits]:
    """The splits of task ``name`` read from ``folder``, or None (with a message) when it is absent.

    ``limits`` caps a split's size (a fixed random subset, for quick runs); only kept files are read.
    """
    if not folder.is_dir():
        print(f"skipping {name}: {folder} not found (the shared data folder is not available)")
        return None
    splits = split_cathy(list_transcribed(folder)) if name == "cathy" else split_fsdd(list_digits(folder))
    rng = random.Random(seed)
    out: Splits = {}
    for split, items in splits.items():
        limit = (limits or {}).get(split)
        if limit is not None and limit < len(items):
            items = rng.sample(items, limit)
        out[split] = read_examples(items)
    return out


def read_extra_test(name: str, folder: Path) -> List[Example]:
    """A further test folder in the layout of task ``name`` (transcripts beside audio, or digit names)."""
    return read_examples(list_transcribed(folder) if name == "cathy" else list_digits(folder))


def length_batches(
    examples: List[Example], batch_size: int, rng: Optional[random.Random] = None
) -> List[List[Example]]:
    """Batches of similar length (sorted, then chunked); shuffled batch order when ``rng`` is given."""
    ordered = sorted(examples, key=lambda example: example.waveform.numel())
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def collate(batch: List[Example]) -> Tuple[Tensor, Tensor]:
    """Zero-padded waveforms (B, samples) and their lengths (B,)."""
    lengths = torch.tensor([example.waveform.numel() for example in batch])
    waves = torch.zeros(len(batch), int(lengths.max()))
    for row, example in enumerate(batch):
        waves[row, : example.waveform.numel()] = example.waveform
    return waves, lengths
