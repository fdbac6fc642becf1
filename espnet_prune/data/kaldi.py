"""Kaldi-style data directories (``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``).

ESPnet's stages read these files; they must be sorted in the byte order of ``LC_ALL=C sort`` and agree
on the utterance ids. Writing is atomic: every directory is built next to its target under a temporary
name and renamed at the end, so a failed stage never leaves a half-written data dir behind.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from espnet_prune.data.errors import DataPrepError
from espnet_prune.io import atomic_dir

DATA_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")


@dataclass(frozen=True)
class Utterance:
    """One line in each of wav.scp / text / utt2spk; ``source`` says where it came from (for errors)."""

    utt_id: str
    speaker: str
    wav: str
    text: str
    source: str = ""


@dataclass
class PreparedSet:
    """What a preparation stage wrote for one set."""

    name: str
    path: Path
    num_utterances: int
    skipped: list[str] = field(default_factory=list)


def c_sort_key(key: str) -> bytes:
    """Sort key equal to ``LC_ALL=C sort`` (byte order of the UTF-8 encoding)."""
    return key.encode("utf-8")


def _check_token(value: str, what: str, source: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise DataPrepError(f"{source}: {what} {value!r} is empty or contains whitespace")


def check_utterances(utterances: Iterable[Utterance]) -> list[Utterance]:
    """Validate utterances and return them sorted by utterance id (C byte order).

    Kaldi requires each speaker id to be a prefix of its utterance ids, so that sorting by utterance
    also sorts by speaker; a duplicate utterance id names both of its sources.
    """
    seen: dict[str, Utterance] = {}
    for utt in utterances:
        source = utt.source or utt.utt_id
        _check_token(utt.utt_id, "utterance id", source)
        _check_token(utt.speaker, "speaker id", source)
        if not utt.utt_id.startswith(utt.speaker):
            raise DataPrepError(
                f"{source}: utterance id {utt.utt_id!r} does not start with its speaker id {utt.speaker!r}"
            )
        if not utt.text.strip() or "\n" in utt.text:
            raise DataPrepError(f"{source}: utterance {utt.utt_id!r} has an empty or multi-line text")
        if not utt.wav.strip() or "\n" in utt.wav:
            raise DataPrepError(f"{source}: utterance {utt.utt_id!r} has an empty or multi-line wav entry")
        if utt.utt_id in seen:
            first = seen[utt.utt_id].source or "an earlier entry"
            raise DataPrepError(f"duplicate utterance id {utt.utt_id!r}: in {first} and in {source}")
        seen[utt.utt_id] = utt
    return sorted(seen.values(), key=lambda u: c_sort_key(u.utt_id))


def _write_files(directory: Path, utterances: Sequence[Utterance]) -> None:
    """Write the four files of one data dir; ``utterances`` are already checked and sorted."""
    spk2utt: dict[str, list[str]] = {}
    for utt in utterances:
        spk2utt.setdefault(utt.speaker, []).append(utt.utt_id)
    contents = {
        "wav.scp": [f"{u.utt_id} {u.wav}" for u in utterances],
        "text": [f"{u.utt_id} {' '.join(u.text.split())}" for u in utterances],
        "utt2spk": [f"{u.utt_id} {u.speaker}" for u in utterances],
        "spk2utt": [f"{s} {' '.join(spk2utt[s])}" for s in sorted(spk2utt, key=c_sort_key)],
    }
    for name, lines in contents.items():
        (directory / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_data_dirs(sets: Mapping[Path, Iterable[Utterance]]) -> dict[Path, int]:
    """Write several data dirs all-or-nothing; returns the number of utterances in each.

    Everything is validated first, then each dir is built under a temporary name next to its target;
    only when all are complete are they renamed into place (replacing older versions).
    """
    checked: dict[Path, list[Utterance]] = {}
    for path, utterances in sets.items():
        utts = check_utterances(utterances)
        if not utts:
            raise DataPrepError(f"{path}: no utterances to write")
        checked[Path(path)] = utts
    with ExitStack() as stack:
        for path, utts in checked.items():
            _write_files(stack.enter_context(atomic_dir(path)), utts)
    return {path: len(utts) for path, utts in checked.items()}


def write_data_dir(path: Path, utterances: Iterable[Utterance]) -> int:
    """Write one data dir atomically; returns its number of utterances."""
    return write_data_dirs({Path(path): utterances})[Path(path)]


def read_table(
    path: Path,
    *,
    values_required: bool = True,
    c_sorted: bool = True,
    skip_blank: bool = False,
    duplicate: str = "key",
) -> list[tuple[str, str, int]]:
    """Read a Kaldi table of ``<key> <value>`` lines as (key, value, line number), keys unique.

    ``values_required``: a key alone is an error (otherwise its value is ""); ``c_sorted``: keys must be
    in ``LC_ALL=C`` order; ``skip_blank``: blank lines are ignored (otherwise an error). A duplicate key
    is reported as "duplicate ``duplicate``" (e.g. "utterance id"). Raises DataPrepError naming the file
    and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataPrepError(f"{path}: missing")
    rows: list[tuple[str, str, int]] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split(maxsplit=1)
        if not parts and skip_blank:
            continue
        if not parts or (values_required and len(parts) != 2):
            raise DataPrepError(f"{path}:{lineno}: expected '<key> <value>', got {line!r}")
        key = parts[0]
        if c_sorted and rows and c_sort_key(key) <= c_sort_key(rows[-1][0]):
            problem = "duplicate" if key == rows[-1][0] else "not sorted (LC_ALL=C)"
            raise DataPrepError(f"{path}:{lineno}: key {key!r} is {problem}")
        if key in seen:
            raise DataPrepError(f"{path}:{lineno}: duplicate {duplicate} {key!r}")
        seen.add(key)
        rows.append((key, parts[1] if len(parts) > 1 else "", lineno))
    return rows


def read_data_dir(path: Path) -> list[Utterance]:
    """Read and validate a data dir; returns its utterances in file order."""
    path = Path(path)
    wavs = read_table(path / "wav.scp")
    texts = {k: v for k, v, _ in read_table(path / "text")}
    spks = {k: v for k, v, _ in read_table(path / "utt2spk")}
    wav_ids = {k for k, _, _ in wavs}
    for name, table in (("text", texts), ("utt2spk", spks)):
        ids = set(table)
        if ids != wav_ids:
            diff = sorted(ids ^ wav_ids, key=c_sort_key)[:5]
            raise DataPrepError(f"{path}: utterance ids of {name} and wav.scp differ, e.g. {diff}")
    spk2utt: dict[str, list[str]] = {}
    for utt, spk in spks.items():
        spk2utt.setdefault(spk, []).append(utt)
    for spk, utts, lineno in read_table(path / "spk2utt"):
        expected = sorted(spk2utt.pop(spk, []), key=c_sort_key)
        if utts.split() != expected:
            raise DataPrepError(
                f"{path / 'spk2utt'}:{lineno}: speaker {spk!r} does not list the utterances of utt2spk"
            )
    if spk2utt:
        raise DataPrepError(f"{path / 'spk2utt'}: speakers missing: {sorted(spk2utt)[:5]}")
    return [
        Utterance(k, spks[k], wav, texts[k], source=f"{path / 'wav.scp'}:{lineno}") for k, wav, lineno in wavs
    ]


def validate_data_dir(path: Path) -> int:
    """Check a data dir (files present, sorted, consistent ids, spk2utt = utt2spk); returns its size."""
    utts = read_data_dir(path)
    check_utterances(utts)
    return len(utts)
