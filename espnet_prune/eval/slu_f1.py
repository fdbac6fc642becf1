"""SLURP's spoken language understanding metrics, written from the definitions of SLURP's evaluation
code (pswietojanski/slurp, ``scripts/evaluation``: ``evaluate.py``, ``metrics/metrics.py``,
``metrics/distance.py``, also in ESPnet's ``egs2/slurp_entity/asr1/local/evaluation``). Plain Python.

Per utterance the gold and the predicted entities are lists of (type, filler):

- **Span F1**: a predicted entity is a true positive (TP) if an equal (type, filler) is among the gold
  entities not matched yet (it is then matched), else a false positive (FP); each gold entity left
  unmatched is a false negative (FN). Duplicates count as often as they occur.
- **Span distance F1** (word or char): a predicted entity whose type is among the unmatched gold
  entities is matched to the one of that type at the lowest distance d (the first one on a tie) and
  adds TP += 1, FP += d, FN += d; one whose type is not there adds FP += 1; leftover gold adds FN += 1.
  So a right type with wrong words still counts one TP, and its words cost up to one FP and one FN
  (more with the word distance, which is unbounded). Predictions are taken in their order.
  *Word distance*: word-level edit distance / number of gold words (the WER of the filler).
  *Char distance*: character edit distance / length of the longer filler (0 for two empty fillers).
- **SLU-F1**: F1 of the summed counts (TP, FP, FN) of the word and the char variant.
- Precision TP / (TP + FP), recall TP / (TP + FN), F1 their harmonic mean; each is 0 when its
  denominator is 0 (so a set without any gold or predicted entity scores 0). Counts are summed over
  utterances and types (``--average micro``, evaluate.py's default).
- **Scenario / action / intent accuracy**: the share of utterances whose label is right (the same
  number as SLURP's micro-averaged F1 for one label per utterance); the action is compared on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Sequence, Tuple

from espnet_prune.data.slurp_entity import Entity, SluText

Distance = Callable[[str, str], float]


def edit_distance(gold: Sequence, predicted: Sequence) -> int:
    """Levenshtein distance (insertions, deletions and substitutions cost 1) between two sequences."""
    previous = list(range(len(predicted) + 1))
    for i, g in enumerate(gold, 1):
        current = [i]
        for j, p in enumerate(predicted, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (g != p)))
        previous = current
    return previous[-1]


def word_distance(gold: str, predicted: str) -> float:
    """Word edit distance over the gold words (SLURP's ``WordDistance``: jiwer's WER); can exceed 1."""
    gold_words = gold.split()
    if not gold_words:
        raise ValueError("word distance to an empty gold filler is undefined")
    return edit_distance(gold_words, predicted.split()) / len(gold_words)


def char_distance(gold: str, predicted: str) -> float:
    """Character edit distance over the longer length (SLURP's ``CharDistance``: textdistance's
    normalised Levenshtein), in [0, 1]."""
    longest = max(len(gold), len(predicted))
    return edit_distance(gold, predicted) / longest if longest else 0.0


@dataclass
class Counts:
    """True positives, false positives and false negatives (fractional for the distance variants)."""

    tp: float = 0.0
    fp: float = 0.0
    fn: float = 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def span_counts(gold: Sequence[Entity], predicted: Sequence[Entity]) -> Counts:
    """Exact (type, filler) matches of one utterance, each gold entity matched at most once."""
    unmatched = list(gold)
    counts = Counts()
    for entity in predicted:
        if entity in unmatched:
            unmatched.remove(entity)
            counts.tp += 1
        else:
            counts.fp += 1
    counts.fn += len(unmatched)
    return counts


def span_distance_counts(gold: Sequence[Entity], predicted: Sequence[Entity], distance: Distance) -> Counts:
    """Type matches of one utterance, each costing the distance of its fillers (see the module docstring)."""
    unmatched = list(gold)
    counts = Counts()
    for entity in predicted:
        candidates = [
            (distance(g.filler, entity.filler), i) for i, g in enumerate(unmatched) if g.type == entity.type
        ]
        if not candidates:
            counts.fp += 1
            continue
        lowest, index = min(candidates)  # the first of the lowest distance, as SLURP's strict '<' scan
        del unmatched[index]
        counts.tp += 1
        counts.fp += lowest
        counts.fn += lowest
    counts.fn += len(unmatched)
    return counts


@dataclass
class SluScores:
    """SLURP's metrics over a set of utterances (see the module docstring)."""

    utterances: int = 0
    scenario_correct: int = 0
    action_correct: int = 0
    intent_correct: int = 0
    span: Counts = field(default_factory=Counts)
    word: Counts = field(default_factory=Counts)
    char: Counts = field(default_factory=Counts)

    @property
    def slu(self) -> Counts:
        """SLU-F1's counts: the word and the char variant summed."""
        return self.word + self.char

    @property
    def scenario_accuracy(self) -> float:
        return self.scenario_correct / self.utterances if self.utterances else 0.0

    @property
    def action_accuracy(self) -> float:
        return self.action_correct / self.utterances if self.utterances else 0.0

    @property
    def intent_accuracy(self) -> float:
        return self.intent_correct / self.utterances if self.utterances else 0.0

    def add(self, gold: SluText, predicted: SluText) -> None:
        """Count one utterance."""
        self.utterances += 1
        self.scenario_correct += predicted.scenario == gold.scenario
        self.action_correct += predicted.action == gold.action
        self.intent_correct += predicted.intent == gold.intent
        self.span += span_counts(gold.entities, predicted.entities)
        self.word += span_distance_counts(gold.entities, predicted.entities, word_distance)
        self.char += span_distance_counts(gold.entities, predicted.entities, char_distance)

    def metrics(self) -> List[Tuple[str, Counts]]:
        """(name, counts) of the entity metrics, in the order tables show them."""
        return [
            ("SLU-F1", self.slu),
            ("span F1", self.span),
            ("span F1 (word distance)", self.word),
            ("span F1 (char distance)", self.char),
        ]


def score_slu(pairs: Iterable[Tuple[SluText, SluText]]) -> SluScores:
    """SLURP's metrics of (gold, predicted) parses."""
    scores = SluScores()
    for gold, predicted in pairs:
        scores.add(gold, predicted)
    return scores
