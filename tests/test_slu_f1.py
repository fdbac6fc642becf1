"""SLURP entity mode: the target text (build, parse back) and SLURP's SLU metrics against hand counts.

Every expected number below is counted by hand from the definitions in espnet_prune/eval/slu_f1.py
(SLURP's scripts/evaluation); the comments show the counting.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import jiwer
import pytest

from espnet_prune.data.errors import BadInputs, DataPrepError
from espnet_prune.data.slurp import normalize_transcript, read_jsonl
from espnet_prune.data.slurp_entity import (
    Entity,
    SluText,
    entity_text,
    parse_entity_text,
    parse_sentence_annotation,
)
from espnet_prune.eval.slu_f1 import (
    Counts,
    char_distance,
    edit_distance,
    score_slu,
    span_counts,
    span_distance_counts,
    word_distance,
)

SLURP_ANNOTATIONS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "slurp"
needs_slurp = pytest.mark.skipif(
    not (SLURP_ANNOTATIONS / "test.jsonl").is_file(),
    reason=f"SLURP annotations not available: {SLURP_ANNOTATIONS}",
)

E = Entity


def _counts(counts: Counts) -> tuple[float, float, float]:
    return pytest.approx((counts.tp, counts.fp, counts.fn))


# ------------------------------------------------------------------------------------------ distances


def test_distances_match_hand_counts_and_jiwer() -> None:
    assert edit_distance("SEVEN AM", "TEN PM") == 4  # S->T, drop E, drop V; A->P
    assert word_distance("NEW YORK CITY", "NEW YORK") == pytest.approx(
        1 / 3
    )  # one deletion over 3 gold words
    assert word_distance("ANN", "ANN MARIE SMITH") == 2.0  # two insertions over 1 gold word: above 1
    assert word_distance("SEVEN AM", "") == 1.0
    assert char_distance("NEW YORK CITY", "NEW YORK") == pytest.approx(5 / 13)  # " CITY" over 13 chars
    assert char_distance("ANN", "ANN MARIE SMITH") == pytest.approx(12 / 15)
    assert char_distance("", "") == 0.0 and char_distance("AB", "") == 1.0
    with pytest.raises(ValueError, match="empty gold filler"):
        word_distance("", "A")
    # SLURP's WordDistance is jiwer's WER of the filler
    for gold, predicted in [
        ("NEW YORK CITY", "NEW YORK"),
        ("ANN", "ANN MARIE SMITH"),
        ("A B C D", "B X D E"),
    ]:
        assert word_distance(gold, predicted) == pytest.approx(jiwer.wer(gold, predicted))


# ------------------------------------------------------------------------------------- span F1 counts


def test_exact_match_is_one_true_positive_in_every_variant() -> None:
    gold = [E("time", "SEVEN AM")]
    for counts in (
        span_counts(gold, gold),
        span_distance_counts(gold, gold, word_distance),
        span_distance_counts(gold, gold, char_distance),
    ):
        assert (counts.tp, counts.fp, counts.fn) == (1, 0, 0) and counts.f1 == 1.0


def test_empty_predictions_are_false_negatives_and_f1_zero() -> None:
    gold = [E("time", "SEVEN AM"), E("date", "TOMORROW")]
    for counts in (span_counts(gold, []), span_distance_counts(gold, [], word_distance)):
        assert (counts.tp, counts.fp, counts.fn) == (0, 0, 2)
        assert counts.precision == 0.0 and counts.recall == 0.0 and counts.f1 == 0.0  # 0/0 precision is 0
    counts = span_distance_counts([], [E("date", "TODAY")], char_distance)  # nothing to find: one FP
    assert (counts.tp, counts.fp, counts.fn) == (0, 1, 0) and counts.f1 == 0.0
    assert Counts().f1 == 0.0  # no gold, no prediction: SLURP's compute_metrics gives 0


def test_unmatched_type_is_a_false_positive_and_a_false_negative() -> None:
    gold, predicted = [E("time", "SEVEN AM")], [E("date", "SEVEN AM")]
    for counts in (
        span_counts(gold, predicted),
        span_distance_counts(gold, predicted, word_distance),
        span_distance_counts(gold, predicted, char_distance),
    ):
        assert (counts.tp, counts.fp, counts.fn) == (0, 1, 1)


def test_partial_span_costs_its_word_and_char_distance() -> None:
    gold, predicted = [E("place_name", "NEW YORK CITY")], [E("place_name", "NEW YORK")]
    assert (span_counts(gold, predicted).tp, span_counts(gold, predicted).fp) == (0, 1)  # not equal: no TP
    word = span_distance_counts(gold, predicted, word_distance)
    assert (word.tp, word.fp, word.fn) == _counts(Counts(1, 1 / 3, 1 / 3))
    assert word.precision == pytest.approx(3 / 4) and word.f1 == pytest.approx(3 / 4)  # 1 / (1 + 1/3)
    char = span_distance_counts(gold, predicted, char_distance)
    assert (char.tp, char.fp, char.fn) == _counts(Counts(1, 5 / 13, 5 / 13))
    assert char.f1 == pytest.approx(13 / 18)  # 1 / (1 + 5/13)
    slu = word + char  # TP 2, FP = FN = 1/3 + 5/13 = 28/39
    assert slu.f1 == pytest.approx(2 / (2 + 28 / 39)) == pytest.approx(39 / 53)
    # more predicted words than gold ones: the word distance exceeds 1
    long = span_distance_counts([E("person", "ANN")], [E("person", "ANN MARIE SMITH")], word_distance)
    assert (long.tp, long.fp, long.fn) == (1, 2, 2) and long.f1 == pytest.approx(1 / 3)


def test_duplicated_spans_match_once_each() -> None:
    gold = [E("time", "SEVEN AM"), E("time", "TEN PM")]
    predicted = [E("time", "SEVEN AM"), E("time", "SEVEN AM")]
    span = span_counts(gold, predicted)  # the second SEVEN AM has no gold left to equal
    assert (span.tp, span.fp, span.fn) == (1, 1, 1) and span.f1 == 0.5
    # word: SEVEN AM -> SEVEN AM (d 0); SEVEN AM -> TEN PM, the only time left (d 2/2 = 1)
    word = span_distance_counts(gold, predicted, word_distance)
    assert (word.tp, word.fp, word.fn) == (2, 1, 1) and word.f1 == pytest.approx(2 / 3)
    # char: the second pairs with TEN PM at 4 edits / 8 chars
    char = span_distance_counts(gold, predicted, char_distance)
    assert (char.tp, char.fp, char.fn) == _counts(Counts(2, 0.5, 0.5)) and char.f1 == pytest.approx(0.8)
    # a duplicated gold entity predicted once leaves one false negative
    twice = span_counts([E("date", "TODAY"), E("date", "TODAY")], [E("date", "TODAY")])
    assert (twice.tp, twice.fp, twice.fn) == (1, 0, 1)


def test_distance_pairing_takes_the_closest_gold_and_the_first_on_ties() -> None:
    gold = [E("date", "MONDAY"), E("date", "SUNDAY")]
    closest = span_distance_counts(gold, [E("date", "SUNDAY")], word_distance)  # SUNDAY, not the first
    assert (closest.tp, closest.fp, closest.fn) == (1, 0, 1)
    # FRIDAY is at word distance 1 from both: it takes MONDAY (the first), leaving SUNDAY for SUNDAY
    tie = span_distance_counts(gold, [E("date", "FRIDAY"), E("date", "SUNDAY")], word_distance)
    assert (tie.tp, tie.fp, tie.fn) == (2, 1, 1)


def test_set_scores_sum_counts_and_compare_scenario_and_action_apart() -> None:
    def text(intent: str, *entities: Entity) -> SluText:
        return SluText(intent, entities, "")

    pairs = [
        (text("alarm_set", E("time", "SEVEN AM")), text("alarm_set", E("time", "SEVEN AM"))),
        (text("alarm_query", E("date", "TODAY")), text("weather_query")),  # same action only
        (
            text("iot_hue_lightoff"),
            text("iot_hue_lighton", E("house_place", "KITCHEN")),
        ),  # same scenario only
        (text("weather_query"), text("")),  # nothing predicted
    ]
    scores = score_slu(pairs)
    assert scores.utterances == 4 and scores.intent_accuracy == 0.25
    assert scores.scenario_accuracy == 0.5 and scores.action_accuracy == 0.5
    assert (scores.span.tp, scores.span.fp, scores.span.fn) == (1, 1, 1)
    assert (scores.slu.tp, scores.slu.fp, scores.slu.fn) == (2, 2, 2) and scores.slu.f1 == 0.5
    assert [name for name, _ in scores.metrics()] == [
        "SLU-F1",
        "span F1",
        "span F1 (word distance)",
        "span F1 (char distance)",
    ]


# ------------------------------------------------------------------------------------ the target text


def test_entity_text_layout_and_parse() -> None:
    text = entity_text(
        "alarm_set", [E("time", "SEVEN AM"), E("date", "TOMORROW")], "WAKE ME UP AT SEVEN AM TOMORROW"
    )
    assert (
        text
        == "alarm_set sep [date] fill TOMORROW sep [time] fill SEVEN AM sep WAKE ME UP AT SEVEN AM TOMORROW"
    )
    parsed = parse_entity_text(text, strict=True)
    assert parsed == SluText(
        "alarm_set", (E("date", "TOMORROW"), E("time", "SEVEN AM")), "WAKE ME UP AT SEVEN AM TOMORROW"
    )
    assert (parsed.scenario, parsed.action) == ("alarm", "set")
    assert parse_entity_text("iot_hue_lightoff sep LIGHTS OFF").action == "hue_lightoff"
    assert entity_text("weather_query", [], "IS IT RAINING") == "weather_query sep IS IT RAINING"


@pytest.mark.parametrize(
    "hypothesis, expected",
    [
        ("", SluText("", (), "")),
        ("alarm_set WAKE ME UP", SluText("alarm_set", (), "WAKE ME UP")),  # no sep: "<intent> <TRANSCRIPT>"
        ("alarm_set sep", SluText("alarm_set", (), "")),
        ("alarm_set sep [time] SEVEN sep WAKE", SluText("alarm_set", (), "WAKE")),  # no fill: part dropped
        ("alarm_set sep [time] fill sep WAKE", SluText("alarm_set", (E("time", ""),), "WAKE")),  # empty words
        ("alarm_set sep [time] fill SEVEN fill AM sep WAKE", SluText("alarm_set", (), "WAKE")),  # two fills
        ("sep [time] fill SEVEN sep WAKE", SluText("", (E("time", "SEVEN"),), "WAKE")),  # no intent
        ("alarm_set sep time fill SEVEN sep WAKE", SluText("alarm_set", (), "WAKE")),  # type not bracketed
    ],
)
def test_hypotheses_parse_leniently(hypothesis: str, expected: SluText) -> None:
    assert parse_entity_text(hypothesis) == expected


@pytest.mark.parametrize(
    "reference, problem",
    [
        ("alarm_set WAKE ME UP", "no 'sep'"),
        ("alarm_set sep [time] fill sep WAKE", "entity part '[time] fill'"),
        ("alarm_set EXTRA sep WAKE", "one intent label"),
        ("alarm_set sep [time] fill SEVEN sep", "transcript part ''"),
        ("alarm_set sep WAKE fill", "transcript part 'WAKE fill'"),
    ],
)
def test_references_parse_strictly(reference: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"not an entity-mode text \(.*" + re.escape(problem)):
        parse_entity_text(reference, strict=True)


def test_sentence_annotation_spans_and_errors() -> None:
    assert parse_sentence_annotation("wake me up at [time : seven am] [date : Tomorrow]") == [
        E("time", "seven am"),
        E("date", "Tomorrow"),
    ]
    assert parse_sentence_annotation("turn the lights off") == []
    for bad, message in [
        ("at [time seven]", "not '\\[type : words\\]'"),
        ("at [time : ]", "not '\\[type"),
        ("at [Time : x]", "not lowercase"),
        ("at [time : x", "unbalanced"),
        ("at ]x[", "unbalanced"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_sentence_annotation(bad)


def test_bad_entity_annotations_name_file_and_line(tmp_path: Path) -> None:
    record = {
        "slurp_id": 1,
        "sentence": "wake me up at seven",
        "scenario": "alarm",
        "action": "set",
        "recordings": [{"file": "a.flac"}],
        "sentence_annotation": "wake me up at [time : seven]",
        "entities": [{"type": "time", "span": [4]}],
    }
    cases = {
        "sentence_annotation": (
            None,
            r"x\.jsonl:2: missing key 'sentence_annotation' \(needed in entity mode\)",
        ),
        "entities": (
            [{"type": "date", "span": [4]}],
            r"x\.jsonl:2: 'sentence_annotation' has entity types \['time'\] "
            r"but 'entities' has \['date'\]",
        ),
    }
    for key, (value, message) in cases.items():
        broken = {k: v for k, v in record.items() if k != key or value is not None}
        if value is not None:
            broken[key] = value
        path = tmp_path / "x.jsonl"
        path.write_text(json.dumps(record) + "\n" + json.dumps(broken) + "\n")
        assert len(read_jsonl(path, BadInputs(False, "x"))) == 2  # intent mode does not read entities
        with pytest.raises(DataPrepError, match=message):
            read_jsonl(path, BadInputs(False, "x"), entity=True)
        skipped = BadInputs(True, "x")
        assert [r.slurp_id for r in read_jsonl(path, skipped, entity=True)] == [1] and skipped.count == 1


# ------------------------------------------------------------------------------- real SLURP annotations


@needs_slurp
def test_target_text_round_trip_on_real_slurp_annotations() -> None:
    """Every devel/test record: build the entity-mode text, parse it back strictly, get the record's
    intent, its annotated entities (normalised, sorted by type) and its normalised sentence."""
    entities = outside_transcript = 0
    types: Counter = Counter()
    for name in ("devel", "test"):
        records = read_jsonl(SLURP_ANNOTATIONS / f"{name}.jsonl", BadInputs(False, name), entity=True)
        raw = [json.loads(line) for line in (SLURP_ANNOTATIONS / f"{name}.jsonl").read_text().splitlines()]
        assert len(records) == len(raw)
        for record, obj in zip(records, raw):
            parsed = parse_entity_text(record.text(entity=True), strict=True)
            assert parsed.intent == f"{obj['scenario']}_{obj['action']}"
            assert (parsed.scenario, parsed.action) == (obj["scenario"], obj["action"])
            assert parsed.transcript == normalize_transcript(obj["sentence"])
            annotated = [
                E(e.type, normalize_transcript(e.filler))
                for e in parse_sentence_annotation(obj["sentence_annotation"])
            ]
            assert list(parsed.entities) == sorted(annotated, key=lambda e: e.type)
            assert [e.type for e in annotated] == [e["type"] for e in obj["entities"]]
            entities += len(parsed.entities)
            types.update(e.type for e in parsed.entities)
            outside_transcript += sum(
                f" {e.filler} " not in f" {parsed.transcript} " for e in parsed.entities
            )
    assert entities == 2022 + 2823 and len(types) == 55
    # 15 sentences differ from their annotation (typos on one side: RIHANNA / [artist_name : rihana]):
    # 13 of their entities are not words of the transcript.
    assert outside_transcript == 13


@needs_slurp
def test_slu_metrics_on_a_real_slurp_example_match_hand_counts(tmp_path: Path) -> None:
    """devel slurp_id 13804, "siri what is one american dollar in japanese yen", two currency_name spans,
    against a hypothesis that says DOLLARS and drops JAPANESE."""
    line = next(line for line in (SLURP_ANNOTATIONS / "devel.jsonl").open() if '"slurp_id": 13804,' in line)
    (tmp_path / "one.jsonl").write_text(line)
    [record] = read_jsonl(tmp_path / "one.jsonl", BadInputs(False, "one"), entity=True)
    reference = record.text(entity=True)
    assert reference == (
        "qa_currency sep [currency_name] fill AMERICAN DOLLAR sep [currency_name] fill JAPANESE YEN "
        "sep SIRI WHAT IS ONE AMERICAN DOLLAR IN JAPANESE YEN"
    )
    hypothesis = (
        "qa_currency sep [currency_name] fill AMERICAN DOLLARS sep [currency_name] fill YEN "
        "sep SIRI WHAT IS ONE AMERICAN DOLLARS IN YEN"
    )
    scores = score_slu([(parse_entity_text(reference, strict=True), parse_entity_text(hypothesis))])
    assert scores.intent_accuracy == scores.scenario_accuracy == scores.action_accuracy == 1.0
    assert (scores.span.tp, scores.span.fp, scores.span.fn) == (0, 2, 2)  # neither filler is exact
    # word: DOLLARS -> AMERICAN DOLLAR at 1/2 (JAPANESE YEN is at 2/2); YEN -> JAPANESE YEN at 1/2
    assert (scores.word.tp, scores.word.fp, scores.word.fn) == (2, 1, 1) and scores.word.f1 == pytest.approx(
        2 / 3
    )
    # char: 1 edit / 16 chars; 9 edits / 12 chars
    assert (scores.char.tp, scores.char.fp, scores.char.fn) == _counts(
        Counts(2, 1 / 16 + 3 / 4, 1 / 16 + 3 / 4)
    )
    assert scores.char.f1 == pytest.approx(32 / 45)  # 2 / (2 + 13/16)
    assert scores.slu.f1 == pytest.approx(64 / 93)  # 4 / (4 + 1 + 13/16)
