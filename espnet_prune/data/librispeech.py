"""LibriSpeech: download and conversion to Kaldi-style data dirs.

Layout read: ``<librispeech_dir>/<subset>/<spk>/<chapter>/<spk>-<chapter>-<NNNN>.flac`` with one
``<spk>-<chapter>.trans.txt`` per chapter (``<utt-id> <UPPERCASE TEXT>`` per line).
Written, as in ESPnet's egs2/librispeech recipe: ``<out_dir>/<subset with - replaced by _>/`` with
utterance id ``<spk>-<chapter>-<NNNN>``, speaker ``<spk>``, and wav.scp entries ``<utt-id> /abs/file.flac``
(ESPnet reads FLAC directly through soundfile).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable

from espnet_prune.data.audio import SAMPLE_RATE, keep_good_audio
from espnet_prune.data.download import Opener, default_opener, download_file, extract_tar
from espnet_prune.data.errors import BadInputs, DataPrepError
from espnet_prune.data.kaldi import PreparedSet, Utterance, write_data_dirs

logger = logging.getLogger(__name__)

SUBSETS = (
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
)

OPENSLR_URL = "https://www.openslr.org/resources/12"

# Published in https://www.openslr.org/resources/12/md5sum.txt (the same values torchaudio-era
# loaders and PaddleSpeech pin).
LIBRISPEECH_MD5 = {
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500": "d1a0fd59409feb2c614ce4d30c387708",
}


def data_dir_name(subset: str) -> str:
    """ESPnet's data dir name for a subset: ``dev-clean`` -> ``dev_clean``."""
    return subset.replace("-", "_")


def _chapter_utterances(chapter_dir: Path, bad: BadInputs) -> list[Utterance]:
    """Utterances of one ``<spk>/<chapter>`` folder, matching transcript lines with FLAC files."""
    spk, chapter = chapter_dir.parent.name, chapter_dir.name
    trans = chapter_dir / f"{spk}-{chapter}.trans.txt"
    audio = {p.stem: p for p in chapter_dir.glob("*.flac")}
    if not trans.is_file():
        bad.report(
            f"{trans}: transcript file missing ({len(audio)} audio files in {chapter_dir} have no text)"
        )
        return []
    id_pattern = re.compile(rf"{re.escape(spk)}-{re.escape(chapter)}-\d+")
    first_line: dict[str, int] = {}
    utts = []
    for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{trans}:{lineno}"
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not id_pattern.fullmatch(parts[0]):
            bad.report(
                f"{where}: malformed transcript line, expected '{spk}-{chapter}-NNNN TEXT': {line[:80]!r}"
            )
            continue
        utt_id, text = parts
        if utt_id in first_line:
            bad.report(f"{where}: duplicate utterance id {utt_id} (first at line {first_line[utt_id]})")
            continue
        first_line[utt_id] = lineno
        if utt_id not in audio:
            bad.report(f"{where}: no audio file {chapter_dir / (utt_id + '.flac')} for this transcript line")
            continue
        utts.append(Utterance(utt_id, spk, str(audio[utt_id].resolve()), text, source=where))
    for stem in sorted(set(audio) - set(first_line)):
        bad.report(f"{audio[stem]}: audio file without a line in {trans}")
    return utts


def collect_subset(subset_dir: Path, bad: BadInputs) -> list[Utterance]:
    """All utterances of one subset folder (e.g. ``LibriSpeech/dev-clean``)."""
    if not subset_dir.is_dir():
        raise DataPrepError(
            f"{subset_dir}: subset folder missing (give --librispeech_dir the folder holding the subsets, "
            "usually .../LibriSpeech)"
        )
    utts: list[Utterance] = []
    for spk_dir in sorted(p for p in subset_dir.iterdir() if p.is_dir()):
        for chapter_dir in sorted(p for p in spk_dir.iterdir() if p.is_dir()):
            utts.extend(_chapter_utterances(chapter_dir, bad))
    return utts


def prepare_librispeech(
    librispeech_dir: Path,
    subsets: Iterable[str],
    out_dir: Path,
    skip_bad: bool = False,
    sample_rate: int = SAMPLE_RATE,
) -> dict[str, PreparedSet]:
    """Write ``<out_dir>/<subset_name>/`` for each subset; all of them or (on error) none.

    Raises DataPrepError naming the file and line of the first bad input, unless ``skip_bad``, which
    skips bad inputs and reports them in ``PreparedSet.skipped``.
    """
    librispeech_dir, out_dir = Path(librispeech_dir), Path(out_dir)
    collected: dict[str, tuple[list[Utterance], BadInputs]] = {}
    for subset in subsets:
        bad = BadInputs(skip_bad, f"LibriSpeech {subset}")
        utts = keep_good_audio(collect_subset(librispeech_dir / subset, bad), bad, sample_rate)
        if not utts:
            raise DataPrepError(f"{librispeech_dir / subset}: no usable utterances found")
        bad.log_summary()
        collected[subset] = (utts, bad)
    write_data_dirs({out_dir / data_dir_name(s): utts for s, (utts, _) in collected.items()})
    return {
        s: PreparedSet(data_dir_name(s), out_dir / data_dir_name(s), len(utts), bad.messages)
        for s, (utts, bad) in collected.items()
    }


def download_librispeech(
    subsets: Iterable[str],
    dest: Path,
    base_url: str = OPENSLR_URL,
    checksums: dict[str, str] = LIBRISPEECH_MD5,
    keep_archives: bool = False,
    opener: Opener = default_opener,
) -> Path:
    """Download (resumable, md5-verified) and extract subsets into ``<dest>/LibriSpeech``; returns it.

    Subsets already extracted are skipped, so the call is cheap to repeat.
    """
    dest = Path(dest)
    root = dest / "LibriSpeech"
    for subset in subsets:
        if subset not in checksums:
            raise DataPrepError(f"unknown LibriSpeech subset {subset!r}; known: {', '.join(checksums)}")
        if (root / subset).is_dir():
            logger.info("%s: already extracted", root / subset)
            continue
        archive = download_file(
            f"{base_url}/{subset}.tar.gz", dest / f"{subset}.tar.gz", md5=checksums[subset], opener=opener
        )
        extract_tar(archive, dest)
        if not (root / subset).is_dir():
            raise DataPrepError(f"{archive}: did not contain LibriSpeech/{subset}/")
        if not keep_archives:
            archive.unlink()
    return root
