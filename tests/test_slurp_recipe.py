"""The SLURP recipe (egs2/slurp/asr1): a reduced demo through every stage, the tuning configs, run.sh's
errors for a missing checkpoint / corpus, and the entity mode (data preparation, SLU-F1 scoring and the
table of a hypothesis file, and the --entity option's way through the shell scripts).

The demo runs in a temporary copy of the recipe (so egs2/slurp/asr1/{data,dump,exp} are left alone) with
the recipe's own demo configs reduced to the tiny test model, one epoch and gates that start at keep
probability 0.7 (so that one epoch of pruning already removes structures). Data preparation on the real
SLURP annotations and its bad-input cases are tested in test_data_prep.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import yaml

from espnet_prune.bin import compare, score
from espnet_prune.models import Wav2Vec2Config

from conftest import DEMO_FINISHED, REPO, TINY_MODEL, tiny_config

RECIPE = REPO / "egs2" / "slurp" / "asr1"
DEMO_SENTENCES = "16,4,6"  # train / devel / test sentences, 2 espeak-ng voices each

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def _env() -> Dict[str, str]:
    """The recipe's scripts call `python3 -m ...`: put this interpreter's bin dir first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _copy_recipe(root: Path) -> Path:
    """egs2/TEMPLATE/asr1 and egs2/slurp/asr1 (without outputs) under root; returns the recipe copy."""
    shutil.copytree(REPO / "egs2" / "TEMPLATE", root / "egs2" / "TEMPLATE", symlinks=True)
    recipe = root / "egs2" / "slurp" / "asr1"
    shutil.copytree(
        RECIPE,
        recipe,
        symlinks=True,
        ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads", "RESULTS*.md"),
    )
    return recipe


def _reduce_demo_configs(recipe: Path) -> None:
    """The recipe's demo configs, changed only where a test must be fast."""
    demo = recipe / "conf" / "demo"
    model = yaml.safe_load(TINY_MODEL.read_text())  # the tests' tiny model, downsampling 320x as wav2vec2
    model["conv_layers"] = [[16, 10, 5]] + [[16, 3, 2]] * 4 + [[16, 2, 2]] * 2
    (demo / "model.yaml").write_text(yaml.safe_dump(model, sort_keys=False))
    for path in sorted(demo.glob("train_*.yaml")):  # the SLU demo prunes with train_hj_mac_keep_attention
        config = yaml.safe_load(path.read_text())
        assert config["encoder_conf"]["model_config"] == "conf/demo/model.yaml"
        config.update(max_epoch=1, batch_size=8, scheduler_conf={"warmup_steps": 2})
        pruning = config["encoder_conf"].get("pruning")
        if pruning is not None:
            assert pruning["variant"] == "mac" and pruning["target_sparsity"] in (0.4, 0.5)
            pruning.update(warmup_updates=2, gates={**pruning.get("gates", {}), "init_keep_prob": 0.7})
        path.write_text(yaml.safe_dump(config, sort_keys=False))


