"""espeak-ng demo corpora, written in the real corpus layouts so the real preparation reads them unchanged.

* :func:`build_librispeech_corpus`: sentences from a small English grammar (about 240 words, so a tiny
  CTC model can learn it), spoken by espeak-ng voices with their own speed and pitch, in
  ``<root>/LibriSpeech/{train-clean-100,dev-clean,test-clean}/<spk>/<chapter>/``; the three sets are
  disjoint by sentence (the voices are shared: a closed-speaker demo).
* :func:`build_slurp_corpus`: voice commands for 16 intents from templates with slots, in
  ``<root>/dataset/slurp/{train,devel,test}.jsonl`` + ``metadata.json`` and ``<root>/audio/slurp_real/``.
  Train uses its own phrasings; devel and test use held-out phrasings (disjoint sentences). Each filled
  slot is an entity, annotated as SLURP does (``sentence_annotation``, ``tokens``, ``entities``), so the
  corpus also serves the recipe's entity mode.
  Alternatively the real SLURP sentences of a folder of jsonl files are spoken under their real
  recording names (:func:`build_slurp_from_annotations`).

Synthesis: ``espeak-ng -v VOICE -s SPEED -p PITCH --stdout`` with the text on stdin (22050 Hz), resampled to 16 kHz mono
with a polyphase filter and written as 16-bit FLAC; a process pool runs several espeak-ng at once.
A corpus is built under a temporary name and renamed at the end, so a failed run leaves nothing.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import random
import re
import string
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from espnet_prune.data.errors import BadInputs, DataPrepError
from espnet_prune.data.slurp import read_jsonl
from espnet_prune.io import replace_dir

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice (language + variant) with its speaking rate (words/min) and pitch (0-99)."""

    name: str
    speed: int
    pitch: int


# Demo speakers: distinct accents, variants (male/female), rates and pitches.
VOICES = (
    Voice("en-us", 165, 50),
    Voice("en-us+f2", 155, 65),
    Voice("en-gb+m3", 150, 40),
    Voice("en-gb-x-rp+f4", 170, 70),
    Voice("en-us-nyc+m1", 160, 45),
    Voice("en-gb-scotland+f3", 150, 60),
    Voice("en-029+m4", 160, 35),
    Voice("en-gb-x-gbclan+f1", 175, 55),
)


@dataclass(frozen=True)
class SynthJob:
    """One utterance to synthesize into ``out_path``."""

    text: str
    out_path: Path
    voice: Voice


@dataclass(frozen=True)
class SynthStats:
    """How much was synthesized and how long it took."""

    utterances: int
    audio_seconds: float
    wall_seconds: float
    workers: int

    def __str__(self) -> str:
        rate = self.utterances / max(self.wall_seconds, 1e-9)
        return (
            f"synthesized {self.utterances} utterances ({self.audio_seconds / 60:.1f} min of audio) in "
            f"{self.wall_seconds:.1f} s with {self.workers} worker(s): {rate:.1f} utterances/s"
        )


def trim_trailing_silence(audio: np.ndarray, sample_rate: int, keep_seconds: float = 0.1, threshold: float = 0.01) -> np.ndarray:
    """Cut espeak-ng's trailing silence (about 0.3 s, 12% of a demo utterance, all of it training compute)
    down to ``keep_seconds`` after the last sample above ``threshold`` x the peak."""
    magnitude = np.abs(audio)
    loud = np.flatnonzero(magnitude > threshold * float(magnitude.max()))
    if loud.size == 0:
        return audio
    return audio[: min(audio.size, int(loud[-1]) + 1 + int(keep_seconds * sample_rate))]


