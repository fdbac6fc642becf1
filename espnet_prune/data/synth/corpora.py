"""The corpus writers: espeak-ng demo corpora in the LibriSpeech and SLURP layouts (see the package
docstring). A corpus is built under a temporary name and renamed at the end, so a failed run leaves
nothing."""

from __future__ import annotations

import itertools
import json
import random
import tempfile
from pathlib import Path
from typing import Optional

from espnet_prune.data.errors import BadInputs, DataPrepError
from espnet_prune.data.slurp import read_jsonl
from espnet_prune.data.synth.english import generate_sentences
from espnet_prune.data.synth.espeak import VOICES, SynthJob, SynthStats, Voice, synthesize_many
from espnet_prune.data.synth.slurp_commands import generate_commands, tokens_and_entities
from espnet_prune.io import replace_dir


def _check_new(target: Path, overwrite: bool) -> None:
    """Refuse to replace an existing corpus unless asked to."""
    if target.exists() and not overwrite:
        raise DataPrepError(f"{target}: already exists (remove it or pass overwrite)")


LIBRISPEECH_SUBSETS = ("train-clean-100", "dev-clean", "test-clean")


def build_librispeech_corpus(
    root: Path,
    n_train: int = 600,
    n_dev: int = 100,
    n_test: int = 100,
    utts_per_sentence: int = 2,
    num_speakers: int = len(VOICES),
    seed: int = 0,
    workers: int = 2,
    overwrite: bool = False,
) -> tuple[Path, SynthStats]:
    """Write ``<root>/LibriSpeech/{train-clean-100,dev-clean,test-clean}`` in LibriSpeech's layout.

    Each sentence is spoken by ``utts_per_sentence`` different speakers (speaker ids 1001, 1002, ...,
    one chapter per speaker and subset). Returns the LibriSpeech folder and the synthesis stats.
    """
    if not 1 <= num_speakers <= len(VOICES) or not 1 <= utts_per_sentence <= num_speakers:
        raise ValueError(
            f"need 1 <= utts_per_sentence ({utts_per_sentence}) <= num_speakers "
            f"({num_speakers}) <= {len(VOICES)}"
        )
    root = Path(root)
    target = root / "LibriSpeech"
    _check_new(target, overwrite)
    rng = random.Random(seed)
    sentences = generate_sentences(n_train + n_dev + n_test, seed)
    splits = dict(
        zip(
            LIBRISPEECH_SUBSETS,
            (sentences[:n_train], sentences[n_train : n_train + n_dev], sentences[n_train + n_dev :]),
        )
    )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".LibriSpeech.tmp-", dir=root) as tmp:
        work = Path(tmp) / "LibriSpeech"
        jobs: list[SynthJob] = []
        for chapter, (subset, subset_sentences) in enumerate(splits.items(), 1):
            transcripts: dict[str, list[str]] = {}
            for sentence in subset_sentences:
                for spk in sorted(rng.sample(range(num_speakers), utts_per_sentence)):
                    spk_id = str(1001 + spk)
                    lines = transcripts.setdefault(spk_id, [])
                    utt_id = f"{spk_id}-{chapter}-{len(lines):04d}"
                    lines.append(f"{utt_id} {sentence}")
                    path = work / subset / spk_id / str(chapter) / f"{utt_id}.flac"
                    jobs.append(SynthJob(sentence.lower(), path, VOICES[spk]))
            for spk_id, lines in transcripts.items():
                folder = work / subset / spk_id / str(chapter)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{spk_id}-{chapter}.trans.txt").write_text(
                    "\n".join(lines) + "\n", encoding="utf-8"
                )
        stats = synthesize_many(jobs, workers)
        replace_dir(work, target)
    return target, stats


