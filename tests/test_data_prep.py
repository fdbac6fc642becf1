"""Data preparation (recipe stage 1): Kaldi data dirs, LibriSpeech and SLURP readers, downloads.

The real formats come from ../shared/data (skipped when absent); bad inputs are built in tmp_path.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import urllib.error
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from espnet_prune.bin import prepare_librispeech as librispeech_cli
from espnet_prune.bin import prepare_slurp as slurp_cli
from espnet_prune.data import kaldi
from espnet_prune.data.download import download_file
from espnet_prune.data.errors import DataPrepError
from espnet_prune.data.kaldi import (
    Utterance,
    read_data_dir,
    validate_data_dir,
    write_data_dir,
    write_data_dirs,
)
from espnet_prune.data.librispeech import download_librispeech, prepare_librispeech
from espnet_prune.data.slurp import normalize_transcript, prepare_slurp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LIBRISPEECH_SAMPLE = SHARED / "librispeech_sample" / "LibriSpeech"
SLURP_ANNOTATIONS = SHARED / "slurp"


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")


def _write_audio(path: Path, rate: int = 16000, seconds: float = 0.1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(0).normal(0, 0.05, int(rate * seconds)).astype(np.float32)
    sf.write(str(path), noise, rate)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _no_leftovers(folder: Path) -> bool:
    """No data dir and no temporary dir under ``folder`` (or no folder at all)."""
    return not folder.exists() or not any(folder.iterdir())


# ---------------------------------------------------------------------------------------------- kaldi


def test_write_data_dir_sorted_like_c_sort_and_consistent(tmp_path: Path) -> None:
    ids = ["b_2", "a-B", "aB", "a_b", "A-1", "b-10", "b-9"]
    utts = [Utterance(i, i[0], f"/w/{i}.flac", f"TEXT {i}", source=f"src:{n}") for n, i in enumerate(ids)]
    assert write_data_dir(tmp_path / "d", utts) == len(ids)
    wav_ids = [line.split()[0] for line in _lines(tmp_path / "d" / "wav.scp")]
    assert wav_ids == sorted(ids, key=lambda s: s.encode())
    if shutil.which("sort"):
        for name in kaldi.DATA_FILES:
            path = tmp_path / "d" / name
            sort = [shutil.which("sort"), str(path)]
            c_sorted = subprocess.run(sort, env={"LC_ALL": "C"}, capture_output=True, text=True).stdout
            assert path.read_text() == c_sorted, name
    assert _lines(tmp_path / "d" / "spk2utt") == ["A A-1", "a a-B aB a_b", "b b-10 b-9 b_2"]
    assert validate_data_dir(tmp_path / "d") == len(ids)
    assert [u.utt_id for u in read_data_dir(tmp_path / "d")] == wav_ids


def test_duplicate_utterance_id_names_both_sources(tmp_path: Path) -> None:
    utts = [
        Utterance("s-1", "s", "/a.flac", "A", "first.txt:3"),
        Utterance("s-1", "s", "/b.flac", "B", "second.txt:7"),
    ]
    with pytest.raises(ValueError, match=r"duplicate utterance id 's-1': in first.txt:3 and in second.txt:7"):
        write_data_dir(tmp_path / "d", utts)
    assert _no_leftovers(tmp_path)


def test_speaker_must_prefix_utterance_id(tmp_path: Path) -> None:
    with pytest.raises(
        DataPrepError, match=r"x.txt:1: utterance id 'u-1' does not start with its speaker id 'spk'"
    ):
        write_data_dir(tmp_path / "d", [Utterance("u-1", "spk", "/a.flac", "A", "x.txt:1")])


def test_failed_write_leaves_nothing_and_keeps_old_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = [Utterance("s-1", "s", "/a.flac", "A")]
    write_data_dir(tmp_path / "old", good)
    (tmp_path / "old" / "stale").write_text("x")
    calls = []

    def failing(directory: Path, utterances: list) -> None:
        calls.append(directory)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write(directory, utterances)

    real_write = kaldi._write_files
    monkeypatch.setattr(kaldi, "_write_files", failing)
    with pytest.raises(OSError, match="disk full"):
        write_data_dirs({tmp_path / "new": good, tmp_path / "old": good})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    assert (tmp_path / "old" / "stale").exists()
    monkeypatch.undo()
    write_data_dirs({tmp_path / "old": good})  # success replaces the whole dir
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == sorted(kaldi.DATA_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_validate_data_dir_names_file_and_line(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write_data_dir(d, [Utterance(f"s-{i}", "s", f"/{i}.flac", "T") for i in range(3)])
    text = _lines(d / "text")
    (d / "text").write_text("\n".join([text[1], text[0], text[2]]) + "\n")
    with pytest.raises(DataPrepError, match=r"text:2: key 's-0' is not sorted"):
        validate_data_dir(d)
    (d / "text").write_text("\n".join(text[:2]) + "\n")
    with pytest.raises(DataPrepError, match=r"utterance ids of text and wav.scp differ, e.g. \['s-2'\]"):
        validate_data_dir(d)


# ---------------------------------------------------------------------------------------- librispeech


def test_librispeech_sample_real_layout(tmp_path: Path) -> None:
    _need(LIBRISPEECH_SAMPLE)
    subsets = ["train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other"]
    prepared = prepare_librispeech(LIBRISPEECH_SAMPLE, subsets, tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "dev_clean",
        "dev_other",
        "test_clean",
        "test_other",
        "train_clean_100",
    ]
    dev = tmp_path / "data" / "dev_clean"
    assert prepared["dev-clean"].num_utterances == validate_data_dir(dev) == 7
    expected_ids = [f"1272-128104-{i:04d}" for i in range(5)] + ["2412-153948-0000", "2412-153948-0001"]
    assert [line.split()[0] for line in _lines(dev / "wav.scp")] == expected_ids
    text = dict(line.split(" ", 1) for line in _lines(dev / "text"))
    assert text["2412-153948-0001"].startswith("IT WILL BE SEEN THAT I DID NOT SUCCEED IN MY DESIGN")
    trans = LIBRISPEECH_SAMPLE / "dev-clean" / "2412" / "153948" / "2412-153948.trans.txt"
    assert [f"{k} {v}" for k, v in text.items() if k.startswith("2412")] == _lines(trans)
    assert _lines(dev / "spk2utt") == [
        "1272 " + " ".join(expected_ids[:5]),
        "2412 2412-153948-0000 2412-153948-0001",
    ]
    for utt in read_data_dir(dev):
        assert utt.speaker == utt.utt_id.split("-")[0]
        assert (
            Path(utt.wav).is_absolute()
            and Path(utt.wav).name == f"{utt.utt_id}.flac"
            and Path(utt.wav).exists()
        )
    assert [line.split()[0] for line in _lines(tmp_path / "data" / "train_clean_100" / "utt2spk")] == [
        f"103-1240-{i:04d}" for i in range(5)
    ]


def test_librispeech_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        librispeech_cli.main(["--help"])
    assert exc.value.code == 0
    root = _fake_librispeech(tmp_path)
    assert (
        librispeech_cli.main(
            ["--librispeech_dir", str(root), "--subsets", "dev-clean", "--out_dir", str(tmp_path / "data")]
        )
        == 0
    )
    assert "dev-clean: 5 utterances" in capsys.readouterr().out
    assert (
        librispeech_cli.main(
            ["--librispeech_dir", str(root), "--subsets", "test-clean", "--out_dir", str(tmp_path / "data")]
        )
        == 1
    )
    assert "test-clean: subset folder missing" in capsys.readouterr().err


def _fake_librispeech(tmp_path: Path) -> Path:
    """LibriSpeech/dev-clean with speaker 11 (chapter 22, 3 utterances) and 33 (chapter 44, 2)."""
    root = tmp_path / "LibriSpeech"
    for spk, chapter, n in (("11", "22", 3), ("33", "44", 2)):
        folder = root / "dev-clean" / spk / chapter
        for i in range(n):
            _write_audio(folder / f"{spk}-{chapter}-{i:04d}.flac")
        lines = [f"{spk}-{chapter}-{i:04d} WORDS OF UTTERANCE {i}" for i in range(n)]
        (folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def _chapter(root: Path) -> Path:
    return root / "dev-clean" / "11" / "22"


def _edit_trans(root: Path, edit: Callable[[list[str]], list[str]]) -> None:
    trans = _chapter(root) / "11-22.trans.txt"
    trans.write_text("\n".join(edit(_lines(trans))) + "\n")


LIBRISPEECH_BAD = {
    "missing transcript file": (
        lambda r: (_chapter(r) / "11-22.trans.txt").unlink(),
        r"11-22\.trans\.txt: transcript file missing \(3 audio files",
        2,
    ),
    "audio without transcript line": (
        lambda r: _edit_trans(r, lambda lines: [lines[0], lines[2]]),
        r"11-22-0001\.flac: audio file without a line in .*11-22\.trans\.txt",
        4,
    ),
    "transcript line without audio": (
        lambda r: (_chapter(r) / "11-22-0001.flac").unlink(),
        r"11-22\.trans\.txt:2: no audio file .*11-22-0001\.flac",
        4,
    ),
    "malformed transcript line": (
        lambda r: _edit_trans(r, lambda lines: lines + ["11-22-x1 NOT AN ID"]),
        r"11-22\.trans\.txt:4: malformed transcript line",
        5,
    ),
    "duplicate utterance id": (
        lambda r: _edit_trans(r, lambda lines: lines + ["11-22-0000 AGAIN"]),
        r"11-22\.trans\.txt:4: duplicate utterance id 11-22-0000 \(first at line 1\)",
        5,
    ),
    "unreadable audio": (
        lambda r: (_chapter(r) / "11-22-0001.flac").write_bytes(b"this is not a flac file"),
        r"11-22-0001\.flac: unreadable audio file .*\(utterance 11-22-0001 from .*11-22\.trans\.txt:2\)",
        4,
    ),
    "empty audio": (
        lambda r: (_chapter(r) / "11-22-0001.flac").write_bytes(b""),
        r"11-22-0001\.flac: empty audio file",
        4,
    ),
    "wrong sample rate": (
        lambda r: _write_audio(_chapter(r) / "11-22-0001.flac", rate=8000),
        r"11-22-0001\.flac: sample rate 8000 Hz, expected 16000 Hz",
        4,
    ),
}


@pytest.mark.parametrize("case", sorted(LIBRISPEECH_BAD))
def test_librispeech_bad_input(case: str, tmp_path: Path) -> None:
    corrupt, message, kept = LIBRISPEECH_BAD[case]
    root = _fake_librispeech(tmp_path)
    corrupt(root)
    out = tmp_path / "data"
    with pytest.raises(DataPrepError, match=message):
        prepare_librispeech(root, ["dev-clean"], out)
    assert _no_leftovers(out)
    prepared = prepare_librispeech(root, ["dev-clean"], out, skip_bad=True)
    assert len(prepared["dev-clean"].skipped) == 1 and re.search(message, prepared["dev-clean"].skipped[0])
    assert validate_data_dir(out / "dev_clean") == kept == prepared["dev-clean"].num_utterances


def test_librispeech_failure_in_one_subset_writes_no_subset(tmp_path: Path) -> None:
    root = _fake_librispeech(tmp_path)
    shutil.copytree(root / "dev-clean", root / "test-clean")
    (root / "test-clean" / "33" / "44" / "33-44-0001.flac").unlink()
    with pytest.raises(DataPrepError, match=r"test-clean/33/44/33-44\.trans\.txt:2: no audio file"):
        prepare_librispeech(root, ["dev-clean", "test-clean"], tmp_path / "data")
    assert _no_leftovers(tmp_path / "data")


# ---------------------------------------------------------------------------------------------- slurp


@pytest.fixture(scope="module")
def slurp_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in audio (one short noise FLAC, hard-linked) under every real recording name of devel/test."""
    _need(SLURP_ANNOTATIONS / "devel.jsonl")
    audio = tmp_path_factory.mktemp("slurp_audio")
    clip = audio / "clip.flac"
    _write_audio(clip)
    (audio / "slurp_real").mkdir()
    for name in ("devel", "test"):
        for line in _lines(SLURP_ANNOTATIONS / f"{name}.jsonl"):
            for recording in json.loads(line)["recordings"]:
                os.link(clip, audio / "slurp_real" / recording["file"])
    return audio


