"""Word error rate, intent accuracy and SLURP's SLU metrics of ESPnet hypothesis files against
Kaldi-style references.

Both files are ``<utt_id> <text>`` lines. For SLU recipes the first token of a text is the intent
label (``text`` = "<intent> <transcript>"), the rest the transcript. In SLURP's entity mode the texts are
those of :mod:`espnet_prune.data.slurp_entity` (intent, entity spans, transcript): references must
have that layout exactly, hypotheses are read leniently; WER and CER are of the transcript part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import jiwer

from espnet_prune.data.kaldi import read_table
from espnet_prune.data.slurp_entity import parse_entity_text
from espnet_prune.eval.slu_f1 import SluScores, score_slu


def read_text_table(path: Path) -> Dict[str, str]:
    """``utt_id -> text`` from a Kaldi text file (an utterance id alone means an empty text)."""
    rows = read_table(path, values_required=False, c_sorted=False, skip_blank=True, duplicate="utterance id")
    return {key: value.strip() for key, value, _ in rows}


@dataclass
class SetScore:
    """Scores of one evaluation set."""

    utterances: int
    words: int
    wer: float
    cer: float
    intent_accuracy: Optional[float] = None
    slu: Optional[SluScores] = None  # entity mode: scenario/action accuracy, SLU-F1 and span F1s


def _paired(ref_path: Path, hyp_path: Path) -> Tuple[List[str], List[str], List[str]]:
    """Utterance ids (sorted), their references and their hypotheses."""
    refs, hyps = read_text_table(ref_path), read_text_table(hyp_path)
    missing = sorted(set(refs) - set(hyps))
    if missing:
        raise ValueError(
            f"{hyp_path}: no hypothesis for {len(missing)} reference utterance(s), e.g. {missing[0]!r}"
        )
    keys = sorted(refs)
    return keys, [refs[k] for k in keys], [hyps[k] for k in keys]


def _error_rates(refs: List[str], hyps: List[str]) -> Tuple[float, float]:
    # jiwer rejects empty references; an empty hypothesis is fine.
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    return jiwer.wer(refs, hyps), jiwer.cer(refs, hyps)


def _score_entity_mode(ref_path: Path, keys: List[str], refs: List[str], hyps: List[str]) -> SetScore:
    """SLURP's metrics and the transcript's WER/CER of entity-mode texts."""
    gold = []
    for key, ref in zip(keys, refs):
        try:
            gold.append(parse_entity_text(ref, strict=True))
        except ValueError as exc:
            raise ValueError(f"{ref_path}: utterance {key!r}: {exc}") from exc
    predicted = [parse_entity_text(hyp) for hyp in hyps]
    slu = score_slu(zip(gold, predicted))
    transcripts = [g.transcript for g in gold]
    wer, cer = _error_rates(transcripts, [p.transcript for p in predicted])
    return SetScore(len(refs), sum(len(t.split()) for t in transcripts), wer, cer, slu.intent_accuracy, slu)


def score(ref_path: Path, hyp_path: Path, intent_first: bool = False, entity: bool = False) -> SetScore:
    """WER/CER of the transcripts; with ``intent_first`` also the accuracy of the first token; with
    ``entity`` (SLURP entity mode) also scenario/action accuracy, SLU-F1 and the span F1s."""
    keys, refs, hyps = _paired(ref_path, hyp_path)
    if entity:
        return _score_entity_mode(ref_path, keys, refs, hyps)
    accuracy = None
    if intent_first:
        ref_intents = [r.split(maxsplit=1) for r in refs]
        hyp_intents = [h.split(maxsplit=1) for h in hyps]
        accuracy = sum(bool(h) and h[0] == r[0] for r, h in zip(ref_intents, hyp_intents)) / len(refs)
        refs = [r[1] if len(r) > 1 else "" for r in ref_intents]
        hyps = [h[1] if len(h) > 1 else "" for h in hyp_intents]
    wer, cer = _error_rates(refs, hyps)
    return SetScore(len(refs), sum(len(r.split()) for r in refs), wer, cer, accuracy)
