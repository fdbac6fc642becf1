"""egs2/librispeech/asr1: stage 1-5 on the real LibriSpeech layout, every tuning config builds, and a
reduced demo runs end to end through all stages."""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_FINISHED, REPO

RECIPE = REPO / "egs2" / "librispeech" / "asr1"
SAMPLE = REPO.parent / "shared" / "data" / "librispeech_sample" / "LibriSpeech"


def _recipe_copy(tmp_path: Path) -> Path:
    """A copy of the recipe (with the shared TEMPLATE next to it) so that runs write into tmp_path."""
    egs = tmp_path / "egs2"
    shutil.copytree(REPO / "egs2" / "TEMPLATE", egs / "TEMPLATE", symlinks=True)
    shutil.copytree(
        RECIPE,
        egs / "librispeech" / "asr1",
        symlinks=True,
        ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads"),
    )
    return egs / "librispeech" / "asr1"


def _run(recipe: Path, *args: str, timeout: int = 1200) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = subprocess.run(
        ["./run.sh", *args], cwd=recipe, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _table(path: Path) -> dict:
    """``key -> value`` of a Kaldi table (a key alone has an empty value)."""
    rows = (line.split(maxsplit=1) for line in path.read_text().splitlines())
    return {row[0]: row[1] if len(row) > 1 else "" for row in rows}


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"{SAMPLE} is absent")
def test_stages_1_to_5_on_the_real_librispeech_layout(tmp_path):
    recipe = _recipe_copy(tmp_path)
    _run(
        recipe,
        "--local_data_opts",
        f"--librispeech_dir {SAMPLE}",
        "--stop_stage",
        "5",
        "--token_type",
        "char",
    )
    for name in ("train_clean_100", "dev_clean", "dev_other", "test_clean", "test_other"):
        data = _table(recipe / "data" / name / "text")
        dump = _table(recipe / "dump" / "raw" / name / "text")
        assert data == dump and data
        assert list(data) == sorted(data)
        for utt, text in data.items():
            assert re.fullmatch(r"\d+-\d+-\d{4}", utt) and text == text.upper()
        samples = _table(recipe / "dump" / "raw" / name / "utt2num_samples")
        assert set(samples) == set(data) and all(int(n) > 0 for n in samples.values())
        assert (recipe / "dump" / "raw" / name / "feats_type").read_text().strip() == "raw"
    genuine = _table(recipe / "data" / "dev_clean" / "text")
    sample_trans = (
        (SAMPLE / "dev-clean" / "2412" / "153948" / "2412-153948.trans.txt").read_text().splitlines()
    )
    for line in sample_trans:
        utt, text = line.split(maxsplit=1)
        assert genuine[utt] == text
    tokens = (recipe / "data" / "token_list" / "char" / "tokens.txt").read_text().split()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>" and "<space>" in tokens


