"""End to end through ESPnet's own machinery: collect stats, HJ-MAC training, resume, mask removal, decoding,
packing.

A few espeak-ng utterances form a Kaldi-style data dir; a tiny random wav2vec2 is pruned for 2 epochs. The
main run trains with stock ``python -m espnet2.bin.asr_train`` in a fresh interpreter (the installed import
hook registers the plugin), and its removed model is packed with ``espnet2.bin.pack`` and decoded from the
archive by ESPnet's ``Speech2Text``; the rest runs in this process through our aliases, whose log is
written by a logging handler, as the shell redirect of a recipe would.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import soundfile
import torch
import torchaudio
import yaml

from conftest import TINY_MODEL, TINY_TRAIN_CONFIG

SENTENCES = [
    "HELLO WORLD",
    "GOOD MORNING",
    "OPEN THE DOOR",
    "TURN ON THE LIGHT",
    "PLAY SOME MUSIC",
    "WHAT TIME IS IT",
    "CALL MY MOTHER",
    "STOP THE ALARM",
    "READ A BOOK",
    "CLOSE THE WINDOW",
]

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def _write_data_dir(root: Path, name: str, utterances: Dict[str, str]) -> Path:
    """wav.scp, text, utt2spk, spk2utt of espeak-ng speech resampled to 16 kHz."""
    data = root / "data" / name
    (data / "wav").mkdir(parents=True)
    for utt, sentence in utterances.items():
        raw = data / "wav" / f"{utt}.22k.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), sentence], check=True)
        audio, rate = soundfile.read(raw, dtype="float32")
        audio = torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000).numpy()
        soundfile.write(data / "wav" / f"{utt}.wav", audio, 16000, subtype="PCM_16")
        raw.unlink()
    keys = sorted(utterances)
    (data / "wav.scp").write_text("".join(f"{k} {data / 'wav' / k}.wav\n" for k in keys))
    (data / "text").write_text("".join(f"{k} {utterances[k]}\n" for k in keys))
    (data / "utt2spk").write_text("".join(f"{k} espeak\n" for k in keys))
    (data / "spk2utt").write_text("espeak " + " ".join(keys) + "\n")
    return data


class Run:
    """Paths and argument lists of the tiny experiment."""

    def __init__(self, root: Path) -> None:
        self.root = root
        utts = {f"utt{i:02d}": s for i, s in enumerate(SENTENCES)}
        self.train = _write_data_dir(root, "train", {k: v for k, v in utts.items() if k < "utt08"})
        self.valid = _write_data_dir(root, "valid", {k: v for k, v in utts.items() if k >= "utt08"})
        chars = sorted({c for s in SENTENCES for c in s if c != " "})
        self.tokens = root / "tokens.txt"
        self.tokens.write_text("\n".join(["<blank>", "<unk>", "<space>", *chars, "<sos/eos>"]) + "\n")
        self.stats = root / "stats"

    def common(self) -> List[str]:
        args = [
            "--config",
            str(TINY_TRAIN_CONFIG),
            "--encoder_conf",
            f"model_config={TINY_MODEL}",
            # gates that can close within the 10 warm-up updates of the run's 16 (4.6 / gate_lr updates)
            "--encoder_conf",
            "pruning.warmup_updates=10",
            "--encoder_conf",
            "pruning.gate_lr=0.8",
            "--encoder_conf",
            "pruning.lambda_lr=20",  # lambdas of the right size within 16 updates
            "--encoder_conf",
            "pruning.gates.init_keep_prob=0.95",
            "--batch_size",
            "1",
            "--scheduler_conf",
            "warmup_steps=1",  # WarmupLR scales the gates' lr too
            "--token_type",
            "char",
            "--token_list",
            str(self.tokens),
            "--ngpu",
            "0",
            "--use_matplotlib",
            "true",
        ]
        for split, key in (("train", self.train), ("valid", self.valid)):
            args += [
                f"--{split}_data_path_and_name_and_type",
                f"{key}/wav.scp,speech,sound",
                f"--{split}_data_path_and_name_and_type",
                f"{key}/text,text,text",
            ]
        return args

    def stats_args(self) -> List[str]:
        """ESPnet's statistics collection (shape files) into ``self.stats``."""
        return self.common() + [
            "--collect_stats",
            "true",
            "--output_dir",
            str(self.stats),
            "--train_shape_file",
            str(self.train / "wav.scp"),
            "--valid_shape_file",
            str(self.valid / "wav.scp"),
        ]

    def train_args(self, out: Path, *extra: str) -> List[str]:
        return self.common() + [
            "--train_shape_file",
            str(self.stats / "train" / "speech_shape"),
            "--valid_shape_file",
            str(self.stats / "valid" / "speech_shape"),
            "--output_dir",
            str(out),
            *extra,
        ]