def synthesize(
    text: str, out_path: Path, voice: str = "en-us", speed: int = 160, pitch: int = 50,
    sample_rate: int = SAMPLE_RATE,
) -> float:
    """Speak ``text`` with espeak-ng into a mono 16-bit file at ``sample_rate``; returns its duration (s)."""
    command = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout"]
    try:  # text on stdin: never mistaken for an option
        result = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise RuntimeError("espeak-ng not found: install it (apt-get install espeak-ng)") from exc
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"espeak-ng failed for voice {voice!r} and text {text!r}: {stderr}")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != sample_rate:
        g = math.gcd(rate, sample_rate)
        audio = resample_poly(audio, sample_rate // g, rate // g).astype(np.float32)
    if audio.size == 0:
        raise RuntimeError(f"espeak-ng produced no audio for voice {voice!r} and text {text!r}")
    audio = trim_trailing_silence(audio, sample_rate)
    sf.write(str(out_path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
    return audio.size / sample_rate


def _run_job(job: SynthJob) -> float:
    """Worker entry point (top-level, so it pickles into the process pool)."""
    job.out_path.parent.mkdir(parents=True, exist_ok=True)
    return synthesize(job.text, job.out_path, job.voice.name, job.voice.speed, job.voice.pitch)


def synthesize_many(jobs: Sequence[SynthJob], workers: int = 2) -> SynthStats:
    """Run the jobs on ``workers`` processes (each job mostly waits on its espeak-ng process)."""
    start = time.perf_counter()
    if workers <= 1:
        durations = [_run_job(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            durations = list(pool.map(_run_job, jobs, chunksize=8))
    stats = SynthStats(len(jobs), float(sum(durations)), time.perf_counter() - start, max(workers, 1))
    logger.info("%s", stats)
    return stats


# --------------------------------------------------------------------------- LibriSpeech-style demo

_NAMES = "ALICE BOB CAROL DAVID EMMA FRANK GRACE HENRY IRIS JACK LUCY MARTIN".split()
_PEOPLE = "TEACHER FARMER DOCTOR SAILOR BAKER DRIVER PAINTER SOLDIER CHILD WOMAN MAN KING QUEEN".split()
_ANIMALS = [
    ("DOG", "DOGS"), ("CAT", "CATS"), ("HORSE", "HORSES"), ("BIRD", "BIRDS"), ("FOX", "FOXES"),
    ("RABBIT", "RABBITS"), ("COW", "COWS"), ("DUCK", "DUCKS"), ("WOLF", "WOLVES"), ("BEAR", "BEARS"),
]
_THINGS = [
    ("BOOK", "BOOKS"), ("LETTER", "LETTERS"), ("APPLE", "APPLES"), ("BOX", "BOXES"), ("CHAIR", "CHAIRS"),
    ("TABLE", "TABLES"), ("LAMP", "LAMPS"), ("KEY", "KEYS"), ("COAT", "COATS"), ("HAT", "HATS"),
    ("BASKET", "BASKETS"), ("CUP", "CUPS"), ("RING", "RINGS"), ("MAP", "MAPS"), ("BOAT", "BOATS"),
    ("CART", "CARTS"), ("CANDLE", "CANDLES"), ("STONE", "STONES"), ("BELL", "BELLS"), ("ROPE", "ROPES"),
]
_PLACES = (
    "GARDEN KITCHEN MARKET RIVER FOREST VILLAGE CHURCH STATION HARBOR SCHOOL FIELD BRIDGE HILL LIBRARY BARN"
).split()
_ADJECTIVES = (
    "OLD YOUNG SMALL LARGE RED GREEN BLUE WHITE BLACK HEAVY LIGHT BRIGHT DARK QUIET HAPPY TIRED CLEVER "
    "GENTLE BRAVE STRANGE"
).split()
_VERBS = [  # (base, past) transitive
    ("FIND", "FOUND"), ("CARRY", "CARRIED"), ("OPEN", "OPENED"), ("BRING", "BROUGHT"), ("WATCH", "WATCHED"),
    ("PAINT", "PAINTED"), ("CLEAN", "CLEANED"), ("SELL", "SOLD"), ("BUY", "BOUGHT"), ("MOVE", "MOVED"),
    ("DROP", "DROPPED"), ("HIDE", "HID"), ("LOSE", "LOST"), ("MEND", "MENDED"), ("PUSH", "PUSHED"),
    ("PULL", "PULLED"),
]
_MOTIONS = "WALKED RAN SLEPT WAITED SANG LAUGHED STAYED WORKED ARRIVED RESTED".split()
_PREPOSITIONS = "IN NEAR BEHIND INTO ACROSS BESIDE UNDER OVER THROUGH TOWARD".split()
_NUMBERS = "TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE TWENTY".split()
_TIMES = [
    "IN THE MORNING", "AT NOON", "IN THE EVENING", "AT NIGHT", "YESTERDAY", "TODAY", "ON MONDAY",
    "ON FRIDAY", "ON SUNDAY", "LAST WEEK",
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
    lambda r: f"{_subject(r)} {r.choice(_VERBS)[1]} THE {r.choice(_ADJECTIVES)} {r.choice(_THINGS)[0]} "
    f"{r.choice(_PREPOSITIONS)} THE {r.choice(_PLACES)}",
    lambda r: f"{_subject(r)} {r.choice(_MOTIONS)} {r.choice(_PREPOSITIONS)} THE {r.choice(_PLACES)} "
    f"{r.choice(_TIMES)}",
    lambda r: f"{r.choice(_NAMES)} AND {r.choice(_NAMES)} {r.choice(_VERBS)[1]} {r.choice(_NUMBERS)} "
    f"{r.choice(_ADJECTIVES)} {r.choice(_THINGS)[1]}",
    lambda r: f"DID {_subject(r)} {r.choice(_VERBS)[0]} THE {r.choice(_THINGS)[0]} {r.choice(_TIMES)}",
    lambda r: f"{_subject(r)} WILL {r.choice(_VERBS)[0]} THE {r.choice(_ADJECTIVES)} {r.choice(_THINGS)[0]} "
    f"{r.choice(_ADVERBS)}",
    lambda r: f"WHERE DID {_subject(r)} {r.choice(_VERBS)[0]} THE {r.choice(_THINGS)[1]}",
    lambda r: f"THE {r.choice(_ADJECTIVES)} {r.choice(_ANIMALS)[0]} {r.choice(_MOTIONS)} {r.choice(_ADVERBS)} "
    f"{r.choice(_PREPOSITIONS)} THE {r.choice(_PLACES)}",
    lambda r: f"{r.choice(_NAMES)} SAID THAT THE {r.choice(_THINGS)[0]} WAS VERY {r.choice(_ADJECTIVES)}",
    lambda r: f"{_subject(r)} CAN NOT {r.choice(_VERBS)[0]} THE {r.choice(_THINGS)[1]} "
    f"{r.choice(_PREPOSITIONS)} THE {r.choice(_PLACES)}",
    lambda r: f"{r.choice(_NUMBERS)} {r.choice(_ANIMALS)[1]} {r.choice(_MOTIONS)} {r.choice(_PREPOSITIONS)} "
    f"THE {r.choice(_ADJECTIVES)} {r.choice(_PLACES)} {r.choice(_TIMES)}",
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
        raise ValueError(f"need 1 <= utts_per_sentence ({utts_per_sentence}) <= num_speakers "
                         f"({num_speakers}) <= {len(VOICES)}")
    root = Path(root)
    target = root / "LibriSpeech"
    _check_new(target, overwrite)
    rng = random.Random(seed)
    sentences = generate_sentences(n_train + n_dev + n_test, seed)
    splits = dict(zip(LIBRISPEECH_SUBSETS, (sentences[:n_train], sentences[n_train:n_train + n_dev],
                                            sentences[n_train + n_dev:])))
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
                (folder / f"{spk_id}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        stats = synthesize_many(jobs, workers)
        replace_dir(work, target)
    return target, stats


# --------------------------------------------------------------------------- SLURP-style demo

# Slot values. Where a value has words in brackets, those are the entity and the others are spoken
# around it, as SLURP annotates "on [date : monday]" and "a [event_name : meeting]"; a value without
# brackets is all entity.
_SLOTS = {
    "time": ["seven am", "six thirty", "eight o'clock", "noon", "nine fifteen pm", "five forty five",
             "ten pm", "seven thirty am", "six am", "eleven o'clock", "quarter past eight", "half past six"],
    "day": ["today", "tomorrow", "on [monday]", "on [friday]", "this weekend", "tonight", "on [sunday]",
            "next tuesday"],
    "city": ["london", "paris", "boston", "tokyo", "berlin", "madrid", "chicago", "sydney"],
    "artist": ["the beatles", "adele", "queen", "taylor swift", "mozart", "elvis", "bob marley"],
    "genre": ["jazz", "rock", "classical music", "pop", "blues", "country music"],
    "station": ["bbc radio one", "jazz fm", "classic fm", "the news station", "capital radio"],
    "room": ["kitchen", "bedroom", "living room", "bathroom", "hallway", "office"],
    "person": ["mom", "john", "sarah", "my [boss]", "alex", "the [team]", "grandma"],
    "event": ["a [meeting]", "a [dentist appointment]", "lunch with sarah", "a [call with john]", "the [gym]",
              "a [haircut]"],
    "food": ["pizza", "sushi", "burgers", "noodles", "chinese food", "curry", "fried chicken"],
    "item": ["milk", "eggs", "bread", "coffee", "apples", "cheese", "rice"],
    "topic": ["sports", "politics", "technology", "business", "science", "music"],
    "amount": ["a bit", "a little", "a lot", "to ten", "to the max"],
}

# The SLURP entity type of each slot (SLURP has no type for shopping-list items: its "ingredient" fits
# these).
SLOT_TYPES = {
    "time": "time", "day": "date", "city": "place_name", "artist": "artist_name", "genre": "music_genre",
    "station": "radio_name", "room": "house_place", "person": "person", "event": "event_name",
    "food": "food_type", "item": "ingredient", "topic": "news_topic", "amount": "change_amount",
}

# (scenario, action) -> (training phrasings, held-out phrasings used for devel and test). The held-out
# phrasings are new word orders and combinations, built only from words the training phrasings use, so
# the demo measures generalisation to unseen commands rather than to unseen words.
INTENT_TEMPLATES: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    ("alarm", "set"): (
        ("wake me up at {time} {day}", "set an alarm for {time}", "please set an alarm at {time} {day}",
         "i need to wake up at {time}", "can you set my alarm for {time} {day}", "alarm at {time} please"),
        ("i need an alarm at {time} {day}", "can you wake me up at {time}")),
    ("alarm", "query"): (
        ("what alarms do i have {day}", "show me my alarms", "which alarms are set {day}",
         "can you check my alarms", "tell me which alarms i have", "are there any alarms set {day}"),
        ("do i have any alarms {day}", "show me which alarms are set")),
    ("alarm", "remove"): (
        ("cancel my alarm for {time}", "remove the {time} alarm", "turn off the alarm {day}",
         "please delete my alarm", "cancel all alarms {day}", "i do not need the {time} alarm"),
        ("delete the alarm at {time}", "please remove my alarm {day}")),
    ("weather", "query"): (
        ("what is the weather in {city} {day}", "will it rain {day}", "how hot is it in {city}",
         "tell me the weather {day}", "is it going to be cold in {city}", "what is the forecast {day}"),
        ("is it going to rain in {city} {day}", "tell me the forecast for {city}")),
    ("play", "music"): (
        ("play {artist}", "put on some {genre}", "i want to hear {artist}", "play some {genre} please",
         "can you play music by {artist}", "start the {genre} playlist"),
        ("can you play some {genre}", "i want to hear music by {artist}")),
    ("play", "radio"): (
        ("turn on the radio", "tune in to {station}", "put on {station}", "i want to listen to the radio",
         "play {station} on the radio", "switch to {station}"),
        ("i want to listen to {station}", "can you turn on the radio {day}")),
    ("iot", "hue_lighton"): (
        ("turn on the lights in the {room}", "switch on the {room} light", "lights on in the {room}",
         "can you turn the {room} lights on", "i need some light in the {room}"),
        ("switch on the lights in the {room} please", "turn the {room} light on")),
    ("iot", "hue_lightoff"): (
        ("turn off the lights in the {room}", "switch off the {room} light", "lights off in the {room}",
         "can you turn the {room} lights off", "make it dark in the {room}"),
        ("switch off the lights in the {room} please", "turn the {room} light off")),
    ("calendar", "set"): (
        ("add {event} to my calendar {day}", "schedule {event} at {time} {day}", "put {event} in my calendar",
         "remind me about {event} {day}", "i have {event} at {time}", "book {event} {day}"),
        ("put {event} in my calendar at {time} {day}", "remind me about {event} at {time}")),
    ("calendar", "query"): (
        ("what is on my calendar {day}", "do i have any meetings {day}", "what are my plans {day}",
         "check my calendar", "tell me what i have {day}", "am i busy {day}"),
        ("check my calendar {day}", "what meetings do i have {day}")),
    ("takeaway", "order"): (
        ("order {food} for dinner", "i would like to order {food}", "get me some {food}",
         "can you order {food} from the restaurant", "i want {food} delivered", "order some {food} please"),
        ("can you get me {food} for dinner", "i would like some {food} delivered")),
    ("lists", "createoradd"): (
        ("add {item} to my shopping list", "put {item} on the list", "i need to buy {item}",
         "remember to get {item}", "add {item} to the list please", "put {item} on my shopping list"),
        ("i need {item} on my shopping list", "remember to buy {item}")),
    ("email", "sendemail"): (
        ("send an email to {person}", "write an email to {person} {day}", "email {person} now",
         "send {person} an email please", "can you write to {person}", "i want to email {person}"),
        ("can you send an email to {person}", "write to {person} {day}")),
    ("news", "query"): (
        ("what is the latest news about {topic}", "tell me the {topic} news", "any news on {topic}",
         "give me the headlines {day}", "what is new in {topic} {day}", "read me the news"),
        ("tell me the latest {topic} news", "give me the headlines about {topic}")),
    ("datetime", "query"): (
        ("what time is it in {city}", "what is the date {day}", "tell me the time",
         "what day is it {day}", "what is the time in {city} now", "which day of the week is it"),
        ("tell me the time in {city}", "can you tell me the date {day}")),
    ("audio", "volume_up"): (
        ("turn the volume up {amount}", "make it louder", "turn it up {amount}", "increase the volume",
         "louder please", "can you turn up the volume {amount}"),
        ("make the volume louder", "please turn it up {amount}")),
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
        expanded.append((
            template.format(**{slot: spoken for slot, (spoken, _) in zip(slots, filled)}),
            template.format(**{slot: annotated for slot, (_, annotated) in zip(slots, filled)}),
        ))
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


def _tokens_and_entities(annotation: str) -> tuple[list[dict], list[dict]]:
    """SLURP's ``tokens`` (one per word) and ``entities`` (type and token ids) of an annotated sentence."""
    words: list[str] = []
    entities = []
    end = 0
    for span in re.finditer(r"\[([a-z_]+) : ([^\]]+)\]", annotation):
        words += annotation[end:span.start()].split()
        entity_words = span.group(2).split()
        entities.append({"type": span.group(1), "span": list(range(len(words), len(words) + len(entity_words)))})
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
                    metadata[str(record["slurp_id"])] = {"recordings": {
                        r["file"]: {"usrid": f"demo-{VOICES.index(voices[r['file']]) + 1:02d}"}
                        for r in record["recordings"]
                    }}
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
        raise ValueError(f"recordings_per_sentence must be in 1..{len(VOICES)}, got {recordings_per_sentence}")
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
            tokens, entities = _tokens_and_entities(command.annotation)
            records.append({
                "slurp_id": next(slurp_ids), "sentence": command.sentence,
                "sentence_annotation": command.annotation, "tokens": tokens, "scenario": command.scenario,
                "action": command.action, "intent": f"{command.scenario}_{command.action}", "entities": entities,
                "recordings": [{"file": f} for f in files],
            })
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