@pytest.mark.parametrize("config", sorted((RECIPE / "conf" / "tuning").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_tuning_config_builds_a_model(config, tmp_path):
    from espnet_prune.espnet import PrunedASRTask

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<blank>\n<unk>\na\nb\n<sos/eos>\n")
    parser = PrunedASRTask.get_parser()
    args = parser.parse_args(
        [
            "--config",
            str(config),
            "--token_list",
            str(tokens),
            "--token_type",
            "char",
            "--encoder_conf",
            "ssl_checkpoint=null",
            "--encoder_conf",
            "preset=wav2vec2_base",
        ]
    )
    pruning = yaml.safe_load(config.read_text())["encoder_conf"].get("pruning")
    if pruning is not None and pruning["variant"] == "latency":  # a table as profile would measure for base
        from test_latency import synthetic_table

        from espnet_prune.models import PRESETS

        synthetic_table(PRESETS["wav2vec2_base"](), pruning["reference_seconds"]).save(
            tmp_path / "table.json"
        )
        args.encoder_conf["pruning"]["latency_table"] = str(tmp_path / "table.json")
    model = PrunedASRTask.build_model(args)
    gated = any(name.endswith("log_alpha") for name, _ in model.named_parameters())
    assert gated == (pruning is not None)
    if pruning is not None:
        assert type(model).__name__ == "PrunedESPnetASRModel"
        assert args.keep_nbest_models == 1


def test_reduced_demo_runs_all_stages(tmp_path):
    recipe = _recipe_copy(tmp_path)
    out = _run(
        recipe,
        "--demo",
        "true",
        "--local_data_opts",
        "--demo_sentences 24,6,6",
        "--asr_args",
        "--max_epoch 1",
        "--removal_args",
        "--allow_budget_miss",
    )
    for stage in (
        "stage 1:",
        "stage 2:",
        "stage 5:",
        "stage 10:",
        "stage 11: training",
        "stage 11: removing the masks",
        "stage 12: decoding",
        "stage 13: scoring",
        "stage 14: packing",
    ):
        assert stage in out, stage
    assert "nltk" not in out
    table = (recipe / "exp" / "asr_demo_table.md").read_text().splitlines()
    assert table[0].startswith("| model | SSL params M") and "test_clean WER %" in table[0]
    # MACs and latency are those at the length the HJ-MAC budget was priced at, read from its config
    pruning = yaml.safe_load((recipe / "exp" / "asr_demo_hj_mac" / "config.yaml").read_text())["encoder_conf"]
    assert f"| GMACs / {pruning['pruning']['reference_seconds']:g} s |" in table[0], table[0]
    rows = {line.split("|")[1].strip(): line for line in table[2:]}
    assert set(rows) == {"dense", "HJ-MAC"}
    dense_params = float(rows["dense"].split("|")[2].split()[0])
    pruned_params = float(rows["HJ-MAC"].split("|")[2].split()[0])
    assert pruned_params < dense_params
    # one epoch each on the same data: both fine-tunings continued the stand-in's updates, equally long
    updates = {name: line.split("|")[5].strip() for name, line in rows.items()}
    standin, _, finetuning = updates["dense"].partition(" + ")
    assert int(standin) > 0 and finetuning == standin and updates["HJ-MAC"] == updates["dense"]
    assert DEMO_FINISHED.search(out), out[-500:]
    for run, model_dir in (
        ("asr_demo_dense", "asr_demo_dense"),
        ("asr_demo_hj_mac", "asr_demo_hj_mac/pruned"),
    ):
        # Stage 13: RESULTS.md as ESPnet writes it (environment, then the decoded model's table)
        results = (recipe / "exp" / run / "RESULTS.md").read_text()
        assert results.startswith(
            "<!-- Generated by espnet_prune.bin.score -->\n# RESULTS\n## Environments\n- date: `"
        )
        for field in ("python version", "espnet2 version", "pytorch version", "Git hash"):
            assert f"- {field}: `" in results, field
        assert f"## exp/{model_dir}/decode_ctc_greedy\n" in results
        assert re.search(r"\|test_clean\|12\|\d+\|[\d.]+\|[\d.]+\|", results), results
        hyps = _table(
            recipe / "exp" / model_dir / "decode_ctc_greedy" / "test_clean" / "1best_recog" / "text"
        )
        assert len(hyps) <= 12
        # Stage 14: the packed model (ESPnet's pack: meta.yaml, the config, the weights, the tokens, RESULTS.md)
        [packed] = (recipe / "exp" / run).glob("*.zip")
        names = set(zipfile.ZipFile(packed).namelist())
        assert packed.name == f"{run}_{'pruned' if model_dir.endswith('pruned') else 'latest'}.zip"
        assert {
            "meta.yaml",
            f"exp/{model_dir}/config.yaml",
            f"exp/{run}/RESULTS.md",
            "data/token_list/char/tokens.txt",
        } <= names, names
        # the weights (pack resolves latest.pth to the epoch file it links to)
        assert [n for n in names if n.startswith(f"exp/{model_dir}/") and n.endswith(".pth")], names
    # Stage 12 decoded in batches of 8 (best-path CTC); one utterance at a time gives the same tokens.
    pruned = recipe / "exp" / "asr_demo_hj_mac" / "pruned"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "espnet_prune.bin.asr_inference",
            "--ngpu",
            "0",
            "--ctc_greedy",
            "true",
            "--batch_size",
            "1",
            "--asr_train_config",
            str(pruned / "config.yaml"),
            "--asr_model_file",
            str(pruned / "model.pth"),
            "--data_path_and_name_and_type",
            f"{recipe / 'dump/raw/test_clean/wav.scp'},speech,sound",
            "--output_dir",
            str(tmp_path / "single"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    batched = _table(pruned / "decode_ctc_greedy" / "test_clean" / "1best_recog" / "token_int")
    assert _table(tmp_path / "single" / "1best_recog" / "token_int") == batched
    train_log = (recipe / "exp" / "asr_demo_hj_mac" / "train.log").read_text()
    assert "expected_gmacs" in train_log and "exact_sparsity_macs" in train_log


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_rerunning_stage_11_resumes_an_interrupted_training(tmp_path):
    """Stage 11 is stopped (killed) after a few epochs of a long run; running stage 11 again continues from
    the epoch its checkpoint.pth holds, as ESPnet's --resume true does, instead of starting over."""
    import signal
    import time

    import torch
    from test_espnet_e2e import TINY_MODEL, Run

    recipe = _recipe_copy(tmp_path)
    corpus = Run(tmp_path / "corpus")  # 8 + 2 espeak-ng utterances in Kaldi data dirs
    for name, source in (("train_clean_100", corpus.train), ("dev_clean", corpus.valid)):
        data = shutil.copytree(source, recipe / "data" / name)
        utts = sorted(_table(data / "text"))  # Kaldi's rule: an utterance id starts with its speaker's
        (data / "utt2spk").write_text("".join(f"{u} {u}\n" for u in utts))
        (data / "spk2utt").write_text("".join(f"{u} {u}\n" for u in utts))
    options = [
        "--test_sets",
        "dev_clean",
        "--token_type",
        "char",
        "--ngpu",
        "0",
        "--asr_config",
        str(REPO / "conf" / "train" / "tiny_hj_mac_50.yaml"),
        "--asr_tag",
        "asr_tiny",
        "--removal_args",
        "--allow_budget_miss",
    ]
    _run(
        recipe,
        "--stage",
        "2",
        "--stop_stage",
        "10",
        *options,
        "--asr_args",
        f"--encoder_conf model_config={TINY_MODEL}",
    )
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    exp = recipe / "exp" / "asr_tiny"
    training = subprocess.Popen(
        [
            "./run.sh",
            "--stage",
            "11",
            "--stop_stage",
            "11",
            *options,
            "--asr_args",
            f"--encoder_conf model_config={TINY_MODEL} --max_epoch 100",
        ],
        cwd=recipe,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    log = exp / "train.log"
    # ESPnet writes checkpoint.pth at the end of an epoch, before it logs the next one's start
    while (
        training.poll() is None
        and time.time() < deadline
        and not (log.is_file() and "3/100epoch started" in log.read_text())
    ):
        time.sleep(1)
    os.killpg(training.pid, signal.SIGKILL)
    training.wait()
    interrupted_at = torch.load(exp / "checkpoint.pth", weights_only=False)["reporter"]["epoch"]
    assert 2 <= interrupted_at < 100 and not (exp / "pruned").exists()

    out = _run(
        recipe,
        "--stage",
        "11",
        "--stop_stage",
        "11",
        *options,
        "--asr_args",
        f"--encoder_conf model_config={TINY_MODEL} --max_epoch {interrupted_at + 1}",
    )
    assert f"resuming {exp.relative_to(recipe)} from its checkpoint.pth" in out
    log = (exp / "train.log").read_text()
    assert "The training was resumed" in log
    started = re.findall(r"(\d+)/(\d+)epoch started", log)
    assert started == [(str(interrupted_at + 1), str(interrupted_at + 1))], started
    assert (exp / "train.1.log").is_file()  # espnet2.bin.launch kept the interrupted run's log
    assert torch.load(exp / "checkpoint.pth", weights_only=False)["reporter"]["epoch"] == interrupted_at + 1
    assert (exp / "pruned" / "model.pth").is_file()  # a gated run's stage 11 ends with mask removal
