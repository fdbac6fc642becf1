"""Faults and bad inputs, as a new user makes them: every one is a non-zero exit status with one line that
names the culprit, no code runs from a crafted checkpoint, and nothing is left half-written; a decoding
killed part-way and rerun gives the output of an uninterrupted one.

Entry points run in-process through their ``main(argv)`` (a subprocess only to kill one).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from espnet_prune.data.kaldi import Utterance, write_data_dir

from conftest import REPO, TINY_MODEL, TINY_TOKENS, TINY_TRAIN_CONFIG, tiny_asr_args


@dataclass
class Run:
    """A tiny gated run (exp/config.yaml, exp/latest.pth), its removed model (exp/pruned) and test data."""

    root: Path
    exp: Path
    pruned: Path
    data: Path  # a data dir of GOOD_UTTERANCES 16 kHz mono files
    decode: Path  # decode_dir/test/1best_recog/text: hypotheses of the data (its own text)


GOOD_UTTERANCES = 6


def _write_audio(
    path: Path, seconds: float, sample_rate: int = 16000, channels: int = 1, seed: int = 0
) -> Path:
    samples = (
        np.random.default_rng(seed).normal(0, 0.1, (int(seconds * sample_rate), channels)).astype(np.float32)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples[:, 0] if channels == 1 else samples, sample_rate)
    return path


def _data_dir(path: Path, wavs: Sequence[Path]) -> Path:
    write_data_dir(path, [Utterance(f"spk-{i:03d}", "spk", str(w), "A B C") for i, w in enumerate(wavs)])
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from espnet_prune.bin import remove_masks
    from espnet_prune.espnet import PrunedASRTask
    from espnet_prune.pruning.budget import fit_to_targets

    root = tmp_path_factory.mktemp("faults")
    exp = root / "exp"
    args = PrunedASRTask.get_parser().parse_args([*tiny_asr_args(root), "--token_type", "char"])
    torch.manual_seed(0)
    model = PrunedASRTask.build_model(args)
    fit_to_targets(model.encoder.ssl.model, [("macs", 0.5)], 10.0)
    model.encoder.ssl.controller.updates.fill_(10)
    exp.mkdir()
    with (exp / "config.yaml").open("w") as f:
        yaml_no_alias_safe_dump(vars(args), f)
    torch.save(model.state_dict(), exp / "latest.pth")
    remove_masks.main(
        [
            "--asr_train_config",
            str(exp / "config.yaml"),
            "--asr_model_file",
            str(exp / "latest.pth"),
            "--out_dir",
            str(exp / "pruned"),
        ]
    )
    wavs = [
        _write_audio(root / "audio" / f"good-{i}.wav", 1.0 + 0.1 * i, seed=i) for i in range(GOOD_UTTERANCES)
    ]
    data = _data_dir(root / "data" / "test", wavs)
    (root / "decode" / "test" / "1best_recog").mkdir(parents=True)
    (root / "decode" / "test" / "1best_recog" / "text").write_bytes((data / "text").read_bytes())
    return Run(root, exp, exp / "pruned", data, root / "decode")


def _leftovers(path: Path) -> List[str]:
    """``path`` itself and hidden temporaries next to it (what a failed write could leave)."""
    near = [p.name for p in path.parent.glob(f".{path.name}.*")] if path.parent.is_dir() else []
    return near + ([path.name] if path.exists() else [])


def expect_error(
    main: Callable[[Sequence[str]], object],
    argv: Sequence[str],
    prog: str,
    culprit: str,
    capsys,
    status: int = 1,
) -> str:
    """Run ``main(argv)``: it must exit with ``status`` and one line ``prog: error: ...`` naming ``culprit``."""
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    code = exit_.value.code
    if isinstance(code, str):  # sys.exit(message): printed to stderr with status 1
        actual, message = 1, code
    else:  # argparse: the message is the last line on stderr
        actual, message = code, capsys.readouterr().err.strip().splitlines()[-1]
    assert actual == status, message
    if status == 2:  # argparse names the program as it was started (sys.argv[0])
        assert ": error: " in message and "\n" not in message, message
    else:
        assert message.startswith(f"{prog}: error: ") and "\n" not in message, message
    assert culprit in message, (culprit, message)
    return message


# --- checkpoints ------------------------------------------------------------------------------------------

MARKER_NAME = "code_ran_from_checkpoint"


class RunsShellCommand:
    """Unpickling this object runs a shell command that creates the marker file (as a crafted file would)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _bad_checkpoint(kind: str, run: Run, folder: Path, expected: Path) -> Path:
    """A file (or folder) at ``folder/<kind>.pth`` given where the weights ``expected`` belong, bad in the way
    ``kind`` says."""
    path = folder / f"{kind}.pth"
    state = torch.load(expected, weights_only=True)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = expected.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("these are not the weights you are looking for\n")
    elif kind == "audio_file":
        path.write_bytes((run.root / "audio" / "good-0.wav").read_bytes())
    elif kind == "crafted_pickle":
        torch.save({"encoder.weight": RunsShellCommand(folder / MARKER_NAME)}, path)
    elif kind == "crafted_legacy_pickle":
        torch.save(RunsShellCommand(folder / MARKER_NAME), path, _use_new_zipfile_serialization=False)
    elif kind == "fairseq_layout":
        torch.save({"model": state, "cfg": {"model": {}}}, path)
    elif kind == "other_model":
        torch.save({"decoder.embed.weight": torch.zeros(3, 3)}, path)
    elif kind == "wrong_shapes":
        key = next(k for k, v in state.items() if v.dim() == 2)
        state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
        torch.save(state, path)
    elif kind == "other_stage_weights":  # gated weights for the removed model's config, or the reverse
        other = run.exp / "latest.pth" if expected == run.pruned / "model.pth" else run.pruned / "model.pth"
        path.write_bytes(other.read_bytes())
    elif kind == "directory":
        path.mkdir()
    elif kind != "missing":
        raise ValueError(kind)
    return path


