"""espeak-ng demo corpora: generators (always) and a few real syntheses (skipped without espeak-ng)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from espnet_prune.data.errors import DataPrepError
from espnet_prune.data.kaldi import read_data_dir, validate_data_dir
from espnet_prune.data.librispeech import prepare_librispeech
from espnet_prune.data.slurp import prepare_slurp
from espnet_prune.data.slurp_entity import parse_entity_text, parse_sentence_annotation
from espnet_prune.data.synth import (
    INTENT_TEMPLATES,
    SLOT_TYPES,
    VOICES,
    build_librispeech_corpus,
    build_slurp_corpus,
    build_slurp_from_annotations,
    expand_annotated_template,
    expand_template,
    generate_commands,
    generate_sentences,
    synthesize,
    trim_trailing_silence,
)

SLURP_ANNOTATIONS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "slurp"

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def test_sentence_generator_is_deterministic_distinct_and_small() -> None:
    sentences = generate_sentences(800, seed=3)
    assert sentences == generate_sentences(800, seed=3) != generate_sentences(800, seed=4)
    assert len(set(sentences)) == 800
    vocabulary = {w for s in sentences for w in s.split()}
    assert 150 <= len(vocabulary) <= 300
    assert all(s == s.upper() for s in sentences)


def test_command_generator_holds_out_phrasings() -> None:
    splits = generate_commands(800, 100, 150, seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 800, "devel": 100, "test": 150}
    assert all(len({c.sentence for c in split}) == len(split) for split in splits.values())
    assert len(INTENT_TEMPLATES) >= 10 and {(c.scenario, c.action) for c in splits["test"]} == set(
        INTENT_TEMPLATES
    )
    train_phrasings = {s for train, _ in INTENT_TEMPLATES.values() for t in train for s in expand_template(t)}
    test_sentences = {c.sentence for c in splits["test"]}
    assert not train_phrasings & (test_sentences | {c.sentence for c in splits["devel"]})
    assert not test_sentences & {c.sentence for c in splits["devel"]}
    # Held-out phrasings are new combinations of known words, and training covers every phrasing.
    train_words = {w for s in train_phrasings for w in s.split()}
    assert {w for s in test_sentences for w in s.split()} <= train_words
    for (scenario, action), (train_templates, _) in INTENT_TEMPLATES.items():
        intent_train = {c.sentence for c in splits["train"] if (c.scenario, c.action) == (scenario, action)}
        for template in train_templates:
            assert intent_train & set(expand_template(template)), template


def test_demo_commands_carry_slurp_entity_annotations() -> None:
    """Each filled slot is one entity of its SLURP type; words around a bracketed value stay outside the
    span ("on [date : monday]"); removing the markup gives the spoken sentence."""
    pairs = dict(expand_annotated_template("remind me about {event} {day}"))
    assert len(pairs) == 6 * 8
    assert (
        pairs["remind me about a meeting on monday"]
        == "remind me about a [event_name : meeting] on [date : monday]"
    )
    assert pairs["remind me about lunch with sarah today"] == (
        "remind me about [event_name : lunch with sarah] [date : today]"
    )
    assert dict(expand_annotated_template("read me the news")) == {"read me the news": "read me the news"}
    for train, heldout in INTENT_TEMPLATES.values():
        for template in train + heldout:
            slots = [SLOT_TYPES[name] for name in re.findall(r"\{(\w+)\}", template)]
            for sentence, annotation in expand_annotated_template(template):
                assert [e.type for e in parse_sentence_annotation(annotation)] == slots, annotation
                assert re.sub(r"\[[a-z_]+ : ([^\]]+)\]", r"\1", annotation) == sentence


@needs_espeak
def test_synthesize_16k_speech(tmp_path: Path) -> None:
    for i, voice in enumerate(VOICES[:3]):
        out = tmp_path / f"{i}.flac"
        duration = synthesize("turn on the lights in the kitchen", out, voice.name, voice.speed, voice.pitch)
        audio, rate = sf.read(str(out))
        assert rate == 16000 and audio.ndim == 1 and len(audio) / rate == pytest.approx(duration)
        assert 0.8 < duration < 5.0  # seven words at 150-175 words per minute
        assert np.sqrt(np.mean(audio**2)) > 0.01
        # trailing silence cut to 0.1 s after the last sample above 1% of the peak
        loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
        assert len(audio) - 1 - loud[-1] <= 0.1 * rate + 1


def test_trim_trailing_silence_keeps_speech_and_a_tenth_of_a_second():
    rate = 16000
    speech = np.where(np.arange(rate) % 2 == 1, 0.5, -0.5).astype(np.float32)
    audio = np.concatenate([np.zeros(800, np.float32), speech, np.full(rate // 2, 1e-4, np.float32)])
    trimmed = trim_trailing_silence(audio, rate)
    assert len(trimmed) == 800 + rate + rate // 10 and np.array_equal(
        trimmed[: 800 + rate], audio[: 800 + rate]
    )
    assert trim_trailing_silence(np.zeros(100, np.float32), rate).size == 100  # silence only: unchanged


@needs_espeak
def test_librispeech_demo_corpus_reads_as_librispeech(tmp_path: Path) -> None:
    root, stats = build_librispeech_corpus(
        tmp_path, n_train=3, n_dev=1, n_test=1, utts_per_sentence=2, num_speakers=3
    )
    assert root == tmp_path / "LibriSpeech" and stats.utterances == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LibriSpeech"]
    subsets = ["train-clean-100", "dev-clean", "test-clean"]
    prepared = prepare_librispeech(root, subsets, tmp_path / "data")
    assert [prepared[s].num_utterances for s in subsets] == [6, 2, 2]
    texts = {s: {u.text for u in read_data_dir(tmp_path / "data" / prepared[s].name)} for s in subsets}
    assert len(texts["train-clean-100"]) == 3
    assert not texts["train-clean-100"] & (texts["dev-clean"] | texts["test-clean"])
    with pytest.raises(DataPrepError, match="LibriSpeech: already exists"):
        build_librispeech_corpus(tmp_path, n_train=1, n_dev=1, n_test=1, utts_per_sentence=1)


@needs_espeak
def test_slurp_demo_corpus_reads_as_slurp(tmp_path: Path) -> None:
    build_slurp_corpus(tmp_path, n_train=4, n_devel=2, n_test=2, recordings_per_sentence=1)
    prepared = prepare_slurp(tmp_path / "dataset" / "slurp", tmp_path / "audio", tmp_path / "data")
    assert {k: v.num_utterances for k, v in prepared.items()} == {"train": 4, "devel": 2, "test": 2}
    utt = read_data_dir(tmp_path / "data" / "test")[0]
    assert utt.speaker.startswith("demo-") and utt.utt_id.startswith(f"{utt.speaker}_audio-")
    assert utt.text.split()[0] in {f"{s}_{a}" for s, a in INTENT_TEMPLATES}
    # SLURP's fields for entities: tokens, and spans of token ids that agree with sentence_annotation
    records = [
        json.loads(line) for line in (tmp_path / "dataset" / "slurp" / "train.jsonl").read_text().splitlines()
    ]
    for record in records:
        words = [t["surface"] for t in record["tokens"]]
        assert " ".join(words) == record["sentence"]
        annotated = parse_sentence_annotation(record["sentence_annotation"])
        assert [(e.type, e.filler) for e in annotated] == [
            (e["type"], " ".join(words[i] for i in e["span"])) for e in record["entities"]
        ]
    assert sum(len(r["entities"]) for r in records) > 0
    prepare_slurp(tmp_path / "dataset" / "slurp", tmp_path / "audio", tmp_path / "entity_data", entity=True)
    for utt in read_data_dir(tmp_path / "entity_data" / "train"):
        parsed = parse_entity_text(utt.text, strict=True)
        assert all(e.filler in parsed.transcript for e in parsed.entities), utt.text


@needs_espeak
def test_slurp_from_real_annotations(tmp_path: Path) -> None:
    if not (SLURP_ANNOTATIONS / "devel.jsonl").exists():
        pytest.skip(f"shared data not available: {SLURP_ANNOTATIONS}")
    build_slurp_from_annotations(SLURP_ANNOTATIONS, tmp_path, limit=4, devel_every=2)
    annotations = tmp_path / "dataset" / "slurp"
    records = {
        name: [json.loads(line) for line in (annotations / f"{name}.jsonl").read_text().splitlines()]
        for name in ("train", "devel", "test")
    }
    assert {k: len(v) for k, v in records.items()} == {"train": 2, "devel": 2, "test": 4}
    real = {
        json.loads(line)["slurp_id"]: json.loads(line) for line in (SLURP_ANNOTATIONS / "test.jsonl").open()
    }
    for record in records["test"]:
        assert record["recordings"] == real[record["slurp_id"]]["recordings"][:1]
        assert (tmp_path / "audio" / "slurp_real" / record["recordings"][0]["file"]).is_file()
    prepare_slurp(annotations, tmp_path / "audio", tmp_path / "data")
    for name in ("train", "devel", "test"):
        assert validate_data_dir(tmp_path / "data" / name) == len(records[name])