def test_slurp_real_annotations(slurp_audio: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    prepared = prepare_slurp(SLURP_ANNOTATIONS, slurp_audio, out, sets=["devel", "test"])
    assert {k: v.num_utterances for k, v in prepared.items()} == {"devel": 8690, "test": 13078}
    labels: dict[str, str] = {}
    for name in ("devel", "test"):
        assert validate_data_dir(out / name) == prepared[name].num_utterances
        for line in _lines(out / name / "text"):
            utt, label, *words = line.split()
            assert re.fullmatch(r"[a-z]+_[a-z_]+", label) and words, line
            assert all(re.fullmatch(r"[A-Z0-9']+", w) for w in words), line
            labels[utt] = label
    assert len(set(labels.values())) == 60
    broken = 0
    for name in ("devel", "test"):
        for line in _lines(SLURP_ANNOTATIONS / f"{name}.jsonl"):
            record = json.loads(line)
            label = f"{record['scenario']}_{record['action']}"
            broken += record["intent"] != label
            for recording in record["recordings"]:  # no metadata.json: utterance id = file stem
                assert labels[recording["file"][: -len(".flac")]] == label
    assert broken == 67
    utt = read_data_dir(out / "devel")[0]
    assert utt.speaker == utt.utt_id and Path(utt.wav) == slurp_audio / "slurp_real" / f"{utt.utt_id}.flac"


def test_normalize_transcript() -> None:
    assert normalize_transcript("email john@gmail.com, it's #1 & 1,000 things!") == (
        "EMAIL JOHN AT GMAILCOM IT'S HASHTAG 1 AND 1000 THINGS"
    )


def _fake_slurp(tmp_path: Path, records: list[dict], name: str = "devel") -> tuple[Path, Path]:
    annotations, audio = tmp_path / "dataset" / "slurp", tmp_path / "audio"
    annotations.mkdir(parents=True, exist_ok=True)
    (annotations / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for record in records:
        for recording in record["recordings"]:
            folder = "slurp_synth" if name == "train_synthetic" else "slurp_real"
            _write_audio(audio / folder / recording["file"])
    return annotations, audio


def _record(slurp_id: int, *files: str, scenario: str = "alarm", action: str = "set") -> dict:
    return {
        "slurp_id": slurp_id,
        "sentence": f"wake me up at {slurp_id} am",
        "scenario": scenario,
        "action": action,
        "intent": "broken",
        "entities": [],
        "recordings": [{"file": f} for f in files],
    }


def _records() -> list[dict]:
    return [
        _record(1, "audio-1.flac", "audio-1-headset.flac"),
        _record(2, "audio-2.flac"),
        _record(3, "audio-3.flac", scenario="weather", action="query"),
    ]


def _edit_jsonl(annotations: Path, lineno: int, replacement: str) -> None:
    path = annotations / "devel.jsonl"
    lines = _lines(path)
    lines[lineno - 1] = replacement
    path.write_text("\n".join(lines) + "\n")


SLURP_BAD = {
    "malformed jsonl line": (
        lambda ann, audio: _edit_jsonl(ann, 2, '{"slurp_id": 2, "sentence": '),
        r"devel\.jsonl:2: malformed JSON",
        3,
    ),
    "missing key": (
        lambda ann, audio: _edit_jsonl(
            ann, 3, json.dumps({k: v for k, v in _record(3, "a.flac").items() if k != "scenario"})
        ),
        r"devel\.jsonl:3: missing key 'scenario'",
        3,
    ),
    "missing audio file": (
        lambda ann, audio: (audio / "slurp_real" / "audio-2.flac").unlink(),
        r"audio-2\.flac: audio file missing \(utterance audio-2 from .*devel\.jsonl:2\)",
        3,
    ),
    "duplicate utterance id": (
        lambda ann, audio: _edit_jsonl(ann, 3, json.dumps(_record(3, "audio-3.flac", "audio-1.flac"))),
        r"devel\.jsonl:3: duplicate utterance id audio-1 \(also in .*devel\.jsonl:1\)",
        4,
    ),
    "unreadable audio": (
        lambda ann, audio: (audio / "slurp_real" / "audio-3.flac").write_bytes(b"RIFF garbage"),
        r"audio-3\.flac: unreadable audio file .*devel\.jsonl:3",
        3,
    ),
    "empty audio": (
        lambda ann, audio: (audio / "slurp_real" / "audio-3.flac").write_bytes(b""),
        r"audio-3\.flac: empty audio file",
        3,
    ),
    "wrong sample rate": (
        lambda ann, audio: _write_audio(audio / "slurp_real" / "audio-3.flac", rate=22050),
        r"audio-3\.flac: sample rate 22050 Hz, expected 16000 Hz",
        3,
    ),
}


@pytest.mark.parametrize("case", sorted(SLURP_BAD))
def test_slurp_bad_input(case: str, tmp_path: Path) -> None:
    corrupt, message, kept = SLURP_BAD[case]
    annotations, audio = _fake_slurp(tmp_path, _records())
    corrupt(annotations, audio)
    out = tmp_path / "data"
    with pytest.raises(DataPrepError, match=message):
        prepare_slurp(annotations, audio, out, sets=["devel"])
    assert _no_leftovers(out)
    prepared = prepare_slurp(annotations, audio, out, sets=["devel"], skip_bad=True)
    assert len(prepared["devel"].skipped) == 1 and re.search(message, prepared["devel"].skipped[0])
    assert validate_data_dir(out / "devel") == kept == prepared["devel"].num_utterances


def test_slurp_speakers_from_metadata_and_synthetic_train(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    annotations, audio = _fake_slurp(tmp_path, _records(), name="train")
    _fake_slurp(tmp_path, [_record(9, "audio-9.flac")], name="train_synthetic")
    metadata = {
        "1": {"recordings": {"audio-1.flac": {"usrid": "MO-1"}, "audio-1-headset.flac": {"usrid": "MO-1"}}},
        "2": {"recordings": {"audio-2.flac": {"usrid": "FO-2"}}},
        "3": {"recordings": {"audio-3.flac": {"usrid": "FO-2"}}},
    }
    (annotations / "metadata.json").write_text(json.dumps(metadata))
    assert (
        slurp_cli.main(["--slurp_dir", str(tmp_path), "--sets", "train", "--out_dir", str(tmp_path / "data")])
        == 0
    )
    assert "train: 5 utterances" in capsys.readouterr().out
    train = tmp_path / "data" / "train"
    assert _lines(train / "utt2spk") == [
        "FO-2_audio-2 FO-2",
        "FO-2_audio-3 FO-2",
        "MO-1_audio-1 MO-1",
        "MO-1_audio-1-headset MO-1",
        "synth_audio-9 synth",
    ]
    assert _lines(train / "text")[1] == "FO-2_audio-3 weather_query WAKE ME UP AT 3 AM"
    assert _lines(train / "wav.scp")[-1].endswith("audio/slurp_synth/audio-9.flac")
    del metadata["3"]
    (annotations / "metadata.json").write_text(json.dumps(metadata))
    assert (
        slurp_cli.main(["--slurp_dir", str(tmp_path), "--sets", "train", "--out_dir", str(tmp_path / "data")])
        == 1
    )
    assert "train.jsonl:3: recording audio-3.flac has no speaker in metadata.json" in capsys.readouterr().err


def test_slurp_missing_annotation_file(tmp_path: Path) -> None:
    annotations, audio = _fake_slurp(tmp_path, _records())
    with pytest.raises(DataPrepError, match=r"test\.jsonl: annotation file missing"):
        prepare_slurp(annotations, audio, tmp_path / "data", sets=["devel", "test"])
    assert _no_leftovers(tmp_path / "data")


# ------------------------------------------------------------------------------------------ downloads


class FakeResponse(io.BytesIO):
    """urlopen-like response: status, headers, read."""

    def __init__(self, body: bytes, status: int, headers: dict[str, str]) -> None:
        super().__init__(body)
        self.status, self.headers = status, headers


def fake_server(payload: bytes, honour_range: bool = True, truncate: int = 0) -> tuple[Callable, list]:
    """An opener serving ``payload``; records the Range headers it was sent."""
    requests: list = []

    def opener(request):
        requests.append(request.get_header("Range"))
        start = int(re.match(r"bytes=(\d+)-", request.get_header("Range") or "bytes=0-").group(1))
        if not honour_range:
            start = 0
        body = payload[start:]
        headers = {"Content-Length": str(len(body))}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(payload) - 1}/{len(payload)}"
        return FakeResponse(body[: len(body) - truncate], 206 if start else 200, headers)

    return opener, requests


PAYLOAD = bytes(range(256)) * 1000
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


def test_download_resumes_with_range(tmp_path: Path) -> None:
    dest = tmp_path / "a.tar.gz"
    (tmp_path / "a.tar.gz.part").write_bytes(PAYLOAD[:1000])
    opener, requests = fake_server(PAYLOAD)
    assert download_file("http://x/a.tar.gz", dest, md5=PAYLOAD_MD5, opener=opener).read_bytes() == PAYLOAD
    assert requests == ["bytes=1000-"] and not (tmp_path / "a.tar.gz.part").exists()
    download_file("http://x/a.tar.gz", dest, md5=PAYLOAD_MD5, opener=None)  # already there: no request


def test_download_restarts_when_range_ignored(tmp_path: Path) -> None:
    (tmp_path / "a.part").write_bytes(b"garbage")
    opener, _ = fake_server(PAYLOAD, honour_range=False)
    assert download_file("http://x/a", tmp_path / "a", md5=PAYLOAD_MD5, opener=opener).read_bytes() == PAYLOAD


def test_download_incomplete_then_resumed(tmp_path: Path) -> None:
    opener, _ = fake_server(PAYLOAD, truncate=5000)
    with pytest.raises(DataPrepError, match=r"http://x/a: got 251000 of 256000 bytes .*rerun to resume"):
        download_file("http://x/a", tmp_path / "a", md5=PAYLOAD_MD5, opener=opener)
    opener, requests = fake_server(PAYLOAD)
    download_file("http://x/a", tmp_path / "a", md5=PAYLOAD_MD5, opener=opener)
    assert requests == ["bytes=251000-"] and (tmp_path / "a").read_bytes() == PAYLOAD


def test_download_md5_mismatch_removes_part(tmp_path: Path) -> None:
    opener, _ = fake_server(PAYLOAD)
    with pytest.raises(DataPrepError, match=r"md5 .* differs from the published 0+; removed"):
        download_file("http://x/a", tmp_path / "a", md5="0" * 32, opener=opener)
    assert list(tmp_path.iterdir()) == []


def test_download_http_error(tmp_path: Path) -> None:
    def opener(request):
        raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, None)

    with pytest.raises(DataPrepError, match=r"http://x/a: download failed: HTTP 404 Not Found"):
        download_file("http://x/a", tmp_path / "a", opener=opener)


def test_download_librispeech_from_local_mirror(tmp_path: Path) -> None:
    source = _fake_librispeech(tmp_path / "src")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "dev-clean.tar.gz", "w:gz") as tar:
        tar.add(source, arcname="LibriSpeech")
    md5 = {"dev-clean": hashlib.md5((mirror / "dev-clean.tar.gz").read_bytes()).hexdigest()}
    dest = tmp_path / "corpora"
    root = download_librispeech(["dev-clean"], dest, base_url=mirror.as_uri(), checksums=md5)
    assert root == dest / "LibriSpeech" and sorted(p.name for p in dest.iterdir()) == ["LibriSpeech"]
    assert prepare_librispeech(root, ["dev-clean"], tmp_path / "data")["dev-clean"].num_utterances == 5
    download_librispeech(["dev-clean"], dest, checksums=md5, opener=None)  # already extracted: no request
    with pytest.raises(DataPrepError, match=r"unknown LibriSpeech subset 'dev-cleen'"):
        download_librispeech(["dev-cleen"], dest)