# What the message says about each kind of bad checkpoint (besides naming it).
CHECKPOINT_PROBLEMS = {
    "empty": "empty file (0 bytes)",
    "truncated": "truncated or damaged",
    "text": "not a PyTorch file",
    "audio_file": "not a PyTorch file",
    "crafted_pickle": "which loading could run as code; refused",
    "crafted_legacy_pickle": "which loading could run as code; refused",
    "fairseq_layout": "not a model state dict",
    "other_model": "does not match the model",
    "wrong_shapes": "with other shapes",
    "other_stage_weights": "does not match the model",
    "directory": "no such file",
    "missing": "no such file",
}


def _entry_point(name: str, run: Run, model_file: Path, out: Path) -> tuple:
    """(main, argv, what it would write) of an entry point that reads the removed model's weights."""
    from espnet_prune.bin import asr_inference, export, profile, score

    model = ["--asr_train_config", run.pruned / "config.yaml", "--asr_model_file", model_file]
    if name == "asr_inference":
        return (
            asr_inference.main,
            model
            + [
                "--ctc_greedy",
                "true",
                "--data_path_and_name_and_type",
                f"{run.data / 'wav.scp'},speech,sound",
                "--output_dir",
                out,
            ],
            out,
        )
    if name == "profile":
        return profile.main, model + ["--seconds", "1", "--repeats", "1", "--png", out], out
    if name == "export":
        return export.main, model + ["--format", "torchscript", "--out_dir", out], out
    if name == "score":
        return (
            score.main,
            model
            + ["--dump_dir", run.data.parent, "--decode_dir", run.decode, "--sets", "test", "--out", out],
            out,
        )
    raise ValueError(name)


@pytest.mark.parametrize("kind", list(CHECKPOINT_PROBLEMS))
def test_remove_masks_refuses_a_bad_checkpoint(run: Run, tmp_path, capsys, kind) -> None:
    from espnet_prune.bin import remove_masks

    bad = _bad_checkpoint(kind, run, tmp_path, expected=run.exp / "latest.pth")
    out = tmp_path / "pruned"
    message = expect_error(
        remove_masks.main,
        ["--asr_train_config", run.exp / "config.yaml", "--asr_model_file", bad, "--out_dir", out],
        "remove_masks",
        str(bad),
        capsys,
    )
    assert CHECKPOINT_PROBLEMS[kind] in message
    assert not (tmp_path / MARKER_NAME).exists()  # no code ran
    assert _leftovers(out) == []