def _train(args: List[str], log_file: Path) -> None:
    """ESPnet training in-process, its log written to ``log_file`` (as a recipe's redirect would)."""
    from espnet_prune.bin import asr_train

    root = logging.getLogger()
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        asr_train.main(args)
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)


def _stock(module: str, args: List[str], log_file: Path) -> str:
    """``python -m module args`` of stock ESPnet in a fresh interpreter (stderr to ``log_file``): its stdout."""
    with log_file.open("w") as log:
        done = subprocess.run(
            [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=log, text=True
        )
    assert done.returncode == 0, log_file.read_text()[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """Data, stats, and one uninterrupted 2-epoch HJ-MAC training in exp/full by stock ESPnet."""
    torch.set_num_threads(2)
    run = Run(tmp_path_factory.mktemp("espnet_e2e"))
    from espnet_prune.bin import asr_train

    asr_train.main(run.stats_args())
    (run.root / "exp").mkdir()
    _stock(
        "espnet2.bin.asr_train",
        run.train_args(run.root / "exp" / "full"),
        run.root / "exp" / "train_full.log",
    )
    return run


@pytest.fixture(scope="module")
def removal(run: Run) -> Tuple[Path, str]:
    """The masks of exp/full removed into exp/removed (config.yaml, model.pth), and what removal printed."""
    from espnet_prune.bin import remove_masks

    exp = run.root / "exp" / "full"
    removed_dir = run.root / "exp" / "removed"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        remove_masks.main(
            [
                "--asr_train_config",
                str(exp / "config.yaml"),
                "--asr_model_file",
                str(exp / "latest.pth"),
                "--out_dir",
                str(removed_dir),
                "--allow_budget_miss",
            ]
        )
    return removed_dir, printed.getvalue()


def _decode(run: Run, config: Path, model_file: Path, name: str) -> Dict[str, Tuple[str, float]]:
    """utt -> (1-best tokens, score) from ESPnet's CTC beam search."""
    from espnet_prune.bin import asr_inference

    out = run.root / "decode" / name
    asr_inference.main(
        [
            "--asr_train_config",
            str(config),
            "--asr_model_file",
            str(model_file),
            "--output_dir",
            str(out),
            "--data_path_and_name_and_type",
            f"{run.valid}/wav.scp,speech,sound",
            "--ctc_weight",
            "1.0",
            "--beam_size",
            "2",
            "--maxlenratio",
            "0.1",
            "--batch_size",
            "1",
            "--ngpu",
            "0",
        ]
    )

    def read(name: str) -> Dict[str, str]:
        lines = (out / "1best_recog" / name).read_text().splitlines()
        return dict(line.split(" ", 1) if " " in line else (line, "") for line in lines)

    tokens, scores = read("token"), read("score")
    # ESPnet writes str() of a 0-dim tensor: "tensor(-27.9497)"
    return {utt: (tokens[utt], float(scores[utt].removeprefix("tensor(").rstrip(")"))) for utt in tokens}


def test_stats_reach_train_log_and_plots(run: Run) -> None:
    exp = run.root / "exp" / "full"
    log = (run.root / "exp" / "train_full.log").read_text()
    summary = [line for line in log.splitlines() if "epoch results:" in line]
    assert len(summary) == 2, log[-2000:]
    for key in (
        "loss_task",
        "loss_pruning",
        "task_loss_scale",
        "expected_params",
        "expected_gmacs",
        "exact_gmacs",
        "expected_sparsity_macs",
        "exact_sparsity_macs",
        "target_macs",
        "lambda1_macs",
        "lambda2_macs",
        "loss_ctc",
    ):
        assert f"{key}=" in summary[-1], key
    assert (exp / "images" / "expected_gmacs.png").is_file()
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["model"] == "pruned_espnet"  # chosen automatically by the pruning block
    assert config["encoder_conf"]["model_config"]["embed_dim"] == 32  # explicit, no file needed to decode
    state = torch.load(exp / "latest.pth", weights_only=True)
    assert int(state["encoder.ssl.controller.updates"]) == 16  # 2 epochs x 8 batches, accum_grad 1
    assert (state["encoder.ssl.controller.lambdas"] != 0).all()
    # The gates moved toward the target: after each epoch (validation, eval masks) the MACs cut grew, to a
    # quarter or more (the gates start at keep probability 0.95, which cuts about 3%).
    exact = [
        float(line.split("[valid]")[1].split("exact_sparsity_macs=")[1].split(",")[0]) for line in summary
    ]
    assert exact[0] < exact[1] and exact[1] >= 0.25, exact


def test_remove_masks_and_decode_gated_and_removed(run: Run, removal: Tuple[Path, str]) -> None:
    from espnet_prune.espnet import PrunedASRTask
    from espnet_prune.espnet.ssl import find_ssl
    from espnet_prune.models import Wav2Vec2Config
    from espnet_prune.pruning.cost import exact_cost, expected_cost
    from espnet_prune.pruning.gating import iter_gates

    exp = run.root / "exp" / "full"
    removed_dir, printed = removal
    assert "SSL GMACs @ 10 s" in printed and "macs @ 10 s: target 50.0%, expected" in printed

    removed_config = yaml.safe_load((removed_dir / "config.yaml").read_text())
    conf = removed_config["encoder_conf"]
    assert removed_config["model"] == "espnet" and conf["pruning"] is None and "ssl_checkpoint" not in conf
    dense, small = Wav2Vec2Config.load_yaml(TINY_MODEL), Wav2Vec2Config.from_dict(conf["model_config"])
    assert (
        exact_cost(small).params < 0.9 * exact_cost(dense).params
        and exact_cost(small).macs < 0.9 * exact_cost(dense).macs
    )
    # The cut comes from training, not from the gates' initial values: compared with the same gated model
    # as built before training, the keep probabilities fell and the expected MAC sparsity moved at least a
    # third of the way toward the 50% target.
    initial = find_ssl(PrunedASRTask.build_model_from_file(exp / "config.yaml", None)[0], gated=True)[1].model
    trained = find_ssl(
        PrunedASRTask.build_model_from_file(exp / "config.yaml", exp / "latest.pth")[0], gated=True
    )[1].model
    keep_initial, keep_trained = (
        torch.cat([g.keep_prob().detach() for _, g in iter_gates(m)]) for m in (initial, trained)
    )
    assert keep_trained.mean() < keep_initial.mean() - 0.05, (keep_initial.mean(), keep_trained.mean())
    sparsity_initial, sparsity_trained = (
        1.0 - float(expected_cost(m).macs) / exact_cost(dense).macs for m in (initial, trained)
    )
    assert sparsity_trained >= sparsity_initial + (0.5 - sparsity_initial) / 3, (
        sparsity_initial,
        sparsity_trained,
    )
    n_removed = sum(v.numel() for v in torch.load(removed_dir / "model.pth", weights_only=True).values())
    gated_state = torch.load(exp / "latest.pth", weights_only=True)
    n_dense = sum(
        v.numel() for k, v in gated_state.items() if ".controller." not in k and not k.endswith("log_alpha")
    )
    assert n_removed < n_dense

    gated = _decode(run, exp / "config.yaml", exp / "latest.pth", "gated")
    removed = _decode(run, removed_dir / "config.yaml", removed_dir / "model.pth", "removed")
    assert gated.keys() == removed.keys() == {"utt08", "utt09"}
    for utt in gated:
        assert gated[utt][0] == removed[utt][0]
        assert gated[utt][1] == pytest.approx(removed[utt][1], rel=1e-4, abs=1e-3)


def test_inference_rejects_weights_that_do_not_match_the_config(run: Run) -> None:
    from espnet_prune.bin import asr_inference

    exp = run.root / "exp" / "full"
    state = torch.load(exp / "latest.pth", weights_only=True)
    bad = run.root / "no_gates.pth"  # ESPnet's strict=False load would leave these gates at their init
    torch.save({k: v for k, v in state.items() if not k.endswith("log_alpha")}, bad)
    with pytest.raises(SystemExit) as error:
        asr_inference.main(
            [
                "--asr_train_config",
                str(exp / "config.yaml"),
                "--asr_model_file",
                str(bad),
                "--output_dir",
                str(run.root / "decode" / "mismatch"),
                "--data_path_and_name_and_type",
                f"{run.valid}/wav.scp,speech,sound",
            ]
        )
    message = str(error.value)
    assert (
        "does not match the model" in message
        and "missing from the weights" in message
        and "log_alpha" in message
    )
    assert not (run.root / "decode" / "mismatch").exists()


def test_resume_continues_gates_lambdas_and_counter_exactly(run: Run) -> None:
    out = run.root / "exp" / "resumed"
    _train(run.train_args(out, "--max_epoch", "1"), run.root / "exp" / "train_resumed_1.log")
    _train(
        run.train_args(out, "--max_epoch", "2", "--resume", "true"), run.root / "exp" / "train_resumed_2.log"
    )
    assert "The training was resumed" in (run.root / "exp" / "train_resumed_2.log").read_text()

    full = torch.load(run.root / "exp" / "full" / "2epoch.pth", weights_only=True)
    resumed = torch.load(out / "2epoch.pth", weights_only=True)
    assert full.keys() == resumed.keys()
    gates = [k for k in full if k.endswith("log_alpha")]
    assert gates and int(resumed["encoder.ssl.controller.updates"]) == 16
    for key in gates + [
        "encoder.ssl.controller.lambdas",
        "encoder.ssl.controller.updates",
        "encoder.ssl.controller.loss_scale",
    ]:
        assert torch.equal(full[key], resumed[key]), key
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


def test_python_start_up_imports_neither_torch_nor_espnet() -> None:
    """The installed hook waits for espnet2.tasks.asr: unrelated programs pay nothing for the plugin."""
    code = "import sys; print(sorted(m for m in ('torch', 'espnet2', 'espnet_prune.espnet') if m in sys.modules))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        == "[]\n"
    )


def test_stock_espnet_prints_the_config_of_our_encoder(run: Run) -> None:
    printed = _stock(
        "espnet2.bin.asr_train",
        [
            "--config",
            str(TINY_TRAIN_CONFIG),
            "--encoder_conf",
            f"model_config={TINY_MODEL}",
            "--print_config",
        ],
        run.root / "print_config.log",
    )
    config = yaml.safe_load(printed)
    assert config["encoder"] == "pruned_wav2vec2" and config["encoder_conf"]["pruning"]["variant"] == "mac"
    assert {"ssl_checkpoint", "preset", "freeze_cnn_updates", "trust_checkpoint"} <= set(
        config["encoder_conf"]
    )


def test_removed_model_packs_and_decodes_from_the_archive_with_stock_speech2text(
    run: Run, removal: Tuple[Path, str]
) -> None:
    removed_dir, _ = removal
    archive = run.root / "asr_removed.zip"
    _stock(
        "espnet2.bin.pack",
        [
            "asr",
            "--asr_train_config",
            str(removed_dir / "config.yaml"),
            "--asr_model_file",
            str(removed_dir / "model.pth"),
            "--outpath",
            str(archive),
        ],
        run.root / "pack.log",
    )
    # A fresh interpreter that imports only ESPnet: unpack as espnet_model_zoo does, decode with Speech2Text.
    decode = textwrap.dedent("""
        import json, sys
        import soundfile
        from espnet2.bin.asr_inference import Speech2Text
        from espnet2.main_funcs.pack_funcs import unpack

        speech2text = Speech2Text(**unpack(sys.argv[1], sys.argv[2]), device="cpu", ctc_weight=1.0,
                                  beam_size=2, maxlenratio=0.1)
        tokens = {}
        for line in open(sys.argv[3]):
            utt, path = line.split()
            _, utt_tokens, *_ = speech2text(soundfile.read(path, dtype="float32")[0])[0]
            tokens[utt] = " ".join(utt_tokens)
        print(json.dumps(tokens))
    """)
    done = subprocess.run(
        [sys.executable, "-c", decode, str(archive), str(run.root / "unpacked"), str(run.valid / "wav.scp")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    from_archive = json.loads(done.stdout.splitlines()[-1])
    from_files = _decode(run, removed_dir / "config.yaml", removed_dir / "model.pth", "removed_again")
    assert from_archive == {utt: tokens for utt, (tokens, _) in from_files.items()}
    assert any(from_archive.values())  # something was recognised (a blank output would match trivially)
