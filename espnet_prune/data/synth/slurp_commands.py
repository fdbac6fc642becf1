"""Voice commands for the SLURP-style demo corpus: 16 intents, templates with slots, and each filled slot
annotated as a SLURP entity (``sentence_annotation``, ``tokens``, ``entities``).

Train uses its own phrasings; devel and test use held-out phrasings (disjoint sentences).
"""

from __future__ import annotations

import itertools
import random
import re
import string
from dataclasses import dataclass
from typing import Sequence

# Slot values. Where a value has words in brackets, those are the entity and the others are spoken
# around it, as SLURP annotates "on [date : monday]" and "a [event_name : meeting]"; a value without
# brackets is all entity.
_SLOTS = {
    "time": [
        "seven am",
        "six thirty",
        "eight o'clock",
        "noon",
        "nine fifteen pm",
        "five forty five",
        "ten pm",
        "seven thirty am",
        "six am",
        "eleven o'clock",
        "quarter past eight",
        "half past six",
    ],
    "day": [
        "today",
        "tomorrow",
        "on [monday]",
        "on [friday]",
        "this weekend",
        "tonight",
        "on [sunday]",
        "next tuesday",
    ],
    "city": ["london", "paris", "boston", "tokyo", "berlin", "madrid", "chicago", "sydney"],
    "artist": ["the beatles", "adele", "queen", "taylor swift", "mozart", "elvis", "bob marley"],
    "genre": ["jazz", "rock", "classical music", "pop", "blues", "country music"],
    "station": ["bbc radio one", "jazz fm", "classic fm", "the news station", "capital radio"],
    "room": ["kitchen", "bedroom", "living room", "bathroom", "hallway", "office"],
    "person": ["mom", "john", "sarah", "my [boss]", "alex", "the [team]", "grandma"],
    "event": [
        "a [meeting]",
        "a [dentist appointment]",
        "lunch with sarah",
        "a [call with john]",
        "the [gym]",
        "a [haircut]",
    ],
    "food": ["pizza", "sushi", "burgers", "noodles", "chinese food", "curry", "fried chicken"],
    "item": ["milk", "eggs", "bread", "coffee", "apples", "cheese", "rice"],
    "topic": ["sports", "politics", "technology", "business", "science", "music"],
    "amount": ["a bit", "a little", "a lot", "to ten", "to the max"],
}

# The SLURP entity type of each slot (SLURP has no type for shopping-list items: its "ingredient" fits
# these).
SLOT_TYPES = {
    "time": "time",
    "day": "date",
    "city": "place_name",
    "artist": "artist_name",
    "genre": "music_genre",
    "station": "radio_name",
    "room": "house_place",
    "person": "person",
    "event": "event_name",
    "food": "food_type",
    "item": "ingredient",
    "topic": "news_topic",
    "amount": "change_amount",
}