@pytest.mark.parametrize("entry", ["asr_inference", "profile", "export", "score"])
@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "crafted_pickle", "other_stage_weights"])
def test_entry_points_refuse_a_bad_checkpoint(run: Run, tmp_path, capsys, entry, kind) -> None:
    bad = _bad_checkpoint(kind, run, tmp_path, expected=run.pruned / "model.pth")
    main, argv, output = _entry_point(entry, run, bad, tmp_path / "output")
    message = expect_error(main, argv, entry, str(bad), capsys)
    assert CHECKPOINT_PROBLEMS[kind] in message
    assert not (tmp_path / MARKER_NAME).exists()
    assert _leftovers(output) == []


def test_a_crafted_checkpoint_names_what_it_pickles_and_the_opt_in(run: Run, tmp_path, capsys) -> None:

    bad = _bad_checkpoint("crafted_pickle", run, tmp_path, expected=run.pruned / "model.pth")
    main, argv, _ = _entry_point("profile", run, bad, tmp_path / "profile.png")
    message = expect_error(main, argv, "profile", "posix.system", capsys)
    assert "--trust_checkpoint" in message and not (tmp_path / MARKER_NAME).exists()


class TrustedStateDict(dict):
    """A state dict pickled as a class of its own: refused unless the user trusts the file."""


def test_trust_checkpoint_opts_in_to_unpickling(run: Run, tmp_path, capsys) -> None:
    from espnet_prune.bin import profile

    weights = tmp_path / "trusted.pth"
    torch.save(TrustedStateDict(torch.load(run.pruned / "model.pth", weights_only=True)), weights)
    argv = [
        "--asr_train_config",
        run.pruned / "config.yaml",
        "--asr_model_file",
        weights,
        "--seconds",
        "1",
        "--repeats",
        "1",
    ]
    expect_error(profile.main, argv, "profile", "TrustedStateDict", capsys)
    profile.main([str(a) for a in argv] + ["--trust_checkpoint"])
    assert "CPU latency" in capsys.readouterr().out


def test_compare_refuses_a_run_with_bad_weights(run: Run, tmp_path, capsys) -> None:
    from espnet_prune.bin import compare

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_bytes((run.pruned / "config.yaml").read_bytes())
    (run_dir / "model.pth").write_text("not weights\n")
    out = tmp_path / "table.md"
    expect_error(
        compare.main,
        [
            "--run",
            f"x={run_dir}",
            "--dump_dir",
            run.data.parent,
            "--sets",
            "test",
            "--repeats",
            "1",
            "--seconds",
            "1",
            "--out",
            out,
        ],
        "compare",
        str(run_dir / "model.pth"),
        capsys,
    )
    assert _leftovers(out) == []


def test_compare_prices_macs_where_the_budget_was_set_and_refuses_runs_that_disagree(
    run: Run, tmp_path, capsys
) -> None:
    """Without --seconds the table counts MACs at the gated run's reference_seconds (the removed model's
    parent config), and two gated runs with different reference lengths are an error naming both configs."""
    from espnet_prune.bin import compare

    config = yaml.safe_load((run.exp / "config.yaml").read_text())
    runs = {}
    for name, reference in (("same", 3.5), ("other", 5.0)):
        config["encoder_conf"]["pruning"]["reference_seconds"] = reference
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(config))
        runs[name] = shutil.copytree(run.pruned, tmp_path / name / "pruned")
        shutil.copytree(run.decode, runs[name] / "decode_ctc")
    common = ["--dump_dir", run.data.parent, "--sets", "test", "--repeats", "1", "--num_threads", "1"]
    compare.main([str(a) for a in [*common, "--run", f"HJ-MAC={runs['same']}"]])
    header = capsys.readouterr().out.splitlines()[0]
    assert "| GMACs / 3.5 s | CPU ms / 3.5 s |" in header, header
    expect_error(
        compare.main,
        [*common, "--run", f"a={runs['same']}", "--run", f"b={runs['other']}"],
        "compare",
        f"{tmp_path / 'other' / 'config.yaml'}: 5",
        capsys,
    )