def _table(path: Path) -> List[Dict[str, str]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Dict[str, object]:
    recipe = _copy_recipe(tmp_path_factory.mktemp("slurp_recipe"))
    _reduce_demo_configs(recipe)
    proc = subprocess.run(
        [
            "./run.sh",
            "--demo",
            "true",
            "--local_data_opts",
            f"--demo_sentences {DEMO_SENTENCES}",
            "--python",
            sys.executable,
            "--removal_args",
            "--allow_budget_miss",
        ],  # a smoke run: too short to reach the budget
        cwd=recipe,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    return dict(recipe=recipe, proc=proc, out=proc.stdout + proc.stderr)


@needs_espeak
def test_demo_runs_every_stage_and_prints_the_table(demo) -> None:
    recipe, proc, out = demo["recipe"], demo["proc"], demo["out"]
    assert proc.returncode == 0, out[-4000:]
    for stage in (1, 2, 5, 10, 11, 12, 13, 14):
        assert f"stage {stage}:" in out, stage
    assert "nltk" not in out
    assert DEMO_FINISHED.search(out), out[-500:]

    # Stage 1: SLURP-layout corpus -> data dirs with "<intent> <TRANSCRIPT>" text and metadata.json speakers.
    corpus = recipe / "downloads" / "demo_templates_16_4_6"
    assert (corpus / "dataset" / "slurp" / "metadata.json").is_file()
    n_utts = {}
    for name, n_sentences in zip(("train", "devel", "test"), map(int, DEMO_SENTENCES.split(","))):
        texts = (recipe / "data" / name / "text").read_text().splitlines()
        n_utts[name] = len(texts)
        assert len(texts) == 2 * n_sentences
        for line in texts:
            utt, label, transcript = line.split(maxsplit=2)
            assert re.fullmatch(r"[a-z]+_[a-z_]+", label) and transcript == transcript.upper(), line
        speakers = {line.split()[1] for line in (recipe / "data" / name / "utt2spk").read_text().splitlines()}
        assert all(re.fullmatch(r"demo-\d\d", s) for s in speakers), speakers
    # char tokens with the intent labels whole: CTC emits an intent in one frame instead of spelling it
    tokens = set((recipe / "data" / "token_list" / "char" / "tokens.txt").read_text().split())
    intents = {
        line.split()[1] for line in (recipe / "dump" / "raw" / "train" / "text").read_text().splitlines()
    }
    assert intents <= tokens and "_" not in tokens
    assert set((recipe / "data" / "token_list" / "char" / "nlsyms.txt").read_text().split()) == intents

    exp = recipe / "exp"
    dense, pruned = exp / "asr_demo_dense", exp / "asr_demo_hj_mac" / "pruned"
    assert (exp / "asr_demo_hj_mac" / "latest.pth").is_file() and (pruned / "model.pth").is_file()
    for run in (dense, pruned):
        hyps = (run / "decode_ctc_greedy" / "test" / "1best_recog" / "text").read_text().splitlines()
        assert len(hyps) == n_utts["test"]
        results = (exp / run.relative_to(exp).parts[0] / "RESULTS.md").read_text()
        assert "intent acc (%)" in results and re.search(rf"\|test\|{n_utts['test']}\|", results), results

    # The printed table: dense first (the 100% reference), then the mask-removed HJ-MAC model.
    table_file = exp / "asr_demo_table.md"
    assert table_file.read_text().strip() in out
    rows = _table(table_file)
    assert [r["model"] for r in rows] == ["dense", "HJ-MAC"]
    # MACs and latency at the length the HJ-MAC budget is priced at (its config's reference_seconds)
    pruning = yaml.safe_load((exp / "asr_demo_hj_mac" / "config.yaml").read_text())["encoder_conf"]["pruning"]
    macs = f"GMACs / {pruning['reference_seconds']:g} s"
    assert {"SSL params M", macs, f"CPU ms / {pruning['reference_seconds']:g} s", "test intent acc %"} <= set(
        rows[0]
    )
    assert "test WER %" in rows[0]

    def percent(cell: str) -> int:  # "0.02 (69%)": relative to the dense model
        return int(re.fullmatch(r"[\d.]+ \((\d+)%\)", cell).group(1))

    assert percent(rows[0]["SSL params M"]) == percent(rows[0][macs]) == 100
    assert percent(rows[1]["SSL params M"]) < 100 and percent(rows[1][macs]) < 100, rows
    # The SLU demo prunes CNN channels and FFN units only: every attention head of the dense model stays.
    geometry = {
        name: yaml.safe_load((run / "config.yaml").read_text())["encoder_conf"]["model_config"]
        for name, run in (("dense", dense), ("pruned", pruned))
    }
    assert geometry["pruned"]["num_heads"] == geometry["dense"]["num_heads"]
    assert geometry["pruned"]["ffn_dims"] != geometry["dense"]["ffn_dims"] or (
        geometry["pruned"]["conv_layers"] != geometry["dense"]["conv_layers"]
    )
    # The accuracy in the table is that of the decoded intents (recomputed here from the decoded text).
    # One epoch of a smoke run does not learn the held-out phrasings, so it is not compared with chance
    # (100 / the number of intents); test_full_demo_is_well_above_chance does that on the full demo.
    for r, run in zip(rows, (dense, pruned)):
        accuracy = _intent_accuracy(
            recipe / "dump" / "raw" / "test" / "text",
            run / "decode_ctc_greedy" / "test" / "1best_recog" / "text",
        )
        assert float(r["test intent acc %"]) == pytest.approx(accuracy, abs=0.051), (r, accuracy)


def _first_words(path: Path) -> Dict[str, str]:
    """utt -> first word of its text ("" for an empty text)."""
    return {(line.split() or [""])[0]: (line.split() + [""])[1] for line in path.read_text().splitlines()}


def _intent_accuracy(reference: Path, hypothesis: Path) -> float:
    """% of the reference utterances whose decoded first word is their intent label."""
    refs, hyps = _first_words(reference), _first_words(hypothesis)
    return 100.0 * sum(hyps.get(utt) == intent for utt, intent in refs.items()) / len(refs)


FULL_DEMO = os.environ.get("ESPNET_PRUNE_FULL_DEMO") == "1"


@needs_espeak
@pytest.mark.skipif(
    not FULL_DEMO,
    reason="the full SLURP demo takes about 20 min on 2 CPU cores: set ESPNET_PRUNE_FULL_DEMO=1",
)
def test_full_demo_is_well_above_chance(tmp_path: Path) -> None:
    """The demo as shipped (800 / 100 / 150 sentences, its own configs) recognises intents of unseen
    phrasings far above chance (README: dense 68.3%, HJ-MAC 39-50% over three seeds, chance 6.25%)."""
    recipe = _copy_recipe(tmp_path)
    proc = subprocess.run(
        ["./run.sh", "--demo", "true", "--python", sys.executable],
        cwd=recipe,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    test_text = recipe / "dump" / "raw" / "test" / "text"
    chance = 100.0 / len(set(_first_words(test_text).values()))
    rows = {r["model"]: float(r["test intent acc %"]) for r in _table(recipe / "exp" / "asr_demo_table.md")}
    assert rows["dense"] >= chance + 40.0 and rows["HJ-MAC"] >= chance + 20.0, (rows, chance)


SHARED_SLURP = REPO.parent / "shared" / "data" / "slurp"


@needs_espeak
@pytest.mark.skipif(not (SHARED_SLURP / "test.jsonl").is_file(), reason="../shared/data/slurp is absent")
def test_demo_source_real_slurp_speaks_the_real_sentences(tmp_path: Path) -> None:
    """Stage 1 of `run.sh --demo true --demo_source real_slurp`: devel.jsonl -> train + devel, test.jsonl -> test."""
    recipe = _copy_recipe(tmp_path)
    proc = subprocess.run(
        [
            "local/data.sh",
            "--demo",
            "true",
            "--demo_source",
            "real_slurp",
            "--demo_limit",
            "10",
            "--slurp_annotations",
            str(SHARED_SLURP),
            "--python",
            sys.executable,
        ],
        cwd=recipe,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (recipe / "downloads" / "demo_real_slurp_10" / "dataset" / "slurp" / "test.jsonl").is_file()
    texts = {
        name: (recipe / "data" / name / "text").read_text().splitlines()
        for name in ("train", "devel", "test")
    }
    assert [len(texts[n]) for n in ("train", "devel", "test")] == [
        9,
        1,
        10,
    ]  # every 10th devel sentence: devel
    real = {}
    for line in (SHARED_SLURP / "test.jsonl").read_text().splitlines():
        record = json.loads(line)
        for recording in record["recordings"]:
            real[Path(recording["file"]).stem] = f"{record['scenario']}_{record['action']}"
    for line in texts["test"]:
        utt, label, _ = line.split(maxsplit=2)
        speaker, stem = utt.split("_", 1)
        assert re.fullmatch(r"demo-\d\d", speaker) and real[stem] == label, line


TUNING = sorted((RECIPE / "conf" / "tuning").glob("*.yaml"))
VARIANTS = {
    "dense": None,
    "hj_mac_50": "mac",
    "hj_size_50": "size",
    "hj_sep_size_50": "sep_size",
    "transformer_only_50": "transformer_only",
    "hj_mac_50_att": "mac",
    "hj_latency_50": "latency",
}


def test_tuning_configs_cover_the_paper_variants() -> None:
    names = {p.stem.replace("train_wav2vec2_base_", "") for p in TUNING}
    assert names == set(VARIANTS)


@pytest.mark.parametrize("config", TUNING, ids=lambda p: p.stem)
def test_tuning_config_builds_and_trains_a_step(config: Path, tmp_path: Path) -> None:
    """Each wav2vec2-base config, with the tiny model in place of the checkpoint, builds the intended
    ESPnet model (pruning variant, CTC only or CTC + Transformer decoder) and gives a finite loss."""
    from espnet_prune.espnet import PrunedASRTask

    raw = yaml.safe_load(config.read_text())
    assert "ssl_checkpoint" in raw["encoder_conf"]  # run.sh fills it with --ssl_checkpoint
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>", "alarm_set", "<space>", "A", "B", "<sos/eos>"]) + "\n")
    args = PrunedASRTask.get_parser().parse_args(
        [
            "--config",
            str(config),
            "--encoder_conf",
            f"model_config={TINY_MODEL}",
            "--token_list",
            str(tokens),
            "--output_dir",
            str(tmp_path / "exp"),
        ]
    )
    variant = VARIANTS[config.stem.replace("train_wav2vec2_base_", "")]
    if variant == "latency":  # a table as profile would measure for this geometry
        from test_latency import synthetic_table

        seconds = raw["encoder_conf"]["pruning"]["reference_seconds"]
        synthetic_table(Wav2Vec2Config.load_yaml(TINY_MODEL), seconds).save(tmp_path / "table.json")
        args.encoder_conf["pruning"]["latency_table"] = str(tmp_path / "table.json")
    model = PrunedASRTask.build_model(args)
    controller = model.encoder.ssl.controller
    if variant is None:
        assert controller is None
    else:
        assert args.model == "pruned_espnet" and controller.cfg.variant == variant
    has_decoder = config.stem.endswith("_att")
    assert (model.decoder is not None) == has_decoder
    assert model.ctc_weight == (0.3 if has_decoder else 1.0)
    model.train()
    torch.manual_seed(0)
    loss, stats, _ = model(
        speech=torch.randn(2, 16000) * 0.1,
        speech_lengths=torch.tensor([16000, 12000]),
        text=torch.tensor([[2, 4, 5], [2, 5, -1]]),
        text_lengths=torch.tensor([3, 2]),
    )
    assert torch.isfinite(loss)
    if has_decoder:
        assert "acc" in stats


def test_run_sh_needs_a_checkpoint_and_a_corpus(tmp_path: Path) -> None:
    recipe = _copy_recipe(tmp_path)
    proc = subprocess.run(
        ["./run.sh", "--stage", "10"], cwd=recipe, env=_env(), capture_output=True, text=True
    )
    assert proc.returncode == 1 and "give --ssl_checkpoint" in proc.stderr
    proc = subprocess.run(
        ["local/data.sh", "--slurp_dir", str(tmp_path / "nowhere")],
        cwd=recipe,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "--download true" in proc.stderr and "nowhere" in proc.stderr
    proc = subprocess.run(
        ["./run.sh", "--demo", "true", "--local_data_opts", "--demo_source bogus"],
        cwd=recipe,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "templates or real_slurp" in proc.stderr


# ------------------------------------------------------------------------------------------ entity mode

ENTITY_RECORDS = {  # SLURP's jsonl fields (tokens left out: the preparation does not read them)
    "train": [("wake me up at six", "wake me up at [time : six]", [("time", [4])], "alarm", "set")],
    "devel": [("is it sunny", "is it sunny", [], "weather", "query")],
    "test": [
        (
            "wake me up at seven am tomorrow",
            "wake me up at [time : seven am] [date : Tomorrow]",
            [("time", [4, 5]), ("date", [6])],
            "alarm",
            "set",
        ),
        ("is it raining", "is it raining", [], "weather", "query"),
        (
            "turn off the lights in the kitchen",
            "turn off the lights in the [house_place : kitchen]",
            [("house_place", [6])],
            "iot",
            "hue_lightoff",
        ),
    ],
}


def _entity_corpus(root: Path) -> Path:
    """A SLURP-layout corpus of ENTITY_RECORDS with one second of noise per recording; returns root."""
    import numpy as np
    import soundfile as sf

    annotations, audio = root / "dataset" / "slurp", root / "audio" / "slurp_real"
    annotations.mkdir(parents=True)
    audio.mkdir(parents=True)
    slurp_id = 0
    for name, records in ENTITY_RECORDS.items():
        lines = []
        for sentence, annotation, entities, scenario, action in records:
            slurp_id += 1
            lines.append(
                json.dumps(
                    {
                        "slurp_id": slurp_id,
                        "sentence": sentence,
                        "sentence_annotation": annotation,
                        "intent": f"{scenario}_{action}",
                        "scenario": scenario,
                        "action": action,
                        "entities": [{"type": t, "span": span} for t, span in entities],
                        "recordings": [{"file": f"audio-{slurp_id}.flac"}],
                    }
                )
            )
            noise = np.random.default_rng(slurp_id).normal(0, 0.05, 16000).astype(np.float32)
            sf.write(str(audio / f"audio-{slurp_id}.flac"), noise, 16000)
        (annotations / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_entity_mode_prepares_entity_texts_and_scores_slu_f1(tmp_path: Path, monkeypatch, capsys) -> None:
    """run.sh --local_data_opts "--entity true", stages 1-2 (no training), on a three-utterance test set;
    then stage 13's
    scoring and the demo table of a hypothesis file, against hand counts."""
    recipe = _copy_recipe(tmp_path)
    corpus = _entity_corpus(tmp_path / "slurp")
    proc = subprocess.run(
        [
            "./run.sh",
            "--stage",
            "1",
            "--stop_stage",
            "2",
            "--local_data_opts",
            f"--entity true --slurp_dir {corpus}",
            "--python",
            sys.executable,
        ],
        cwd=recipe,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    references = (recipe / "dump" / "raw" / "test" / "text").read_text().splitlines()
    assert references == [
        "audio-3 alarm_set sep [date] fill TOMORROW sep [time] fill SEVEN AM sep WAKE ME UP AT SEVEN AM TOMORROW",
        "audio-4 weather_query sep IS IT RAINING",
        "audio-5 iot_hue_lightoff sep [house_place] fill KITCHEN sep TURN OFF THE LIGHTS IN THE KITCHEN",
    ]
    assert (
        recipe / "data" / "train" / "text"
    ).read_text() == "audio-1 alarm_set sep [time] fill SIX sep WAKE ME UP AT SIX\n"

    run_dir = recipe / "exp" / "asr_x" / "pruned"
    hyp = run_dir / "decode_ctc" / "test" / "1best_recog" / "text"
    hyp.parent.mkdir(parents=True)
    hyp.write_text(
        "\n".join(
            [
                # SEVEN for SEVEN AM, no date
                "audio-3 alarm_set sep [time] fill SEVEN sep WAKE ME UP AT SEVEN TOMORROW",
                "audio-4 weather_query sep IS IT RAINING",
                "audio-5 iot_hue_lighton sep [house_place] fill KITCHEN sep TURN ON THE LIGHTS IN THE KITCHEN",
            ]
        )
        + "\n"
    )
    # Hand counts. Intent 2/3, scenario 3/3, action 2/3 (hue_lighton).
    # span: [time] SEVEN is no exact match -> TP 1 (kitchen), FP 1, FN 2; F1 = 2TP / (2TP + FP + FN) = 2/5
    # word: SEVEN vs SEVEN AM at 1/2, date missed -> TP 2, FP 0.5, FN 1.5; F1 = 4/6
    # char: SEVEN vs SEVEN AM at 3/8 -> TP 2, FP 0.375, FN 1.375; F1 = 4/5.75
    # SLU-F1: TP 4, FP 0.875, FN 2.875; F1 = 8/11.75; precision 4/4.875, recall 4/6.875
    # WER of the transcripts: AM deleted, OFF -> ON over 7 + 3 + 7 words = 2/17;
    # CER: " AM" (3) and OFF -> ON (2) over 31 + 13 + 34 characters = 5/78
    monkeypatch.setattr(score, "model_geometry", lambda config, model, trust: (tiny_config(), 123456))
    results = run_dir / "decode_ctc" / "RESULTS.md"
    score.main(
        [
            "--dump_dir",
            str(recipe / "dump" / "raw"),
            "--decode_dir",
            str(run_dir / "decode_ctc"),
            "--sets",
            "test",
            "--asr_train_config",
            str(run_dir / "config.yaml"),
            "--entity",
            "--out",
            str(results),
        ]
    )
    text = results.read_text()
    assert (
        "|dataset|#utts|#words|WER (%)|CER (%)|intent acc (%)|scenario acc (%)|action acc (%)|SLU-F1 (%)|"
        "span F1 (%)|word-distance F1 (%)|char-distance F1 (%)|"
    ) in text
    assert "|test|3|17|11.8|6.4|66.7|100.0|66.7|68.1|40.0|66.7|69.6|" in text
    assert "|test|SLU-F1|82.1|58.2|68.1|4|0.875|2.875|" in text
    assert "|test|span F1|50.0|33.3|40.0|1|1.000|2.000|" in text

    capsys.readouterr()  # score's printout
    monkeypatch.setattr(
        compare, "measure_run", lambda run, seconds, repeats, trust: (1_000_000, 2_000_000_000, 0.05)
    )
    compare.main(
        [
            "--dump_dir",
            str(recipe / "dump" / "raw"),
            "--sets",
            "test",
            "--entity",
            "--run",
            f"HJ-MAC={run_dir}",
        ]
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert rows[0].startswith("| model |") and rows[0].endswith(
        "| test intent acc % | test SLU-F1 % | test span F1 % | test WER % | test CER % |"
    )
    assert rows[2].endswith("| 66.7 | 68.1 | 40.0 | 11.8 | 6.4 |")


def test_entity_option_reaches_scoring_and_the_demo_table(tmp_path: Path) -> None:
    """--score_opts --entity (with --local_data_opts "--entity true" for the data, tested above) reaches
    bin/score next to --intent_first, for a run and for the demo, and the demo's bin/compare: seen through a
    stand-in python that logs its calls (and answers yes to "is this a gated run?")."""
    recipe = _copy_recipe(tmp_path)
    calls = tmp_path / "calls.txt"
    fake_python = tmp_path / "python"
    fake_python.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fake_python.chmod(0o755)
    for tag in ("asr_x", "asr_demo_entity_dense", "asr_demo_entity_hj_mac"):  # what stage 13 reads
        (recipe / "exp" / tag / "pruned" / "decode_ctc_greedy" / "test" / "1best_recog").mkdir(parents=True)
        (recipe / "exp" / tag / "config.yaml").write_text("")
        (recipe / "exp" / tag / "pruned" / "model.pth").write_text("")
        (recipe / "exp" / tag / "pruned" / "decode_ctc_greedy" / "test" / "1best_recog" / "text").write_text(
            ""
        )
    for args in (
        ["--asr_tag", "asr_x", "--test_sets", "test"],
        ["--demo", "true", "--demo_tag", "asr_demo_entity"],
    ):
        calls.write_text("")
        proc = subprocess.run(
            [
                "./run.sh",
                *args,
                "--stage",
                "13",
                "--stop_stage",
                "13",
                "--score_opts",
                "--entity",
                "--python",
                str(fake_python),
            ],
            cwd=recipe,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        scoring = [c for c in calls.read_text().splitlines() if c.startswith("-m espnet_prune.bin.score")]
        assert scoring and all(c.endswith("--intent_first --entity") for c in scoring), scoring
    assert "exp/asr_demo_entity_hj_mac/pruned/decode_ctc_greedy" in "\n".join(scoring)
    [comparing] = [c for c in calls.read_text().splitlines() if c.startswith("-m espnet_prune.bin.compare")]
    assert " --intent_first --entity " in comparing and "exp/asr_demo_entity_table.md" in comparing