# (scenario, action) -> (training phrasings, held-out phrasings used for devel and test). The held-out
# phrasings are new word orders and combinations, built only from words the training phrasings use, so
# the demo measures generalisation to unseen commands rather than to unseen words.
INTENT_TEMPLATES: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    ("alarm", "set"): (
        (
            "wake me up at {time} {day}",
            "set an alarm for {time}",
            "please set an alarm at {time} {day}",
            "i need to wake up at {time}",
            "can you set my alarm for {time} {day}",
            "alarm at {time} please",
        ),
        ("i need an alarm at {time} {day}", "can you wake me up at {time}"),
    ),
    ("alarm", "query"): (
        (
            "what alarms do i have {day}",
            "show me my alarms",
            "which alarms are set {day}",
            "can you check my alarms",
            "tell me which alarms i have",
            "are there any alarms set {day}",
        ),
        ("do i have any alarms {day}", "show me which alarms are set"),
    ),
    ("alarm", "remove"): (
        (
            "cancel my alarm for {time}",
            "remove the {time} alarm",
            "turn off the alarm {day}",
            "please delete my alarm",
            "cancel all alarms {day}",
            "i do not need the {time} alarm",
        ),
        ("delete the alarm at {time}", "please remove my alarm {day}"),
    ),
    ("weather", "query"): (
        (
            "what is the weather in {city} {day}",
            "will it rain {day}",
            "how hot is it in {city}",
            "tell me the weather {day}",
            "is it going to be cold in {city}",
            "what is the forecast {day}",
        ),
        ("is it going to rain in {city} {day}", "tell me the forecast for {city}"),
    ),
    ("play", "music"): (
        (
            "play {artist}",
            "put on some {genre}",
            "i want to hear {artist}",
            "play some {genre} please",
            "can you play music by {artist}",
            "start the {genre} playlist",
        ),
        ("can you play some {genre}", "i want to hear music by {artist}"),
    ),
    ("play", "radio"): (
        (
            "turn on the radio",
            "tune in to {station}",
            "put on {station}",
            "i want to listen to the radio",
            "play {station} on the radio",
            "switch to {station}",
        ),
        ("i want to listen to {station}", "can you turn on the radio {day}"),
    ),
    ("iot", "hue_lighton"): (
        (
            "turn on the lights in the {room}",
            "switch on the {room} light",
            "lights on in the {room}",
            "can you turn the {room} lights on",
            "i need some light in the {room}",
        ),
        ("switch on the lights in the {room} please", "turn the {room} light on"),
    ),
    ("iot", "hue_lightoff"): (
        (
            "turn off the lights in the {room}",
            "switch off the {room} light",
            "lights off in the {room}",
            "can you turn the {room} lights off",
            "make it dark in the {room}",
        ),
        ("switch off the lights in the {room} please", "turn the {room} light off"),
    ),
    ("calendar", "set"): (
        (
            "add {event} to my calendar {day}",
            "schedule {event} at {time} {day}",
            "put {event} in my calendar",
            "remind me about {event} {day}",
            "i have {event} at {time}",
            "book {event} {day}",
        ),
        ("put {event} in my calendar at {time} {day}", "remind me about {event} at {time}"),
    ),
    ("calendar", "query"): (
        (
            "what is on my calendar {day}",
            "do i have any meetings {day}",
            "what are my plans {day}",
            "check my calendar",
            "tell me what i have {day}",
            "am i busy {day}",
        ),
        ("check my calendar {day}", "what meetings do i have {day}"),
    ),
    ("takeaway", "order"): (
        (
            "order {food} for dinner",
            "i would like to order {food}",
            "get me some {food}",
            "can you order {food} from the restaurant",
            "i want {food} delivered",
            "order some {food} please",
        ),
        ("can you get me {food} for dinner", "i would like some {food} delivered"),
    ),
    ("lists", "createoradd"): (
        (
            "add {item} to my shopping list",
            "put {item} on the list",
            "i need to buy {item}",
            "remember to get {item}",
            "add {item} to the list please",
            "put {item} on my shopping list",
        ),
        ("i need {item} on my shopping list", "remember to buy {item}"),
    ),
    ("email", "sendemail"): (
        (
            "send an email to {person}",
            "write an email to {person} {day}",
            "email {person} now",
            "send {person} an email please",
            "can you write to {person}",
            "i want to email {person}",
        ),
        ("can you send an email to {person}", "write to {person} {day}"),
    ),
    ("news", "query"): (
        (
            "what is the latest news about {topic}",
            "tell me the {topic} news",
            "any news on {topic}",
            "give me the headlines {day}",
            "what is new in {topic} {day}",
            "read me the news",
        ),
        ("tell me the latest {topic} news", "give me the headlines about {topic}"),
    ),
    ("datetime", "query"): (
        (
            "what time is it in {city}",
            "what is the date {day}",
            "tell me the time",
            "what day is it {day}",
            "what is the time in {city} now",
            "which day of the week is it",
        ),
        ("tell me the time in {city}", "can you tell me the date {day}"),
    ),
    ("audio", "volume_up"): (
        (
            "turn the volume up {amount}",
            "make it louder",
            "turn it up {amount}",
            "increase the volume",
            "louder please",
            "can you turn up the volume {amount}",
        ),
        ("make the volume louder", "please turn it up {amount}"),
    ),
}