# --- configs ----------------------------------------------------------------------------------------------


def _config_file(run: Run, folder: Path, kind: str) -> Path:
    """The removed model's config.yaml damaged in the way ``kind`` says."""
    path = folder / "config.yaml"
    config = yaml.safe_load((run.pruned / "config.yaml").read_text())
    if kind == "empty":
        path.write_text("")
    elif kind == "text":
        path.write_text("just some words\n")
    elif kind == "binary":
        path.write_bytes((run.pruned / "model.pth").read_bytes())
    elif kind == "invalid_yaml":
        path.write_text("encoder: [pruned_wav2vec2\n")
    elif kind == "not_an_asr_config":
        path.write_text(yaml.safe_dump({"lm": "transformer", "lm_conf": {}}))
    elif kind == "missing":
        pass
    elif kind.startswith("/"):  # a top-level edit: "/key=value" (value in YAML)
        key, value = kind[1:].split("=", 1)
        path.write_text(yaml.safe_dump(dict(config, **{key: yaml.safe_load(value)})))
    else:  # an edit of encoder_conf: "key=value" (value in YAML)
        key, value = kind.split("=", 1)
        conf = config["encoder_conf"]
        *parents, leaf = key.split(".")
        for parent in parents:
            conf = conf.setdefault(parent, {})
        conf[leaf] = yaml.safe_load(value)
        path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "kind, culprit",
    [
        ("empty", "{config}: empty file"),
        ("text", "{config}: expected an ESPnet training config.yaml (a YAML mapping), got str"),
        ("binary", "{config}: not UTF-8 text"),
        ("invalid_yaml", "{config}: not valid YAML at line 2, column 1"),
        ("not_an_asr_config", "{config}: not an ESPnet ASR training config"),
        ("missing", "{config}: no such config file"),
        (
            "model_config.embed_dim=wide",
            "encoder_conf.model_config.embed_dim: expected an integer, got 'wide'",
        ),
        ("model_config.num_heads=4", "encoder_conf.model_config.num_heads"),
        ("model_config.conv_bias=maybe", "encoder_conf.model_config.conv_bias"),
        ("ssl_chekpoint=x.pt", "ssl_chekpoint"),
        ("freeze_cnn_updates=-1", "encoder_conf.freeze_cnn_updates"),
        ("/model_conf=5", "{config}: ESPnet cannot build the model it describes (AttributeError"),
        (
            "/token_list=7",
            "{config}: ESPnet cannot build the model it describes (RuntimeError: token_list must be",
        ),
        ("/encoder=conformr", "{config}: --encoder must be one of"),
    ],
)
def test_inference_refuses_a_bad_config_yaml(run: Run, tmp_path, capsys, kind, culprit) -> None:
    from espnet_prune.bin import asr_inference

    config = _config_file(run, tmp_path, kind)
    out = tmp_path / "decode"
    expect_error(
        asr_inference.main,
        [
            "--ctc_greedy",
            "true",
            "--asr_train_config",
            config,
            "--asr_model_file",
            run.pruned / "model.pth",
            "--data_path_and_name_and_type",
            f"{run.data / 'wav.scp'},speech,sound",
            "--output_dir",
            out,
        ],
        "asr_inference",
        culprit.format(config=config),
        capsys,
    )
    assert _leftovers(out) == []


