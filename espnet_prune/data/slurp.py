"""SLURP: download and conversion to Kaldi-style data dirs for spoken language understanding.

Layout read (as the SLURP repository and its ``scripts/download_audio.sh`` leave it)::

    <slurp_dir>/dataset/slurp/{train,train_synthetic,devel,test}.jsonl  [+ metadata.json]
    <slurp_dir>/audio/slurp_real/*.flac   <slurp_dir>/audio/slurp_synth/*.flac

One JSON object per line with ``slurp_id``, ``sentence``, ``scenario``, ``action``, ``recordings``
(a list of ``{"file": "audio-....flac", ...}``). One utterance per recording.

Text (as ESPnet's egs2/slurp: the intent label first, then the transcript)::

    <scenario>_<action> <NORMALISED TRANSCRIPT>

The label is built from ``scenario`` and ``action`` because the ``intent`` field is wrong in some
records. The transcript is normalised by :func:`normalize_transcript`; the lowercase label can never
collide with an (uppercase) word.

Entity mode (``entity=True``, as ESPnet's egs2/slurp_entity) also reads ``sentence_annotation``
(``... at [time : seven am]``) and ``entities`` (``[{"type": "time", "span": [token ids]}, ...]``), which
must agree (same types in the same order), and writes the text of
:mod:`espnet_prune.data.slurp_entity`::

    alarm_set sep [time] fill SEVEN AM sep WAKE ME UP AT SEVEN AM

Speakers and utterance ids: with ``metadata.json`` (``{slurp_id: {"recordings": {file: {"usrid": ...}}}}``)
the speaker is the ``usrid`` and the utterance id ``<usrid>_<file stem>``. Recordings of
``train_synthetic.jsonl`` get speaker ``synth`` (id ``synth_<file stem>``). Without metadata each real
recording is its own speaker (Kaldi's convention for unknown speakers): utterance id = speaker =
``<file stem>``. Sets written: ``train`` (train + train_synthetic when present), ``devel``, ``test``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from espnet_prune.data.audio import SAMPLE_RATE, keep_good_audio
from espnet_prune.data.download import Opener, default_opener, download_file, extract_tar
from espnet_prune.data.errors import BadInputs, DataPrepError
from espnet_prune.data.kaldi import PreparedSet, Utterance, write_data_dirs
from espnet_prune.data.slurp_entity import Entity, entity_text, parse_sentence_annotation

logger = logging.getLogger(__name__)

SETS = ("train", "devel", "test")
SYNTHETIC_JSONL = "train_synthetic.jsonl"
SYNTHETIC_SPEAKER = "synth"

ANNOTATIONS_URL = "https://raw.githubusercontent.com/pswietojanski/slurp/master/dataset/slurp"
AUDIO_URL = "https://zenodo.org/record/4274930/files"
ANNOTATION_FILES = ("train.jsonl", SYNTHETIC_JSONL, "devel.jsonl", "test.jsonl", "metadata.json")
AUDIO_ARCHIVES = ("slurp_real.tar.gz", "slurp_synth.tar.gz")

_REQUIRED_KEYS = ("slurp_id", "sentence", "scenario", "action", "recordings")
_SPOKEN_SYMBOLS = {"@": " at ", "#": " hashtag ", "&": " and "}


@dataclass(frozen=True)
class SlurpRecord:
    """One annotated sentence with the audio file names of its recordings."""

    slurp_id: int
    sentence: str
    scenario: str
    action: str
    recordings: tuple[str, ...]
    source: str  # "file:line"
    entities: tuple[Entity, ...] = ()  # read in entity mode only; fillers as annotated

    @property
    def label(self) -> str:
        """Intent label ``<scenario>_<action>`` (the ``intent`` field is not trusted)."""
        return f"{self.scenario}_{self.action}"

    def text(self, entity: bool) -> str:
        """The data dir text: ``<label> <TRANSCRIPT>``, or the entity-mode text (fillers normalised)."""
        transcript = normalize_transcript(self.sentence)
        if not entity:
            return f"{self.label} {transcript}"
        entities = [Entity(e.type, normalize_transcript(e.filler)) for e in self.entities]
        return entity_text(self.label, entities, transcript)


def normalize_transcript(sentence: str) -> str:
    """Spoken-form uppercase transcript: ``@ # &`` spoken (AT, HASHTAG, AND), ``,`` and ``.`` dropped
    (so ``1,000`` -> ``1000``), any other character but letters, digits and apostrophes -> space."""
    for symbol, spoken in _SPOKEN_SYMBOLS.items():
        sentence = sentence.replace(symbol, spoken)
    sentence = sentence.replace(",", "").replace(".", "")
    sentence = "".join(c if c.isalnum() or c == "'" else " " for c in sentence.upper())
    return " ".join(sentence.split())


def _parse_entities(obj: dict, where: str) -> tuple[Entity, ...]:
    """The entities of ``sentence_annotation``, checked against the ``entities`` list (types in order)."""
    for key in ("sentence_annotation", "entities"):
        if key not in obj:
            raise DataPrepError(f"{where}: missing key {key!r} (needed in entity mode)")
    annotation, listed = obj["sentence_annotation"], obj["entities"]
    if not isinstance(annotation, str):
        raise DataPrepError(f"{where}: key 'sentence_annotation' has a bad value {annotation!r}")
    if not isinstance(listed, list) or not all(
        isinstance(e, dict) and isinstance(e.get("type"), str) for e in listed
    ):
        raise DataPrepError(
            f'{where}: key \'entities\' must be a list of {{"type": ..., "span": [...]}} objects'
        )
    try:
        entities = parse_sentence_annotation(annotation)
    except ValueError as exc:
        raise DataPrepError(f"{where}: key 'sentence_annotation': {exc}") from exc
    annotated_types, listed_types = [e.type for e in entities], [e["type"] for e in listed]
    if annotated_types != listed_types:
        raise DataPrepError(
            f"{where}: 'sentence_annotation' has entity types {annotated_types} but 'entities' has {listed_types}"
        )
    for entity in entities:
        if not normalize_transcript(entity.filler):
            raise DataPrepError(
                f"{where}: entity [{entity.type} : {entity.filler}] is empty after normalisation"
            )
    return tuple(entities)


def _parse_record(line: str, where: str, entity: bool = False) -> SlurpRecord:
    """One jsonl line -> SlurpRecord (with its entities in entity mode); DataPrepError naming ``where``
    and the key on bad input."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataPrepError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(obj, dict):
        raise DataPrepError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in _REQUIRED_KEYS:
        if key not in obj:
            raise DataPrepError(f"{where}: missing key {key!r}")
    for key in ("sentence", "scenario", "action"):
        value = obj[key]
        if not isinstance(value, str) or not value.strip() or (key != "sentence" and len(value.split()) != 1):
            raise DataPrepError(f"{where}: key {key!r} has a bad value {value!r}")
    recordings = obj["recordings"]
    if not isinstance(recordings, list) or not all(
        isinstance(r, dict) and isinstance(r.get("file"), str) and r["file"].endswith(".flac")
        for r in recordings
    ):
        raise DataPrepError(
            f'{where}: key \'recordings\' must be a list of {{"file": "<name>.flac"}} objects'
        )
    return SlurpRecord(
        slurp_id=obj["slurp_id"],
        sentence=obj["sentence"],
        scenario=obj["scenario"].strip(),
        action=obj["action"].strip(),
        recordings=tuple(r["file"] for r in recordings),
        source=where,
        entities=_parse_entities(obj, where) if entity else (),
    )


