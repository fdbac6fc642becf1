"""The recipes' python stages (formatting, token lists, scoring) and their shell (the TEMPLATE stage runner's
options, help and errors, the job launcher, the shared configs)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from espnet_prune.bin import format_data, make_tokens
from espnet_prune.data.errors import DataPrepError
from espnet_prune.data.kaldi import Utterance, write_data_dir
from espnet_prune.eval.scoring import read_text_table, score


def _write(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def test_wer_cer_and_intent_accuracy_match_hand_counts(tmp_path):
    ref = _write(
        tmp_path / "ref",
        ["u1 alarm_set WAKE ME UP AT SEVEN", "u2 weather_query IS IT RAINING", "u3 music_play PLAY JAZZ"],
    )
    hyp = _write(
        tmp_path / "hyp",
        ["u3 music_play PLAY JAZZ", "u1 alarm_set WAKE ME UP AT ELEVEN", "u2 alarm_query IS IT"],
    )
    result = score(ref, hyp, intent_first=True)
    assert result.utterances == 3 and result.words == 10
    assert result.intent_accuracy == pytest.approx(2 / 3)
    # transcripts: 1 substitution (SEVEN/ELEVEN) + 1 deletion (RAINING) over 10 words
    assert result.wer == pytest.approx(2 / 10)
    plain = score(ref, hyp)
    # with the intent as a word: u2's intent is also substituted, over 13 words
    assert plain.words == 13 and plain.wer == pytest.approx(3 / 13)


def test_missing_hypothesis_and_duplicate_ids_name_the_file(tmp_path):
    ref = _write(tmp_path / "ref", ["u1 A B", "u2 C"])
    with pytest.raises(ValueError, match=r"hyp: no hypothesis for 1 reference utterance\(s\), e.g. 'u2'"):
        score(ref, _write(tmp_path / "hyp", ["u1 A B"]))
    with pytest.raises(ValueError, match=r"dup:2: duplicate utterance id 'u1'"):
        read_text_table(_write(tmp_path / "dup", ["u1 A", "u1 B"]))
    assert read_text_table(_write(tmp_path / "empty_hyp", ["u1", "u2 C"])) == {"u1": "", "u2": "C"}


def test_char_and_bpe_token_lists_follow_espnet_layout(tmp_path):
    text = _write(tmp_path / "text", ["a HELLO WORLD", "b HELLO THERE", "c A WORLD OF WORDS"])
    chars = make_tokens.make_tokens(text, "char", 0, tmp_path / "char").read_text().split()
    assert chars[:2] == ["<blank>", "<unk>"] and chars[-1] == "<sos/eos>"
    # by descending count (ties by name): L 6, O 6, <space> 5, E 4, R 4
    assert chars[2:7] == ["L", "O", "<space>", "E", "R"]
    assert set(chars[2:-1]) == set("HELOWRDTAFS") | {"<space>"}
    bpe_dir = tmp_path / "bpe"
    tokens = make_tokens.make_tokens(text, "bpe", 15, bpe_dir).read_text().split()
    assert (bpe_dir / "bpe.model").is_file() and tokens[0] == "<blank>" and tokens[-1] == "<sos/eos>"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_bpe_keeps_intent_labels_whole_with_intent_first(tmp_path):
    import sentencepiece as spm

    words = "WAKE ME UP AT SEVEN ANY ALARMS FOR TOMORROW IS IT RAINING IN LONDON TODAY PLEASE SET AN ALARM".split()
    intents = ["alarm_set", "alarm_query", "weather_query"]
    text = _write(
        tmp_path / "text",
        [
            f"u{i:02d} {intents[i % 3]} " + " ".join(words[(i * 7 + k) % len(words)] for k in range(5))
            for i in range(30)
        ],
    )
    pieces = {}
    for intent_first in (False, True):
        out_dir = tmp_path / f"bpe_{intent_first}"
        tokens = (
            make_tokens.make_tokens(text, "bpe", 45, out_dir, intent_first=intent_first).read_text().split()
        )
        model = spm.SentencePieceProcessor(model_file=str(out_dir / "bpe.model"))
        pieces[intent_first] = model.encode("alarm_query ANY", out_type=str)
        assert model.decode(model.encode("alarm_query ANY")) == "alarm_query ANY"
        assert (set(intents) <= set(tokens)) == intent_first
    assert "alarm_query" not in pieces[False]  # spelled in pieces without the option
    assert pieces[True][:2] == ["▁", "alarm_query"]


def test_char_intents_are_whole_tokens_that_espnets_char_tokenizer_reproduces(tmp_path):
    from espnet2.text.char_tokenizer import CharTokenizer

    text = _write(
        tmp_path / "text", ["u1 alarm_set WAKE ME UP", "u2 weather_query IS IT RAINING", "u3 alarm_query"]
    )
    tokens = (
        make_tokens.make_tokens(text, "char", 0, tmp_path / "char", intent_first=True).read_text().split()
    )
    nlsyms = tmp_path / "char" / "nlsyms.txt"
    assert nlsyms.read_text().split() == ["alarm_query", "alarm_set", "weather_query"]
    assert (
        {"alarm_set", "alarm_query", "weather_query"} <= set(tokens)
        and "_" not in tokens
        and "q" not in tokens
    )
    tokenizer = CharTokenizer(non_linguistic_symbols=nlsyms)
    for line in text.read_text().splitlines():
        pieces = tokenizer.text2tokens(line.split(maxsplit=1)[1])
        assert pieces[0] == line.split()[1] and set(pieces) <= set(tokens), pieces
        assert tokenizer.tokens2text(pieces) == line.split(maxsplit=1)[1]


def test_format_drops_out_of_range_audio_and_writes_all_sets_or_none(tmp_path):
    utts = []
    for i, seconds in enumerate([0.2, 1.0, 3.0]):
        path = tmp_path / f"spk-{i}.wav"
        sf.write(path, np.zeros(int(seconds * 16000), dtype=np.float32), 16000)
        utts.append(Utterance(f"spk-{i}", "spk", str(path), f"TEXT {i}"))
    write_data_dir(tmp_path / "data" / "train", utts)
    counts = format_data.format_sets(tmp_path / "data", tmp_path / "dump", ["train"], 0.5, 2.0)
    assert counts == {"train": (1, 0)}
    assert (tmp_path / "dump" / "train" / "utt2num_samples").read_text() == "spk-1 16000\n"
    with pytest.raises(DataPrepError, match="no utterance between 5.0 and 9.0 s"):
        format_data.format_sets(tmp_path / "data", tmp_path / "dump2", ["train"], 5.0, 9.0)
    assert not (tmp_path / "dump2" / "train").exists()
    with pytest.raises(DataPrepError, match="missing"):
        format_data.format_sets(tmp_path / "data", tmp_path / "dump3", ["train", "absent"], 0.5, 2.0)
    assert not (tmp_path / "dump3").exists() or not any((tmp_path / "dump3").iterdir())


def test_entity_mode_markup_is_whole_tokens_for_char_and_bpe(tmp_path, capsys):
    """SLURP entity mode: the intent, sep, fill and each [type] are single tokens that ESPnet's tokenizers
    reproduce; bracketed types are prefix-free, and a symbol that is a prefix of another is warned about."""
    import sentencepiece as spm
    from espnet2.text.char_tokenizer import CharTokenizer

    text = _write(
        tmp_path / "text",
        [
            "u1 alarm_set sep [time] fill SEVEN AM sep [timeofday] fill TONIGHT sep WAKE ME TONIGHT AT SEVEN AM",
            "u2 datetime_query sep [date] fill TODAY sep WHAT IS THE DATE TODAY",
            "u3 alarm_query sep ANY ALARMS",
        ],
    )
    tokens = (
        make_tokens.make_tokens(text, "char", 0, tmp_path / "char", intent_first=True).read_text().split()
    )
    symbols = ["[date]", "[time]", "[timeofday]", "alarm_query", "alarm_set", "datetime_query", "fill", "sep"]
    assert (tmp_path / "char" / "nlsyms.txt").read_text().split() == symbols
    assert set(symbols) <= set(tokens) and not {"[", "]", "_", "s", "f"} & set(tokens)
    assert "warning" not in capsys.readouterr().err  # no symbol is a prefix of another
    tokenizer = CharTokenizer(non_linguistic_symbols=tmp_path / "char" / "nlsyms.txt")
    line = text.read_text().splitlines()[0].split(maxsplit=1)[1]
    assert tokenizer.text2tokens(line)[:12] == [
        "alarm_set",
        "<space>",
        "sep",
        "<space>",
        "[time]",
        "<space>",
        "fill",
        "<space>",
        "S",
        "E",
        "V",
        "E",
    ]
    assert tokenizer.text2tokens(line).count("[timeofday]") == 1

    bpe = tmp_path / "bpe"
    tokens = make_tokens.make_tokens(text, "bpe", 36, bpe, intent_first=True).read_text().split()
    assert set(symbols) <= set(tokens)
    pieces = spm.SentencePieceProcessor(model_file=str(bpe / "bpe.model")).encode(line, out_type=str)
    assert {"sep", "fill", "[time]", "[timeofday]"} <= set(pieces)

    # bare types would be prefixes of one another: ESPnet's CharTokenizer could split them either way
    bare = _write(tmp_path / "bare", ["u1 time_set A", "u2 timeofday_set B"])
    make_tokens.make_tokens(bare, "char", 0, tmp_path / "bare_char", intent_first=True)
    assert "symbol 'time_set' is a prefix" not in capsys.readouterr().err
    bare = _write(tmp_path / "bare", ["u1 time A", "u2 timeofday B"])
    make_tokens.make_tokens(bare, "char", 0, tmp_path / "bare_char", intent_first=True)
    assert "non-linguistic symbol 'time' is a prefix of 'timeofday'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- recipe shell

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "egs2" / "TEMPLATE" / "asr1"
RECIPES = [REPO / "egs2" / "librispeech" / "asr1", REPO / "egs2" / "slurp" / "asr1"]


def _env():
    """The recipes call `python3 -m ...`: this interpreter's bin dir first on PATH."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def _librispeech_copy(root: Path) -> Path:
    shutil.copytree(TEMPLATE, root / "egs2" / "TEMPLATE" / "asr1", symlinks=True)
    recipe = root / "egs2" / "librispeech" / "asr1"
    shutil.copytree(
        RECIPES[0], recipe, symlinks=True, ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads")
    )
    return recipe