@pytest.mark.parametrize(
    "extra, culprit",
    [
        (["--encoder_conf", "prunning={variant: mac}"], "prunning"),
        (["--encoder_conf", "pruning.warmup_updates=10k"], "encoder_conf.pruning.warmup_updates"),
        (["--encoder_conf", "pruning.gate_lr=fast"], "encoder_conf.pruning.gate_lr"),
        (["--encoder_conf", "pruning.target_sparsity=1.2"], "encoder_conf.pruning.target_sparsity"),
        (["--encoder_conf", "pruning.cnn_target_sparsity=0.3"], "cnn_target_sparsity"),
        (["--encoder_conf", "pruning.variant=magnitude"], "encoder_conf.pruning.variant"),
        (["--encoder_conf", "model_config=/nonexistent/model.yaml"], "/nonexistent/model.yaml"),
    ],
)
def test_training_refuses_a_bad_encoder_conf(tmp_path, capsys, extra, culprit) -> None:
    from espnet_prune.bin import asr_train

    (tmp_path / "tokens.txt").write_text("\n".join(TINY_TOKENS) + "\n")
    expect_error(
        asr_train.main,
        [
            "--config",
            TINY_TRAIN_CONFIG,
            "--encoder_conf",
            f"model_config={TINY_MODEL}",
            "--token_list",
            tmp_path / "tokens.txt",
            "--output_dir",
            tmp_path / "exp",
            "--dry_run",
            "true",
            *extra,
        ],
        "asr_train",
        culprit,
        capsys,
    )
    assert _leftovers(tmp_path / "exp") == []


@pytest.mark.parametrize(
    "content, culprit",
    [
        ("", "empty file"),
        ("encoder: [pruned_wav2vec2\n", "not valid YAML"),
        ("just some words\n", "expected a YAML mapping of asr_train options, got str"),
    ],
)
def test_training_refuses_an_unreadable_config_file(tmp_path, capsys, content, culprit) -> None:
    from espnet_prune.bin import asr_train

    config = tmp_path / "train.yaml"
    config.write_text(content)
    (tmp_path / "tokens.txt").write_text("\n".join(TINY_TOKENS) + "\n")
    expect_error(
        asr_train.main,
        [
            "--config",
            config,
            "--token_list",
            tmp_path / "tokens.txt",
            "--output_dir",
            tmp_path / "exp",
            "--dry_run",
            "true",
        ],
        "asr_train",
        f"{config}: {culprit}",
        capsys,
    )
    assert _leftovers(tmp_path / "exp") == []


# --- audio and data dirs ----------------------------------------------------------------------------------


def _bad_audio(kind: str, folder: Path) -> Path:
    path = folder / f"spk-bad-{kind}.wav"
    if kind == "8khz":
        _write_audio(path, 1.0, sample_rate=8000)
    elif kind == "stereo":
        _write_audio(path, 1.0, channels=2)
    elif kind == "no_samples":
        sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "not_audio":
        path.write_text("not audio at all\n")
    elif kind != "missing":
        raise ValueError(kind)
    return path


AUDIO_KINDS = {
    "8khz": "sample rate 8000 Hz, expected 16000 Hz",
    "stereo": "2 channels, expected mono",
    "no_samples": "empty audio file (no samples)",
    "zero_bytes": "empty audio file (0 bytes)",
    "not_audio": "unreadable audio file",
    "missing": "audio file missing",
}


def _wav_scp_with(run: Run, bad: Path, folder: Path) -> Path:
    """A copy of the good wav.scp with ``bad`` as its third line."""
    lines = (run.data / "wav.scp").read_text().splitlines()
    lines.insert(2, f"spk-bad {bad}")
    scp = folder / "wav.scp"
    scp.write_text("\n".join(sorted(lines)) + "\n")
    return scp


