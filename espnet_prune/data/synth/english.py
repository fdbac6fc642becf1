"""A small English grammar (about 240 words, so a tiny CTC model can learn it) for the LibriSpeech-style
demo corpus: distinct UPPERCASE sentences, the same for the same seed."""

from __future__ import annotations

import random
from typing import Callable

_NAMES = "ALICE BOB CAROL DAVID EMMA FRANK GRACE HENRY IRIS JACK LUCY MARTIN".split()
_PEOPLE = "TEACHER FARMER DOCTOR SAILOR BAKER DRIVER PAINTER SOLDIER CHILD WOMAN MAN KING QUEEN".split()
_ANIMALS = [
    ("DOG", "DOGS"),
    ("CAT", "CATS"),
    ("HORSE", "HORSES"),
    ("BIRD", "BIRDS"),
    ("FOX", "FOXES"),
    ("RABBIT", "RABBITS"),
    ("COW", "COWS"),
    ("DUCK", "DUCKS"),
    ("WOLF", "WOLVES"),
    ("BEAR", "BEARS"),
]
_THINGS = [
    ("BOOK", "BOOKS"),
    ("LETTER", "LETTERS"),
    ("APPLE", "APPLES"),
    ("BOX", "BOXES"),
    ("CHAIR", "CHAIRS"),
    ("TABLE", "TABLES"),
    ("LAMP", "LAMPS"),
    ("KEY", "KEYS"),
    ("COAT", "COATS"),
    ("HAT", "HATS"),
    ("BASKET", "BASKETS"),
    ("CUP", "CUPS"),
    ("RING", "RINGS"),
    ("MAP", "MAPS"),
    ("BOAT", "BOATS"),
    ("CART", "CARTS"),
    ("CANDLE", "CANDLES"),
    ("STONE", "STONES"),
    ("BELL", "BELLS"),
    ("ROPE", "ROPES"),
]
_PLACES = (
    "GARDEN KITCHEN MARKET RIVER FOREST VILLAGE CHURCH STATION HARBOR SCHOOL FIELD BRIDGE HILL LIBRARY BARN"
).split()
_ADJECTIVES = (
    "OLD YOUNG SMALL LARGE RED GREEN BLUE WHITE BLACK HEAVY LIGHT BRIGHT DARK QUIET HAPPY TIRED CLEVER "
    "GENTLE BRAVE STRANGE"
).split()
_VERBS = [  # (base, past) transitive
    ("FIND", "FOUND"),
    ("CARRY", "CARRIED"),
    ("OPEN", "OPENED"),
    ("BRING", "BROUGHT"),
    ("WATCH", "WATCHED"),
    ("PAINT", "PAINTED"),
    ("CLEAN", "CLEANED"),
    ("SELL", "SOLD"),
    ("BUY", "BOUGHT"),
    ("MOVE", "MOVED"),
    ("DROP", "DROPPED"),
    ("HIDE", "HID"),
    ("LOSE", "LOST"),
    ("MEND", "MENDED"),
    ("PUSH", "PUSHED"),
    ("PULL", "PULLED"),
]
_MOTIONS = "WALKED RAN SLEPT WAITED SANG LAUGHED STAYED WORKED ARRIVED RESTED".split()
_PREPOSITIONS = "IN NEAR BEHIND INTO ACROSS BESIDE UNDER OVER THROUGH TOWARD".split()
_NUMBERS = "TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE TWENTY".split()
_TIMES = [
    "IN THE MORNING",
    "AT NOON",
    "IN THE EVENING",
    "AT NIGHT",
    "YESTERDAY",
    "TODAY",
    "ON MONDAY",
    "ON FRIDAY",
    "ON SUNDAY",
    "LAST WEEK",
]
_ADVERBS = "SLOWLY QUICKLY CAREFULLY SILENTLY GLADLY".split()


def _subject(rng: random.Random) -> str:
    """A name, ``THE <person>`` or ``THE <adjective> <person>``."""
    kind = rng.randrange(3)
    if kind == 0:
        return rng.choice(_NAMES)
    if kind == 1:
        return f"THE {rng.choice(_PEOPLE)}"
    return f"THE {rng.choice(_ADJECTIVES)} {rng.choice(_PEOPLE)}"


_SENTENCE_TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    lambda r: (
        f"{_subject(r)} {r.choice(_VERBS)[1]} THE {r.choice(_ADJECTIVES)} {r.choice(_THINGS)[0]} "
        f"{r.choice(_PREPOSITIONS)} THE {r.choice(_PLACES)}"
    ),
    lambda r: (
        f"{_subject(r)} {r.choice(_MOTIONS)} {r.choice(_PREPOSITIONS)} THE {r.choice(_PLACES)} "
        f"{r.choice(_TIMES)}"
    ),
    lambda r: (
        f"{r.choice(_NAMES)} AND {r.choice(_NAMES)} {r.choice(_VERBS)[1]} {r.choice(_NUMBERS)} "
        f"{r.choice(_ADJECTIVES)} {r.choice(_THINGS)[1]}"
    ),
    lambda r: f"DID {_subject(r)} {r.choice(_VERBS)[0]} THE {r.choice(_THINGS)[0]} {r.choice(_TIMES)}",
    lambda r: (
        f"{_subject(r)} WILL {r.choice(_VERBS)[0]} THE {r.choice(_ADJECTIVES)} {r.choice(_THINGS)[0]} "
        f"{r.choice(_ADVERBS)}"
    ),
    lambda r: f"WHERE DID {_subject(r)} {r.choice(_VERBS)[0]} THE {r.choice(_THINGS)[1]}",
    lambda r: (
        f"THE {r.choice(_ADJECTIVES)} {r.choice(_ANIMALS)[0]} {r.choice(_MOTIONS)} {r.choice(_ADVERBS)} "
        f"{r.choice(_PREPOSITIONS)} THE {r.choice(_PLACES)}"
    ),
    lambda r: f"{r.choice(_NAMES)} SAID THAT THE {r.choice(_THINGS)[0]} WAS VERY {r.choice(_ADJECTIVES)}",
    lambda r: (
        f"{_subject(r)} CAN NOT {r.choice(_VERBS)[0]} THE {r.choice(_THINGS)[1]} "
        f"{r.choice(_PREPOSITIONS)} THE {r.choice(_PLACES)}"
    ),
    lambda r: (
        f"{r.choice(_NUMBERS)} {r.choice(_ANIMALS)[1]} {r.choice(_MOTIONS)} {r.choice(_PREPOSITIONS)} "
        f"THE {r.choice(_ADJECTIVES)} {r.choice(_PLACES)} {r.choice(_TIMES)}"
    ),
)


def generate_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct UPPERCASE sentences from the demo grammar, the same for the same seed."""
    rng = random.Random(seed)
    sentences: dict[str, None] = {}
    for _ in range(count * 100):
        if len(sentences) >= count:
            break
        sentences.setdefault(rng.choice(_SENTENCE_TEMPLATES)(rng), None)
    if len(sentences) < count:
        raise ValueError(f"the demo grammar gave only {len(sentences)} distinct sentences, {count} asked")
    return list(sentences)
