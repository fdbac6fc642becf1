"""The pruning controller counts the optimizer updates ESPnet's trainer makes: with gradient accumulation over
an epoch whose batch count it does not divide, across a resume with another ``accum_grad``, and when ESPnet
skips an update because the gradient is not finite.

ESPnet's own count is its scheduler's (``scheduler.step()`` follows every ``optimizer.step()`` and neither
runs on a skipped update) and Adam's per-parameter ``step``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import pytest
import soundfile
import torch
from espnet2.asr.espnet_model import ESPnetASRModel

from espnet_prune.bin import asr_train

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "conf" / "train" / "tiny_hj_mac_50.yaml"
TINY_MODEL = REPO / "conf" / "model" / "tiny_wav2vec2.yaml"
TRAIN_UTTERANCES = 8  # batches of one: 8 forward passes an epoch, not a multiple of accum_grad 3
WARMUP_UPDATES = 100  # the whole run is inside the target's warm-up
CONTROLLER = "encoder.ssl.controller"


def _data_dir(root: Path, name: str, count: int) -> Path:
    """Random 0.5 s waveforms with short transcripts, and the speech_shape file ESPnet batches by."""
    data = root / name
    data.mkdir(parents=True)
    generator = torch.Generator().manual_seed(len(name))
    keys = [f"{name}{i:02d}" for i in range(count)]
    for key in keys:
        soundfile.write(data / f"{key}.wav", (0.1 * torch.randn(8000, generator=generator)).numpy(), 16000)
    (data / "wav.scp").write_text("".join(f"{k} {data / k}.wav\n" for k in keys))
    (data / "text").write_text("".join(f"{k} ABC\n" for k in keys))
    (data / "speech_shape").write_text("".join(f"{k} 8000\n" for k in keys))
    return data


def _train_args(tmp_path: Path) -> List[str]:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>", "<space>", "A", "B", "C", "<sos/eos>"]) + "\n")
    train, valid = _data_dir(tmp_path, "train", TRAIN_UTTERANCES), _data_dir(tmp_path, "valid", 2)
    args = [
        "--config",
        str(TINY_CONFIG),
        "--encoder_conf",
        f"model_config={TINY_MODEL}",
        "--encoder_conf",
        f"pruning.warmup_updates={WARMUP_UPDATES}",
        "--batch_size",
        "1",
        "--token_type",
        "char",
        "--token_list",
        str(tokens),
        "--ngpu",
        "0",
        "--use_matplotlib",
        "false",
        "--output_dir",
        str(tmp_path / "exp"),
    ]
    for split, data in (("train", train), ("valid", valid)):
        args += [
            f"--{split}_data_path_and_name_and_type",
            f"{data}/wav.scp,speech,sound",
            f"--{split}_data_path_and_name_and_type",
            f"{data}/text,text,text",
            f"--{split}_shape_file",
            str(data / "speech_shape"),
        ]
    return args


def _counts(exp: Path) -> Dict[str, int]:
    """The controller's update counter and ESPnet's own step counts, from its resume checkpoint."""
    checkpoint = torch.load(exp / "checkpoint.pth", weights_only=False)
    steps = {int(state["step"]) for state in checkpoint["optimizers"][0]["state"].values()}
    assert len(steps) == 1, steps  # every parameter was stepped the same number of times
    return {
        "controller": int(checkpoint["model"][f"{CONTROLLER}.updates"]),
        "scheduler": checkpoint["schedulers"][0]["last_epoch"],
        "adam": steps.pop(),
    }


def _loss_scale(exp: Path) -> torch.Tensor:
    return torch.load(exp / "checkpoint.pth", weights_only=False)["model"][f"{CONTROLLER}.loss_scale"]


def _epoch_targets(exp: Path) -> List[float]:
    """The mean warm-up target of every epoch, as ESPnet's reporter logged it."""
    stats = torch.load(exp / "checkpoint.pth", weights_only=False)["reporter"]["stats"]
    return [stats[epoch]["train"]["target_macs"] for epoch in sorted(stats)]


def _poison_first_training_pass(monkeypatch) -> None:
    """A NaN task loss in the first training forward pass: ESPnet skips that update (non-finite grad norm)."""
    forward = ESPnetASRModel.forward
    passes = []

    def poisoned(self, *args, **kwargs):
        loss, stats, weight = forward(self, *args, **kwargs)
        if self.training:
            passes.append(self)
            if len(passes) == 1:
                loss = loss * float("nan")
        return loss, stats, weight

    monkeypatch.setattr(ESPnetASRModel, "forward", poisoned)


def test_controller_counts_the_optimizer_steps_espnet_makes(tmp_path, monkeypatch) -> None:
    torch.set_num_threads(1)
    args = _train_args(tmp_path)
    exp = tmp_path / "exp"

    asr_train.main(args + ["--accum_grad", "3", "--max_epoch", "1"])
    assert _counts(exp) == dict(controller=2, scheduler=2, adam=2)  # updates after passes 3 and 6 of 8

    with monkeypatch.context() as patch:
        _poison_first_training_pass(patch)
        asr_train.main(args + ["--accum_grad", "3", "--max_epoch", "2", "--resume", "true"])
    # Epoch 2: the update of passes 1-3 is skipped (NaN gradient), the one after pass 6 is made; the NaN
    # task loss must not reach the running loss scale.
    assert _counts(exp) == dict(controller=3, scheduler=3, adam=3)
    assert torch.isfinite(_loss_scale(exp))

    asr_train.main(args + ["--accum_grad", "2", "--max_epoch", "3", "--resume", "true"])
    assert _counts(exp) == dict(controller=7, scheduler=7, adam=7)  # 4 updates of 2 passes
    # The warm-up target of each pass follows the count of updates before it, never rewinding: epoch 1 passes
    # at 0 0 0 1 1 1 2 2 updates, epoch 2 at 2 2 2 2 2 2 3 3, epoch 3 at 3 3 4 4 5 5 6 6.
    expected = [0.5 * mean_updates / WARMUP_UPDATES for mean_updates in (7 / 8, 18 / 8, 36 / 8)]
    assert _epoch_targets(exp) == pytest.approx(expected, rel=1e-6)