@pytest.mark.parametrize("greedy", ["true", "false"])
@pytest.mark.parametrize("kind", list(AUDIO_KINDS))
def test_decoding_refuses_bad_audio_and_keeps_the_previous_output(
    run: Run, tmp_path, capsys, kind, greedy
) -> None:
    from espnet_prune.bin import asr_inference

    if greedy == "false" and kind not in ("8khz", "stereo", "no_samples"):
        pytest.skip("the beam-search path runs the same check; three kinds show it")
    bad = _bad_audio(kind, tmp_path)
    scp = _wav_scp_with(run, bad, tmp_path)
    lineno = scp.read_text().splitlines().index(f"spk-bad {bad}") + 1
    out = tmp_path / "decode"
    (out / "1best_recog").mkdir(parents=True)
    (out / "1best_recog" / "text").write_text("previous output\n")
    expect_error(
        asr_inference.main,
        [
            "--ctc_greedy",
            greedy,
            "--asr_train_config",
            run.pruned / "config.yaml",
            "--asr_model_file",
            run.pruned / "model.pth",
            "--data_path_and_name_and_type",
            f"{scp},speech,sound",
            "--output_dir",
            out,
        ],
        "asr_inference",
        f"{scp}:{lineno}: {bad}: {AUDIO_KINDS[kind]}",
        capsys,
    )
    assert (out / "1best_recog" / "text").read_text() == "previous output\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _format(run: Run, data: Path, dump: Path, *extra: str) -> None:
    from espnet_prune.bin import format_data

    format_data.main(
        [
            "--data_dir",
            str(data.parent),
            "--dump_dir",
            str(dump),
            "--sets",
            data.name,
            "--min_seconds",
            "0.5",
            "--max_seconds",
            "5",
            *extra,
        ]
    )


@pytest.mark.parametrize("kind", list(AUDIO_KINDS))
def test_stage_2_refuses_bad_audio_naming_line_and_file_or_skips_and_counts_it(
    run: Run, tmp_path, capsys, kind
):
    from espnet_prune.bin import format_data

    good = sorted((run.root / "audio").glob("good-*.wav"))[:3]
    data = _data_dir(tmp_path / "data" / "train", good[:1] + [_bad_audio(kind, tmp_path)] + good[1:])
    dump = tmp_path / "dump"
    argv = ["--data_dir", data.parent, "--dump_dir", dump, "--sets", "train"]
    message = expect_error(
        format_data.main,
        argv,
        "format_data",
        f"{tmp_path / f'spk-bad-{kind}.wav'}: {AUDIO_KINDS[kind]}",
        capsys,
    )
    assert message.endswith(f"(utterance spk-001 from {data / 'wav.scp'}:2)")
    assert _leftovers(dump / "train") == []
    format_data.main([str(a) for a in argv] + ["--skip_bad", "true"])
    assert f"{dump / 'train'}: 3 utterances, 1 bad audio files skipped" in capsys.readouterr().out
    assert "spk-001" not in (dump / "train" / "wav.scp").read_text()


def _edit(path: Path, edit: Callable[[List[str]], List[str]]) -> None:
    path.write_text("".join(line + "\n" for line in edit(path.read_text().splitlines())))


DATA_DIR_FAULTS = {
    "missing_wav_scp": (lambda d: (d / "wav.scp").unlink(), "{data}/wav.scp: missing"),
    "ids_differ": (
        lambda d: _edit(d / "text", lambda ls: ls[:-1] + ["spk-999 A"]),
        "{data}: utterance ids of text and wav.scp differ",
    ),
    "unsorted": (
        lambda d: _edit(d / "utt2spk", lambda ls: ls[::-1]),
        "{data}/utt2spk:2: key 'spk-001' is not sorted",
    ),
    "one_field_line": (
        lambda d: _edit(d / "wav.scp", lambda ls: ["spk-000"] + ls[1:]),
        "{data}/wav.scp:1: expected '<key> <value>'",
    ),
    "spk2utt_disagrees": (
        lambda d: _edit(d / "spk2utt", lambda ls: ["spk spk-000"]),
        "{data}/spk2utt:1: speaker 'spk' does not list",
    ),
    "duplicate_id": (
        lambda d: _edit(d / "wav.scp", lambda ls: ls[:1] + ls),
        "{data}/wav.scp:2: key 'spk-000' is duplicate",
    ),
}