def _options_of_the_template():
    """name -> default of every variable between the option markers of pruned_asr.sh."""
    block = (
        (TEMPLATE / "pruned_asr.sh")
        .read_text()
        .split("# ---- options begin")[1]
        .split("# ---- options end")[0]
    )
    return dict(re.findall(r"^([a-z_]+)=(\S*)", block, flags=re.M))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.parent.name)
def test_run_sh_help_lists_every_option_and_a_typo_is_an_error(recipe):
    proc = subprocess.run(
        ["./run.sh", "--help"], cwd=recipe, env=_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    options = _options_of_the_template()
    assert {"stage", "ngpu", "num_nodes", "inference_config", "gpu_inference", "train_module", "demo"} <= set(
        options
    )
    for name, default in options.items():
        assert re.search(rf"^ +--{name} +{re.escape(default)} ", proc.stdout, flags=re.M), name
    assert "14 packing" in proc.stdout
    proc = subprocess.run(
        ["./run.sh", "--stopstage", "3"], cwd=recipe, env=_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and "unknown option --stopstage" in proc.stderr


def test_run_sh_passes_everything_to_the_template():
    """run.sh holds variables and one call of pruned_asr.sh with "$@": no option parsing of its own."""
    for recipe in RECIPES:
        script = (recipe / "run.sh").read_text()
        assert (
            script.rstrip().endswith('"$@"')
            and "parse_options" not in script
            and script.count("./pruned_asr.sh") == 1
        )


@pytest.mark.parametrize(
    "stage, missing",
    [
        (2, "data/train_clean_100/wav.scp: missing (run stage 1)"),
        (5, "dump/raw/train_clean_100/text: missing (run stage 2)"),
        (10, "dump/raw/train_clean_100/wav.scp: missing (run stage 2)"),
        (11, "dump/raw/train_clean_100/wav.scp: missing (run stage 2)"),
        (12, "exp/asr_train_wav2vec2_base_hj_mac_50/config.yaml: missing (run stage 11)"),
        (13, "exp/asr_train_wav2vec2_base_hj_mac_50/config.yaml: missing (run stage 11)"),
        (14, "exp/asr_train_wav2vec2_base_hj_mac_50/config.yaml: missing (run stage 11)"),
    ],
)
def test_a_stage_with_nothing_to_work_on_fails_naming_what_is_missing(stage, missing, tmp_path):
    recipe = _librispeech_copy(tmp_path)
    proc = subprocess.run(
        ["./run.sh", "--stage", str(stage), "--stop_stage", str(stage), "--ssl_checkpoint", "x.pt"],
        cwd=recipe,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"pruned_asr.sh: error: {missing}"]


def test_stage_1_without_a_corpus_fails_naming_it(tmp_path):
    recipe = _librispeech_copy(tmp_path)
    proc = subprocess.run(
        [
            "./run.sh",
            "--stage",
            "1",
            "--stop_stage",
            "1",
            "--local_data_opts",
            f"--librispeech_dir {tmp_path / 'nowhere'}",
        ],
        cwd=recipe,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        f"error: {tmp_path / 'nowhere' / 'train-clean-100'}: subset folder missing (give --librispeech_dir the "
        "folder holding the subsets, usually .../LibriSpeech)"
    ]


def test_decoding_scoring_and_packing_name_their_missing_inputs(tmp_path):
    """With a trained (dense) run in place: stage 12 needs the test set, 13 the hypotheses, 14 RESULTS.md."""
    recipe = _librispeech_copy(tmp_path)
    exp = recipe / "exp" / "asr_dense"
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text("encoder: pruned_wav2vec2\nencoder_conf: {}\n")
    (exp / "latest.pth").write_bytes(b"")
    (recipe / "data" / "token_list" / "bpe").mkdir(parents=True)
    (recipe / "data" / "token_list" / "bpe" / "tokens.txt").write_text("<blank>\n")
    args = ["--asr_tag", "asr_dense", "--test_sets", "test_clean"]
    for stage, missing in (
        (12, "dump/raw/test_clean/wav.scp: missing (run stage 2)"),
        (13, "exp/asr_dense/decode_ctc_greedy/test_clean/1best_recog/text: missing (run stage 12)"),
        (14, "exp/asr_dense/RESULTS.md: missing (run stage 13)"),
    ):
        proc = subprocess.run(
            ["./run.sh", "--stage", str(stage), "--stop_stage", str(stage), *args],
            cwd=recipe,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1 and proc.stderr.splitlines() == [f"pruned_asr.sh: error: {missing}"], (
            proc.stderr
        )


def test_training_without_a_checkpoint_names_the_option(tmp_path):
    recipe = _librispeech_copy(tmp_path)
    proc = subprocess.run(
        ["./run.sh", "--stage", "10"], cwd=recipe, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        "pruned_asr.sh: error: conf/tuning/train_wav2vec2_base_hj_mac_50.yaml has ssl_checkpoint: null: "
        "give --ssl_checkpoint (a wav2vec2/HuBERT checkpoint)"
    ]


def test_job_launcher_fans_out_with_one_log_per_job(tmp_path):
    launcher = TEMPLATE / "utils" / "run_jobs.sh"
    proc = subprocess.run(
        [
            str(launcher),
            "JOB=1:3",
            "log/job.JOB.log",
            "echo",
            "job JOB of 3",
            ";",
            "[",
            "JOB",
            "-ne",
            "2",
            "]",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        proc.returncode == 1 and proc.stderr.strip() == "run_jobs.sh: 1 / 3 job(s) failed, see log/job.2.log"
    )
    for job in (1, 2, 3):
        log = (tmp_path / "log" / f"job.{job}.log").read_text().splitlines()
        assert log[0] == f"# echo job\\ {job}\\ of\\ 3 ; [ {job} -ne 2 ] " and log[2] == f"job {job} of 3"
        assert log[3].startswith(f"# Ended (code {int(job == 2)}) at")
    # espnet2.bin.launch's form: --gpu N LOG COMMAND (one job)
    proc = subprocess.run(
        [str(launcher), "--gpu", "0", "one.log", "echo", "a b"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0 and (tmp_path / "one.log").read_text().splitlines()[2] == "a b"


def test_tuning_configs_carry_their_pruning_preset():
    """One source of truth: each tuning config's pruning block is the preset of conf/pruning/ its comment
    names, with only warmup_updates (which depends on the recipe's number of updates) set for the recipe."""
    checked = 0
    for config in sorted(REPO.glob("egs2/*/asr1/conf/tuning/*.yaml")):
        text = config.read_text()
        block = yaml.safe_load(text)["encoder_conf"].get("pruning")
        if block is None:
            continue
        preset = REPO / re.search(r"^    pruning: +# (conf/pruning/\S+\.yaml) ", text, flags=re.M).group(1)
        assert block == {**yaml.safe_load(preset.read_text()), "warmup_updates": block["warmup_updates"]}, (
            config
        )
        checked += 1
    assert checked == 13  # every gated tuning config of both recipes


def test_demo_configs_live_once_in_the_template():
    demo = TEMPLATE / "conf" / "demo"
    assert sorted(p.name for p in demo.iterdir()) == [
        "model.yaml",
        "train_dense.yaml",
        "train_hj_mac.yaml",
        "train_hj_mac_keep_attention.yaml",
        "train_standin.yaml",
    ]
    for recipe in RECIPES:
        assert (recipe / "conf" / "demo").resolve() == demo.resolve()
        assert not [
            p
            for p in (recipe / "conf").rglob("*")
            if p.is_file() and not p.is_symlink() and p.parent.name == "demo"
        ]


def test_every_shared_config_is_used():
    """A config under conf/ or a recipe's conf/ that nothing names is dead: delete it."""
    texts = [
        p.read_text(errors="ignore")
        for pattern in ("**/*.py", "**/*.sh", "**/*.yaml", "**/*.md", "Makefile")
        for p in REPO.glob(pattern)
        if ".venv" not in p.parts and ".git" not in p.parts
    ]
    configs = list((REPO / "conf").rglob("*.yaml")) + [
        p for r in RECIPES for p in (r / "conf").glob("*.yaml")
    ]
    for config in configs:
        users = [t for t in texts if config.name in t and t != config.read_text(errors="ignore")]
        assert users, f"{config.relative_to(REPO)} is named nowhere"


def test_espnet_entry_points_do_not_try_to_download_nltk_data():
    """ESPnet's ASR task imports g2p_en, which downloads nltk data on import: offline, an error on the
    console. Our entry points defer that import to the first use of a g2p_en tokenizer."""
    code = "import espnet_prune.bin.asr_train, g2p_en; print('imported', type(g2p_en).__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "imported _DeferredModule" in proc.stdout, proc.stderr
    assert "nltk" not in proc.stderr, proc.stderr


def test_the_slu_demo_prunes_with_its_own_config_that_differs_only_in_the_gates_and_budget():
    """The SLURP demo's HJ-MAC leaves attention ungated (the intent needs it) and removes 50% of the MACs
    (the ASR demo 40%); everything else is the shared demo config, so the two cannot drift apart."""
    slurp = next(r for r in RECIPES if r.parent.name == "slurp")
    name = re.search(r"^demo_pruned_config=(\S+)", (slurp / "run.sh").read_text(), flags=re.M).group(1)
    assert name == "conf/demo/train_hj_mac_keep_attention.yaml"
    assert _options_of_the_template()["demo_pruned_config"] == "conf/demo/train_hj_mac.yaml"
    keep = yaml.safe_load((slurp / name).read_text())
    shared = yaml.safe_load((TEMPLATE / "conf" / "demo" / "train_hj_mac.yaml").read_text())
    gates = keep["encoder_conf"]["pruning"].pop("gates")
    assert gates == {"attention_heads": False, "attention_layers": False}
    targets = (
        keep["encoder_conf"]["pruning"].pop("target_sparsity"),
        shared["encoder_conf"]["pruning"].pop("target_sparsity"),
    )
    assert targets == (0.5, 0.4)  # the intents keep half the MACs; ASR 60%, within 3 WER points of dense
    assert keep == shared


def test_the_demo_table_counts_updates_across_resumes_and_init_param(tmp_path):
    """Each run's updates come from ESPnet's logs; a run started again (a resume, here of a finished run,
    whose new train.log has no epoch) has them in the train.N.log files ESPnet's launcher rotated."""
    from espnet_prune.bin.compare import training_updates

    def epochs(*counts):
        return "".join(
            f"INFO: {i}epoch results: [train] loss=1.0, total_count={c}, [valid] loss=2.0\n"
            for i, c in enumerate(counts, 1)
        )

    def run(name, logs, init=None):
        directory = tmp_path / name
        directory.mkdir()
        config = {"token_list": ["<blank>"], "encoder": "pruned_wav2vec2", "model_conf": {}}
        if init:
            config["init_param"] = [f"{tmp_path / init / 'latest.pth'}:encoder:encoder"]
        (directory / "config.yaml").write_text(yaml.safe_dump(config))
        for log, text in logs.items():
            (directory / log).write_text(text)
        return directory

    run("standin", {"train.log": epochs(150, 300)})
    resumed = run(
        "dense",
        {"train.log": "INFO: resumed\n", "train.1.log": epochs(450, 600), "train.2.log": epochs(150, 300)},
        init="standin",
    )
    (resumed / "pruned").mkdir()
    assert training_updates(resumed) == "300 + 600"
    assert training_updates(resumed / "pruned") == "300 + 600"  # a removed model: its training run's
    assert training_updates(run("unlogged", {"train.log": "INFO: started\n"})) == "?"
