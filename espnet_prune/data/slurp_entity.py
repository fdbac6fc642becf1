"""SLURP entity mode: the target text that carries the intent and the entity spans of an utterance,
built from a SLURP annotation and parsed back (references strictly, hypotheses leniently).

The layout is ESPnet's ``egs2/slurp_entity`` one (the intent, then the entities sorted by type, then the
transcript; ``SEP`` between the parts, ``FILL`` between an entity's type and its words), written in this
recipe's casing::

    alarm_set sep [date] fill TOMORROW sep [time] fill SEVEN AM sep WAKE ME UP AT SEVEN AM TOMORROW
    weather_query sep WHAT IS THE WEATHER                       (no entities)

Two departures from ESPnet's ``SEP`` / ``FILL`` / bare type, both for the tokenizers:

- Words are uppercase (:func:`espnet_prune.data.slurp.normalize_transcript`) and every label or marker is
  lowercase, so a marker can never be a word: ESPnet's ``SEP`` and ``FILL`` would also be the words
  "FILL" (fill the tank) and the start of "SEPTEMBER" once they are single tokens.
- An entity type is written in brackets, ``[time]``. With char tokens each label is one non-linguistic
  symbol, and ESPnet's CharTokenizer tries its symbols in the order of a Python set (which changes with
  each process's hash seed), taking the first that is a prefix of the rest of the line: SLURP's ``time``
  is a prefix of ``timeofday`` and ``time_zone``, ``date`` of ``datetime_query``, ``person`` of
  ``personal_info``. Bracketed types are prefix-free, so every process tokenizes them alike.

Entity fillers are the words of ``sentence_annotation`` (``[type : words]``), normalised like the
transcript. Nothing here imports ESPnet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, List, Sequence, Tuple

SEP = "sep"
FILL = "fill"

_TYPE_NAME = re.compile(r"[a-z][a-z_]*")
_TYPE_TOKEN = re.compile(r"\[([a-z][a-z_]*)\]")
_ANNOTATED_SPAN = re.compile(r"\[([^\[\]]*)\]")


@dataclass(frozen=True)
class Entity:
    """One entity: its type (``time``) and its words (``SEVEN AM``)."""

    type: str
    filler: str


@dataclass(frozen=True)
class SluText:
    """A parsed target text: intent label, entities in text order, transcript."""

    intent: str
    entities: Tuple[Entity, ...]
    transcript: str

    @property
    def scenario(self) -> str:
        """``alarm`` of ``alarm_set`` (SLURP scenarios have no underscore; actions may: ``hue_lightoff``)."""
        return self.intent.split("_", 1)[0]

    @property
    def action(self) -> str:
        """``set`` of ``alarm_set``; empty when the label has no underscore."""
        return self.intent.split("_", 1)[1] if "_" in self.intent else ""


def type_token(entity_type: str) -> str:
    """The token of an entity type in the target text: ``[time]``."""
    return f"[{entity_type}]"


def is_markup_token(token: str) -> bool:
    """Is ``token`` a marker (``sep``, ``fill``) or an entity type token (``[time]``)?"""
    return token in (SEP, FILL) or _TYPE_TOKEN.fullmatch(token) is not None


def parse_sentence_annotation(annotation: str) -> List[Entity]:
    """The ``[type : words]`` spans of a SLURP ``sentence_annotation``, in order, words as written.

    Raises ValueError saying what is wrong (a bracket outside a span, a span without `` : ``, a type that
    is not lowercase letters and underscores, a span without words); callers add where it came from.
    """
    entities = []
    for match in _ANNOTATED_SPAN.finditer(annotation):
        entity_type, colon, words = match.group(1).partition(":")
        entity_type, words = entity_type.strip(), words.strip()
        if not colon or not words:
            raise ValueError(f"span {match.group(0)!r} is not '[type : words]'")
        if _TYPE_NAME.fullmatch(entity_type) is None:
            raise ValueError(
                f"span {match.group(0)!r}: entity type {entity_type!r} is not lowercase letters and '_'"
            )
        entities.append(Entity(entity_type, words))
    outside = _ANNOTATED_SPAN.sub(" ", annotation)
    if "[" in outside or "]" in outside:
        raise ValueError(f"unbalanced bracket in {annotation!r}")
    return entities


def entity_text(intent: str, entities: Iterable[Entity], transcript: str) -> str:
    """``<intent> sep [type] fill <WORDS> ... sep <TRANSCRIPT>``; entities sorted by type (stable), as
    ESPnet's slurp_entity data preparation sorts them."""
    parts = [intent]
    for entity in sorted(entities, key=lambda e: e.type):
        parts += [SEP, type_token(entity.type), FILL, entity.filler]
    return " ".join(parts + [SEP, transcript])


def _entity(segment: Sequence[str]) -> Entity | None:
    """``[type] fill WORDS...`` -> Entity (empty filler allowed); None for any other segment."""
    if len(segment) < 2 or segment[1] != FILL or any(is_markup_token(t) for t in segment[2:]):
        return None
    match = _TYPE_TOKEN.fullmatch(segment[0])
    return Entity(match.group(1), " ".join(segment[2:])) if match else None


def parse_entity_text(text: str, strict: bool = False) -> SluText:
    """Parse a target text (see the module docstring).

    ``strict`` (references): anything but the exact layout, a non-empty transcript and non-empty
    fillers raises ValueError. Otherwise (hypotheses, whatever a model emits): the first token is the
    intent; without any ``sep`` the rest is the transcript (read as ``<intent> <TRANSCRIPT>``); with
    one, the part after the last ``sep`` is the transcript, and each part in between that reads
    ``[type] fill WORDS`` is an entity (the words may be empty); other parts are dropped, as ESPnet's
    slurp_entity scoring drops parts without exactly one FILL.
    """
    tokens = text.split()
    segments: List[List[str]] = [[]]
    for token in tokens:
        if token == SEP:
            segments.append([])
        else:
            segments[-1].append(token)
    head = segments[0]
    intent = head[0] if head and not is_markup_token(head[0]) else ""
    if len(segments) == 1:
        if strict:
            raise ValueError(f"not an entity-mode text (no {SEP!r}): {text!r}")
        return SluText(intent, (), " ".join(head[1:] if intent else head))
    entities = [_entity(segment) for segment in segments[1:-1]]
    transcript = segments[-1]
    if strict:
        problems = []
        if len(head) != 1 or not intent:
            problems.append(f"expected one intent label before the first {SEP!r}, got {' '.join(head)!r}")
        for segment, entity in zip(segments[1:-1], entities):
            if entity is None or not entity.filler:
                problems.append(f"entity part {' '.join(segment)!r} is not '[type] {FILL} WORDS'")
        if not transcript or any(is_markup_token(t) for t in transcript):
            problems.append(f"transcript part {' '.join(transcript)!r} is empty or has markup")
        if problems:
            raise ValueError(f"not an entity-mode text ({'; '.join(problems)}): {text!r}")
    return SluText(intent, tuple(e for e in entities if e is not None), " ".join(transcript))