@pytest.mark.parametrize("fault", list(DATA_DIR_FAULTS))
def test_stage_2_refuses_a_broken_data_dir(run: Run, tmp_path, capsys, fault) -> None:
    from espnet_prune.bin import format_data

    data = _data_dir(tmp_path / "data" / "train", sorted((run.root / "audio").glob("good-*.wav"))[:3])
    make_fault, culprit = DATA_DIR_FAULTS[fault]
    make_fault(data)
    dump = tmp_path / "dump"
    expect_error(
        format_data.main,
        ["--data_dir", data.parent, "--dump_dir", dump, "--sets", "train"],
        "format_data",
        culprit.format(data=data),
        capsys,
    )
    assert _leftovers(dump / "train") == []


def test_decoding_refuses_a_malformed_wav_scp(run: Run, tmp_path, capsys) -> None:
    from espnet_prune.bin import asr_inference

    scp = tmp_path / "wav.scp"
    scp.write_text((run.data / "wav.scp").read_text() + "spk-zzz\n")
    out = tmp_path / "decode"
    expect_error(
        asr_inference.main,
        [
            "--ctc_greedy",
            "true",
            "--asr_train_config",
            run.pruned / "config.yaml",
            "--asr_model_file",
            run.pruned / "model.pth",
            "--data_path_and_name_and_type",
            f"{scp},speech,sound",
            "--output_dir",
            out,
        ],
        "asr_inference",
        f"{scp}:{GOOD_UTTERANCES + 1}: expected '<utterance id> <audio file>'",
        capsys,
    )
    assert _leftovers(out) == []


# --- CLI options ------------------------------------------------------------------------------------------


def _removal_argv(run: Run, out: Path) -> List:
    return [
        "--asr_train_config",
        run.exp / "config.yaml",
        "--asr_model_file",
        run.exp / "latest.pth",
        "--out_dir",
        out,
    ]


@pytest.mark.parametrize(
    "case", ["training_dir", "another_runs_config", "other_files", "a_file", "has_checkpoint"]
)
def test_remove_masks_refuses_an_out_dir_it_would_clobber(run: Run, tmp_path, capsys, case) -> None:
    from espnet_prune.bin import remove_masks

    if case == "training_dir":
        out = tmp_path / "exp"
        out.mkdir()
        for name in ("config.yaml", "latest.pth"):
            (out / name).write_bytes((run.exp / name).read_bytes())
        argv = [
            "--asr_train_config",
            out / "config.yaml",
            "--asr_model_file",
            out / "latest.pth",
            "--out_dir",
            out,
        ]
        culprit = "is a training directory (holds latest.pth)"
    else:
        out = tmp_path / "pruned"
        argv = _removal_argv(run, out)
        if case == "a_file":
            out.write_text("a file\n")
            culprit = "exists and is not a directory"
        else:
            out.mkdir()
            if case == "another_runs_config":
                config = yaml.safe_load((run.pruned / "config.yaml").read_text())
                (out / "config.yaml").write_text(yaml.safe_dump(dict(config, output_dir="exp/another_run")))
                (out / "model.pth").write_bytes(b"old")
                culprit = "holds the config.yaml of another run (output_dir exp/another_run"
            elif case == "other_files":
                (out / "notes.txt").write_text("mine\n")
                culprit = "holds other files (notes.txt)"
            else:
                (out / "checkpoint.pth").write_bytes(b"resume state")
                culprit = "is a training directory (holds checkpoint.pth)"
    before = {p.name: p.read_bytes() for p in out.iterdir()} if out.is_dir() else out.read_bytes()
    expect_error(remove_masks.main, argv, "remove_masks", f"--out_dir {out}: {culprit}", capsys)
    after = {p.name: p.read_bytes() for p in out.iterdir()} if out.is_dir() else out.read_bytes()
    assert after == before  # nothing written
    assert [p for p in out.parent.glob(f".{out.name}.*")] == []


def test_remove_masks_replaces_an_earlier_removal_of_the_same_run(run: Run, tmp_path) -> None:
    from espnet_prune.bin import remove_masks

    out = tmp_path / "pruned"
    remove_masks.main([str(a) for a in _removal_argv(run, out)])
    (out / "decode_old").mkdir()  # decodings of the earlier model go with it
    remove_masks.main([str(a) for a in _removal_argv(run, out)])
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.pth"]
    assert (out / "config.yaml").read_text() == (run.pruned / "config.yaml").read_text()