@dataclass(frozen=True)
class Command:
    """One demo command: its intent, the sentence spoken and its SLURP ``sentence_annotation``."""

    scenario: str
    action: str
    sentence: str
    annotation: str  # "wake me up at [time : seven am] [date : tomorrow]"


def _fill_slot(slot: str, value: str) -> tuple[str, str]:
    """(spoken words, annotated words) of one slot value: ``on [monday]`` -> ``on monday``,
    ``on [date : monday]``; a value without brackets is all entity."""
    entity_type = SLOT_TYPES[slot]
    if "[" not in value:
        return value, f"[{entity_type} : {value}]"
    return value.replace("[", "").replace("]", ""), value.replace("[", f"[{entity_type} : ")


def expand_annotated_template(template: str) -> list[tuple[str, str]]:
    """Every (sentence, sentence_annotation) of a template, filling each ``{slot}`` with each value."""
    slots = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    expanded = []
    for values in itertools.product(*(_SLOTS[s] for s in slots)):
        filled = [_fill_slot(slot, value) for slot, value in zip(slots, values)]
        expanded.append(
            (
                template.format(**{slot: spoken for slot, (spoken, _) in zip(slots, filled)}),
                template.format(**{slot: annotated for slot, (_, annotated) in zip(slots, filled)}),
            )
        )
    return expanded


def expand_template(template: str) -> list[str]:
    """Every sentence of a template, filling each ``{slot}`` with each of its values."""
    return [sentence for sentence, _ in expand_annotated_template(template)]


def _interleave_templates(templates: Sequence[str], rng: random.Random) -> list[tuple[str, str]]:
    """The templates' (sentence, annotation) pairs, each template's shuffled, dealt round-robin over the
    templates.

    Taken from the end (``pop``), any number of sentences spreads over the phrasings evenly, instead of
    following the templates' slot counts (one template with two slots would otherwise dominate). A
    sentence two phrasings share is dealt once (with the first phrasing's annotation).
    """
    per_template = []
    for template in templates:
        pairs = expand_annotated_template(template)
        rng.shuffle(pairs)
        per_template.append(pairs)
    dealt: dict[str, str] = {}
    for round_ in itertools.zip_longest(*per_template):
        for pair in round_:
            if pair is not None:
                dealt.setdefault(*pair)
    return list(dealt.items())[::-1]


def _take_balanced(pools: dict[tuple[str, str], list[tuple[str, str]]], count: int) -> list[Command]:
    """Take up to ``count`` commands round-robin over intents (removing them from the pools)."""
    taken: list[Command] = []
    while len(taken) < count and any(pools.values()):
        for (scenario, action), pool in pools.items():
            if pool and len(taken) < count:
                taken.append(Command(scenario, action, *pool.pop()))
    return taken


def tokens_and_entities(annotation: str) -> tuple[list[dict], list[dict]]:
    """SLURP's ``tokens`` (one per word) and ``entities`` (type and token ids) of an annotated sentence."""
    words: list[str] = []
    entities = []
    end = 0
    for span in re.finditer(r"\[([a-z_]+) : ([^\]]+)\]", annotation):
        words += annotation[end : span.start()].split()
        entity_words = span.group(2).split()
        entities.append(
            {"type": span.group(1), "span": list(range(len(words), len(words) + len(entity_words)))}
        )
        words += entity_words
        end = span.end()
    words += annotation[end:].split()
    return [{"surface": word, "id": i} for i, word in enumerate(words)], entities


def generate_commands(n_train: int, n_devel: int, n_test: int, seed: int = 0) -> dict[str, list[Command]]:
    """Commands per split, balanced over intents; devel/test phrasings are held out."""
    rng = random.Random(seed)
    train_pools, heldout_pools = {}, {}
    for intent, (train_templates, heldout_templates) in INTENT_TEMPLATES.items():
        for pools, templates in ((train_pools, train_templates), (heldout_pools, heldout_templates)):
            pools[intent] = _interleave_templates(templates, rng)
    return {
        "train": _take_balanced(train_pools, n_train),
        "test": _take_balanced(heldout_pools, n_test),
        "devel": _take_balanced(heldout_pools, n_devel),
    }
