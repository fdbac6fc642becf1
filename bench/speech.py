"""Synthesized speech for the evidence benchmark: the SLURP-shaped intent task and the pre-training corpus.

- ``slurp``: real SLURP sentences and intents (``scenario_action``) from ``../shared/data/slurp``, the
  intents with at least ``MIN_SENTENCES`` usable sentences, split by sentence within each intent (70 / 15 /
  15, fixed seed): dev and test are held-out phrasings. Each sentence is spoken once by a voice drawn from
  ``VOICE_POOL`` with its own rate and pitch.
- Pre-training corpus: many voices over thousands of distinct sentences (SLURP's ``lm.txt`` without any
  sentence of the SLURP task's dev or test, plus the demo grammar), and the real speech the developers have
  (cathy and fsdd *train* splits only), with character transcripts for CTC.

Audio is synthesized once into ``bench/work/speech/<name>-<key>/`` (a manifest beside the FLAC files),
built under a temporary name, so an interrupted run leaves nothing.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict, List, Sequence, Set, Tuple

from bench.common import DATA_DIR, WORK_DIR, cache_key
from bench.data import (
    Example,
    Item,
    Splits,
    list_digits,
    list_transcribed,
    normalise_text,
    read_examples,
    split_cathy,
    split_fsdd,
)
from espnet_prune.data.synth import SynthJob, Voice, generate_sentences, synthesize_many
from espnet_prune.io import atomic_dir

SLURP_DIR = DATA_DIR / "slurp"
MIN_SENTENCES = 60  # an intent needs this many sentences to have dev and test phrasings of its own
ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "croak",
)
VOICE_POOL = tuple(f"{accent}+{variant}" for accent in ACCENTS for variant in VARIANTS)  # 120 voices
DIGIT_WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")


def random_voice(rng: random.Random) -> Voice:
    """A voice of the pool at a random rate (130-200 words/min) and pitch (25-80)."""
    return Voice(rng.choice(VOICE_POOL), rng.randint(130, 200), rng.randint(25, 80))


def synthesized(name: str, texts: Sequence[Tuple[str, str]], seed: int) -> List[Tuple[Path, str]]:
    """(audio path, text) for each (id, text), spoken once with a voice drawn per utterance; cached."""
    folder = WORK_DIR / "speech" / f"{name}-{cache_key([list(texts), seed, VOICE_POOL])}"
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        rng = random.Random(seed)
        with atomic_dir(folder) as tmp:
            jobs = [SynthJob(text, tmp / f"{uid}.flac", random_voice(rng)) for uid, text in texts]
            print(f"  synthesizing {len(jobs)} utterances for {name} ...", flush=True)
            print(f"  {synthesize_many(jobs, workers=2)}", flush=True)
            entries = [[job.out_path.name, job.text, job.voice.name] for job in jobs]
            (tmp / "manifest.json").write_text(json.dumps(entries))
    return [(folder / file, text) for file, text, _ in json.loads(manifest.read_text())]


def spoken_text(sentence: str) -> str:
    """The normalised transcript of ``sentence``, or "" for one with digits (their spoken form is not their
    written one) or without any letter."""
    return "" if any(char.isdigit() for char in sentence) else normalise_text(sentence)


# --- the SLURP-shaped intent task -------------------------------------------------------------------


def slurp_sentences(folder: Path = SLURP_DIR) -> Dict[str, List[Tuple[str, str]]]:
    """intent -> [(slurp_id, normalised sentence)] of the annotation files (``spoken_text``), one entry per
    distinct sentence."""
    by_intent: Dict[str, List[Tuple[str, str]]] = {}
    seen: Set[str] = set()
    for split in ("devel", "test"):
        for line in (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            text = spoken_text(record["sentence"])
            if not text or text in seen:
                continue
            seen.add(text)
            intent = f"{record['scenario']}_{record['action']}"
            by_intent.setdefault(intent, []).append((str(record["slurp_id"]), text))
    return by_intent


def slurp_split(seed: int = 0) -> Tuple[List[str], Dict[str, List[Tuple[str, str, int]]]]:
    """The kept intents and the splits: split -> [(slurp_id, text, intent index)]."""
    by_intent = slurp_sentences()
    intents = sorted(i for i, sentences in by_intent.items() if len(sentences) >= MIN_SENTENCES)
    rng = random.Random(seed)
    splits: Dict[str, List[Tuple[str, str, int]]] = {"train": [], "dev": [], "test": []}
    for label, intent in enumerate(intents):
        sentences = sorted(by_intent[intent])
        rng.shuffle(sentences)
        held_out = round(0.15 * len(sentences))
        for position, (uid, text) in enumerate(sentences):
            split = "test" if position < held_out else "dev" if position < 2 * held_out else "train"
            splits[split].append((uid, text, label))
    return intents, splits


def load_slurp_task(seed: int = 0) -> Tuple[List[str], Splits]:
    """The intents and the synthesized splits (targets: intent indices)."""
    intents, splits = slurp_split(seed)
    out: Splits = {}
    for split, rows in splits.items():
        audio = synthesized(f"slurp-{split}", [(uid, text) for uid, text, _ in rows], seed)
        out[split] = read_examples([Item(path, label) for (path, _), (_, _, label) in zip(audio, rows)])
    return intents, out


# --- the pre-training corpus --------------------------------------------------------------------------


def held_out_texts() -> Set[str]:
    """Normalised sentences of every downstream dev and test split that is text: the SLURP task's."""
    if not SLURP_DIR.is_dir():
        return set()
    _, splits = slurp_split()
    return {text for split in ("dev", "test") for _, text, _ in splits[split]}


def pretraining_texts(lm_sentences: int, grammar_sentences: int, seed: int) -> List[Tuple[str, str]]:
    """(id, text): distinct sentences of SLURP's lm.txt (none of a downstream dev or test split, no digits)
    and of the demo grammar."""
    excluded = held_out_texts()
    lm: List[str] = []
    if (SLURP_DIR / "lm.txt").is_file():
        seen: Set[str] = set()
        for line in (SLURP_DIR / "lm.txt").read_text(encoding="utf-8").splitlines():
            text = spoken_text(line)
            if text and text not in excluded and text not in seen:
                seen.add(text)
                lm.append(text)
        lm = random.Random(seed).sample(lm, min(lm_sentences, len(lm)))
    grammar = generate_sentences(grammar_sentences, seed)
    return [(f"lm{i:05d}", t) for i, t in enumerate(lm)] + [(f"gr{i:05d}", t) for i, t in enumerate(grammar)]


def real_train_speech() -> List[Item]:
    """The train splits of cathy (transcripts) and fsdd (digit words) that are present."""
    items: List[Item] = []
    if (DATA_DIR / "cathy").is_dir():
        items += split_cathy(list_transcribed(DATA_DIR / "cathy"))["train"]
    if (DATA_DIR / "fsdd").is_dir():
        digits = split_fsdd(list_digits(DATA_DIR / "fsdd"))["train"]
        items += [Item(item.path, DIGIT_WORDS[int(item.target)]) for item in digits]
    return items


def pretraining_corpus(lm_sentences: int, grammar_sentences: int, seed: int) -> List[Example]:
    """Synthesized multi-voice sentences plus the real train speech, all with character transcripts."""
    audio = synthesized("pretrain", pretraining_texts(lm_sentences, grammar_sentences, seed), seed)
    items = [Item(path, text) for path, text in audio] + real_train_speech()
    return read_examples(items)