@pytest.mark.parametrize(
    "entry, argv, status, culprit",
    [
        (
            "format_data",
            ["--data_dir", "d", "--dump_dir", "o", "--sets", "x", "--min_seconds", "half"],
            2,
            "--min_seconds",
        ),
        (
            "format_data",
            ["--data_dir", "d", "--dump_dir", "o", "--sets", "x", "--skip_bad", "perhaps"],
            2,
            "--skip_bad",
        ),
        ("profile", ["--preset", "wav2vec2_base", "--asr_model_file", "m.pth"], 2, "--asr_model_file needs"),
        (
            "remove_masks",
            [
                "--asr_train_config",
                "c.yaml",
                "--asr_model_file",
                "m.pth",
                "--out_dir",
                "o",
                "--seconds",
                "ten",
            ],
            2,
            "--seconds",
        ),
        (
            "export",
            [
                "--asr_train_config",
                "c.yaml",
                "--asr_model_file",
                "m.pth",
                "--out_dir",
                "o",
                "--format",
                "tflite",
            ],
            2,
            "--format",
        ),
        ("compare", ["--run", "no_equals_sign", "--dump_dir", "d", "--sets", "x"], 1, "expected NAME=DIR"),
        (
            "asr_inference",
            ["--ctc_greedy", "true", "--data_path_and_name_and_type", "w,speech,sound", "--output_dir", "o"],
            1,
            "--ctc_greedy: give --asr_train_config",
        ),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, monkeypatch, entry, argv, status, culprit) -> None:
    monkeypatch.chdir(tmp_path)
    module = __import__(f"espnet_prune.bin.{entry}", fromlist=["main"])
    expect_error(module.main, argv, entry, culprit, capsys, status)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_too_few_check_batches(run: Run, tmp_path, capsys) -> None:
    from espnet_prune.bin import export

    out = tmp_path / "onnx"
    expect_error(
        export.main,
        [
            "--asr_train_config",
            run.pruned / "config.yaml",
            "--asr_model_file",
            run.pruned / "model.pth",
            "--format",
            "torchscript",
            "--out_dir",
            out,
            "--check_batches",
            "1",
        ],
        "export",
        "--check_batches",
        capsys,
    )
    assert _leftovers(out) == []


# --- kill and rerun ---------------------------------------------------------------------------------------


def _decode_argv(run: Run, scp: Path, out: Path) -> List[str]:
    return [
        "--ctc_greedy",
        "true",
        "--batch_size",
        "1",
        "--asr_train_config",
        str(run.pruned / "config.yaml"),
        "--asr_model_file",
        str(run.pruned / "model.pth"),
        "--data_path_and_name_and_type",
        f"{scp},speech,sound",
        "--output_dir",
        str(out),
    ]


def _outputs(folder: Path) -> Dict[str, str]:
    return {p.name: p.read_text() for p in sorted((folder / "1best_recog").iterdir())}


def test_decoding_killed_part_way_then_rerun_gives_the_uninterrupted_output(run: Run, tmp_path) -> None:
    from espnet_prune.bin import asr_inference

    wavs = [_write_audio(tmp_path / "audio" / f"long-{i:03d}.wav", 2.0, seed=i) for i in range(96)]
    data = _data_dir(tmp_path / "data" / "long", wavs)
    asr_inference.main(_decode_argv(run, data / "wav.scp", tmp_path / "uninterrupted"))
    expected = _outputs(tmp_path / "uninterrupted")
    assert len(expected["text"].splitlines()) == len(wavs)

    out = tmp_path / "decode"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "espnet_prune.bin.asr_inference", *_decode_argv(run, data / "wav.scp", out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".decode.tmp-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    # Killed as soon as the staging folder exists: the model is loaded and decoding has begun (it runs
    # inside the staging folder, renamed only when complete), far from its end (96 utterances).
    assert process.poll() is None, "decoding ended before it could be killed part-way"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()  # no partial 1best_recog under the real name

    asr_inference.main(_decode_argv(run, data / "wav.scp", out))
    assert _outputs(out) == expected