def _write_slurp_corpus(
    root: Path,
    splits: dict[str, list[dict]],
    texts: dict[str, str],
    voices: dict[str, Voice],
    workers: int,
    overwrite: bool,
) -> SynthStats:
    """Synthesize and write a SLURP-layout corpus: jsonl records per split, audio per recording file.

    ``texts`` and ``voices`` map each recording file name to what is spoken and by which voice; the
    speaker id of a voice (``metadata.json``) is ``VOICES`` position based: ``demo-01``, ...
    """
    root = Path(root)
    for name in ("dataset", "audio"):
        _check_new(root / name, overwrite)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".slurp.tmp-", dir=root) as tmp:
        work = Path(tmp)
        annotations, audio = work / "dataset" / "slurp", work / "audio" / "slurp_real"
        annotations.mkdir(parents=True)
        audio.mkdir(parents=True)
        metadata = {}
        for split, records in splits.items():
            with open(annotations / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for record in records:
                    f.write(json.dumps(record) + "\n")
                    metadata[str(record["slurp_id"])] = {
                        "recordings": {
                            r["file"]: {"usrid": f"demo-{VOICES.index(voices[r['file']]) + 1:02d}"}
                            for r in record["recordings"]
                        }
                    }
        (annotations / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
        jobs = [SynthJob(texts[name], audio / name, voices[name]) for name in sorted(texts)]
        stats = synthesize_many(jobs, workers)
        for name in ("dataset", "audio"):
            replace_dir(work / name, root / name)
    return stats


def build_slurp_corpus(
    root: Path,
    n_train: int = 800,
    n_devel: int = 100,
    n_test: int = 150,
    recordings_per_sentence: int = 2,
    seed: int = 0,
    workers: int = 2,
    overwrite: bool = False,
) -> tuple[Path, SynthStats]:
    """SLURP-layout demo corpus of template commands (see module docstring); returns root and stats."""
    if not 1 <= recordings_per_sentence <= len(VOICES):
        raise ValueError(
            f"recordings_per_sentence must be in 1..{len(VOICES)}, got {recordings_per_sentence}"
        )
    rng = random.Random(seed)
    texts: dict[str, str] = {}
    voices: dict[str, Voice] = {}
    splits: dict[str, list[dict]] = {}
    slurp_ids = itertools.count(1)
    timestamps = itertools.count(1490000000)
    for split, commands in generate_commands(n_train, n_devel, n_test, seed).items():
        records = []
        for command in commands:
            files = [f"audio-{next(timestamps)}.flac" for _ in range(recordings_per_sentence)]
            for name, voice in zip(files, rng.sample(VOICES, recordings_per_sentence)):
                texts[name], voices[name] = command.sentence, voice
            tokens, entities = tokens_and_entities(command.annotation)
            records.append(
                {
                    "slurp_id": next(slurp_ids),
                    "sentence": command.sentence,
                    "sentence_annotation": command.annotation,
                    "tokens": tokens,
                    "scenario": command.scenario,
                    "action": command.action,
                    "intent": f"{command.scenario}_{command.action}",
                    "entities": entities,
                    "recordings": [{"file": f} for f in files],
                }
            )
        splits[split] = records
    return Path(root), _write_slurp_corpus(root, splits, texts, voices, workers, overwrite)


def build_slurp_from_annotations(
    annotations_dir: Path,
    root: Path,
    limit: Optional[int] = None,
    recordings_per_sentence: int = 1,
    devel_every: int = 10,
    seed: int = 0,
    workers: int = 2,
    overwrite: bool = False,
) -> tuple[Path, SynthStats]:
    """Speak real SLURP sentences (``devel.jsonl`` -> train and devel, ``test.jsonl`` -> test).

    Real recording names and records are kept (recordings cut to ``recordings_per_sentence``); every
    ``devel_every``-th sentence of ``devel.jsonl`` becomes devel. ``limit`` caps the sentences taken
    from each file (a seeded random sample, which keeps the intent distribution).
    """
    if recordings_per_sentence < 1 or devel_every < 2:
        raise ValueError(
            f"need recordings_per_sentence >= 1 ({recordings_per_sentence}) and devel_every >= 2 ({devel_every})"
        )
    annotations_dir = Path(annotations_dir)
    rng = random.Random(seed)
    texts: dict[str, str] = {}
    voices: dict[str, Voice] = {}
    chosen: dict[str, list[dict]] = {}
    for source in ("devel", "test"):
        path = annotations_dir / f"{source}.jsonl"
        read_jsonl(path, BadInputs(False, str(path)))  # one clear error (file:line) for a bad line
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if limit is not None and limit < len(records):
            records = sorted(rng.sample(records, limit), key=lambda r: r["slurp_id"])
        for record in records:
            record["recordings"] = record["recordings"][:recordings_per_sentence]
            for recording in record["recordings"]:
                texts[recording["file"]] = record["sentence"]
                voices[recording["file"]] = VOICES[len(voices) % len(VOICES)]
        chosen[source] = records
    splits = {
        "train": [r for i, r in enumerate(chosen["devel"]) if i % devel_every != devel_every - 1],
        "devel": [r for i, r in enumerate(chosen["devel"]) if i % devel_every == devel_every - 1],
        "test": chosen["test"],
    }
    return Path(root), _write_slurp_corpus(root, splits, texts, voices, workers, overwrite)