def read_jsonl(path: Path, bad: BadInputs, entity: bool = False) -> list[SlurpRecord]:
    """Records of one SLURP jsonl file (with entities in entity mode); bad lines go to ``bad`` with file
    and line number."""
    path = Path(path)
    if not path.is_file():
        raise DataPrepError(f"{path}: annotation file missing")
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = _parse_record(line, f"{path}:{lineno}", entity)
        except DataPrepError as exc:
            bad.report(str(exc))
            continue
        if not normalize_transcript(record.sentence):
            bad.report(f"{record.source}: sentence {record.sentence!r} is empty after normalisation")
            continue
        records.append(record)
    return records


def read_speakers(metadata: Path) -> dict[str, str]:
    """Recording file name -> speaker (``usrid``) from SLURP's ``metadata.json``."""
    try:
        entries = json.loads(Path(metadata).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataPrepError(f"{metadata}: cannot read speaker metadata ({exc})") from exc
    speakers = {}
    slurp_id = None
    try:
        for slurp_id, entry in entries.items():  # noqa: B007 (slurp_id names the entry in the error below)
            for name, info in entry["recordings"].items():
                speakers[name] = str(info["usrid"])
    except (AttributeError, KeyError, TypeError) as exc:
        raise DataPrepError(
            f"{metadata}: expected {{slurp_id: {{'recordings': {{file: {{'usrid': ...}}}}}}}} "
            f"(problem at {slurp_id!r}: {exc!r})"
        ) from exc
    return speakers


def _utterances(
    records: Iterable[SlurpRecord],
    audio_dir: Path,
    speakers: Optional[dict[str, str]],
    synthetic: bool,
    bad: BadInputs,
    entity: bool = False,
) -> list[Utterance]:
    """One utterance per recording (ids, speakers and text as described in the module docstring)."""
    utts = []
    for record in records:
        text = record.text(entity)
        for name in record.recordings:
            stem = name[: -len(".flac")]
            if synthetic:
                speaker = SYNTHETIC_SPEAKER
            elif speakers is None:
                speaker = stem
            elif name in speakers:
                speaker = speakers[name]
            else:
                bad.report(f"{record.source}: recording {name} has no speaker in metadata.json")
                continue
            utt_id = stem if speaker == stem else f"{speaker}_{stem}"
            utts.append(Utterance(utt_id, speaker, str((audio_dir / name).resolve()), text, record.source))
    return utts


def _drop_duplicates(utts: list[Utterance], seen: dict[str, str], bad: BadInputs) -> list[Utterance]:
    """Report utterance ids already used in this or an earlier set (``seen``: id -> source)."""
    kept = []
    for utt in utts:
        if utt.utt_id in seen:
            bad.report(f"{utt.source}: duplicate utterance id {utt.utt_id} (also in {seen[utt.utt_id]})")
            continue
        seen[utt.utt_id] = utt.source
        kept.append(utt)
    return kept


def prepare_slurp(
    annotations_dir: Path,
    audio_dir: Path,
    out_dir: Path,
    sets: Iterable[str] = SETS,
    metadata: Optional[Path] = None,
    skip_bad: bool = False,
    sample_rate: int = SAMPLE_RATE,
    entity: bool = False,
) -> dict[str, PreparedSet]:
    """Write ``<out_dir>/<set>/`` for each set; all of them or (on error) none.

    ``annotations_dir`` holds the jsonl files (and ``metadata.json``, used unless ``metadata`` names
    another file), ``audio_dir`` holds ``slurp_real/`` and ``slurp_synth/``. ``entity``: write the
    entity-mode text (intent, entity spans, transcript). Raises DataPrepError naming the file and line
    of the first bad input, unless ``skip_bad``.
    """
    annotations_dir, audio_dir, out_dir = Path(annotations_dir), Path(audio_dir), Path(out_dir)
    if metadata is None and (annotations_dir / "metadata.json").is_file():
        metadata = annotations_dir / "metadata.json"
    speakers = read_speakers(metadata) if metadata is not None else None
    if speakers is None:
        logger.info("no metadata.json: each recording is its own speaker")
    seen: dict[str, str] = {}
    collected: dict[str, tuple[list[Utterance], BadInputs]] = {}
    for name in sets:
        if name not in SETS:
            raise DataPrepError(f"unknown SLURP set {name!r}; known: {', '.join(SETS)}")
        bad = BadInputs(skip_bad, f"SLURP {name}")
        records = read_jsonl(annotations_dir / f"{name}.jsonl", bad, entity)
        utts = _utterances(records, audio_dir / "slurp_real", speakers, False, bad, entity)
        synthetic = annotations_dir / SYNTHETIC_JSONL
        if name == "train" and synthetic.is_file():
            logger.info("adding %s to train", synthetic)
            utts += _utterances(
                read_jsonl(synthetic, bad, entity), audio_dir / "slurp_synth", speakers, True, bad, entity
            )
        utts = keep_good_audio(_drop_duplicates(utts, seen, bad), bad, sample_rate)
        if not utts:
            raise DataPrepError(f"{annotations_dir / (name + '.jsonl')}: no usable utterances")
        bad.log_summary()
        collected[name] = (utts, bad)
    write_data_dirs({out_dir / name: utts for name, (utts, _) in collected.items()})
    return {
        name: PreparedSet(name, out_dir / name, len(utts), bad.messages)
        for name, (utts, bad) in collected.items()
    }


def download_slurp(
    dest: Path, synthetic: bool = True, keep_archives: bool = False, opener: Opener = default_opener
) -> Path:
    """Download SLURP into ``dest`` in the layout above (annotations from GitHub, audio from Zenodo).

    No md5 is published for the Zenodo archives: downloads are checked against Content-Length and
    by extracting them. Already extracted audio folders are skipped. Returns ``dest``.
    """
    dest = Path(dest)
    annotations = dest / "dataset" / "slurp"
    for name in ANNOTATION_FILES:
        if synthetic or name != SYNTHETIC_JSONL:
            download_file(f"{ANNOTATIONS_URL}/{name}", annotations / name, opener=opener)
    for archive_name in AUDIO_ARCHIVES if synthetic else AUDIO_ARCHIVES[:1]:
        folder = dest / "audio" / archive_name.split(".")[0]
        if folder.is_dir():
            logger.info("%s: already extracted", folder)
            continue
        archive = download_file(f"{AUDIO_URL}/{archive_name}", dest / "audio" / archive_name, opener=opener)
        extract_tar(archive, dest / "audio")
        if not folder.is_dir():
            raise DataPrepError(f"{archive}: did not contain {folder.name}/")
        if not keep_archives:
            archive.unlink()
    return dest
