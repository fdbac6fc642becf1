"""DDP on CPU: ESPnet's trainer with two gloo processes (what espnet2.bin.launch starts for --ngpu N, with
CPUs in place of GPUs) trains a tiny gated model; gates, lambdas and the controller's update counter agree
exactly across the ranks, and the update counter and lambdas with one process that sees the same batches.

Each rank runs ``espnet_prune.bin.asr_train`` with ESPnet's distributed options (``--dist_backend gloo
--dist_world_size 2 --dist_rank R``, file init). ESPnet gives each rank half of every batch and scales the
loss so that DDP's gradient average equals the gradient of the whole batch; each rank saves the state of
its own model copy at the end (ESPnet's checkpoints are rank 0's only). Dropout is off: its masks depend on
the batch shape, so they differ between one process with the whole batch and two with halves.

What differs from one process, and why: the controller scales the pruning term by a running mean of the
task loss's magnitude (``controller.loss_scale``), and under DDP each rank measures it on its own half of
the batch; DDP broadcasts rank 0's buffers at every forward, so the ranks agree with each other but not
with the whole-batch mean of one process (4% apart here). The task-loss gradient is the same (ESPnet scales
the loss by the world size), so the weights agree closely; the gates' pruning gradient is scaled by the
other loss scale, so their log_alpha drift apart a little (0.2 after 8 updates, FFN units most). The
lambdas follow the exact sparsity of the eval masks, which these small drifts do not change.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from test_espnet_e2e import Run

pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch has no gloo backend")

# Runs ESPnet's training (argv) and saves this process's model state to $RANK_STATE at the end.
TRAIN_AND_SAVE = """
import os, sys, torch
from espnet2.train.trainer import Trainer
from espnet_prune.bin import asr_train

run = Trainer.run.__func__

def run_and_save(cls, model, *args, **kwargs):
    run(cls, model, *args, **kwargs)
    torch.save(model.state_dict(), os.environ["RANK_STATE"])

Trainer.run = classmethod(run_and_save)
asr_train.main(sys.argv[1:])
"""


def _args(run: Run, out: Path) -> List[str]:
    return run.train_args(
        out,
        "--batch_size",
        "2",
        "--max_epoch",
        "2",
        "--num_workers",
        "0",
        "--encoder_conf",
        "model_overrides.dropout=0.0",
        "--encoder_conf",
        "model_overrides.attention_dropout=0.0",
        "--encoder_conf",
        "model_overrides.projection_dropout=0.0",
    )


def _train(args: List[str], state: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, RANK_STATE=str(state), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN_AND_SAVE, *args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )


@pytest.fixture(scope="module")
def states(tmp_path_factory) -> Dict[str, Dict[str, torch.Tensor]]:
    """Model states after 2 epochs: rank0 and rank1 of a DDP run, and a one-process run."""
    run = Run(tmp_path_factory.mktemp("ddp"))
    stats = subprocess.run(
        [
            sys.executable,
            "-m",
            "espnet_prune.bin.asr_train",
            *run.stats_args(),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert stats.returncode == 0, stats.stderr[-3000:]
    root = run.root
    init = f"file://{root / 'dist_init'}"
    jobs = {
        f"rank{rank}": _train(
            _args(run, root / "ddp")
            + [
                "--ngpu",
                "0",
                "--multiprocessing_distributed",
                "false",
                "--dist_backend",
                "gloo",
                "--dist_world_size",
                "2",
                "--dist_rank",
                str(rank),
                "--dist_init_method",
                init,
            ],
            root / f"rank{rank}.pth",
            root / f"rank{rank}.log",
        )
        for rank in (0, 1)
    }
    jobs["single"] = _train(_args(run, root / "single"), root / "single.pth", root / "single.log")
    for name, job in jobs.items():
        assert job.wait(timeout=600) == 0, (root / f"{name}.log").read_text()[-3000:]
    # ESPnet's log lines of a distributed run start with [host:rank/world_size] (ranks > 0 log errors only)
    assert re.search(
        r"^\[[^\]]+:0/2\] .*The training was finished at 2 epochs",
        (root / "rank0.log").read_text(),
        flags=re.M,
    )
    assert re.search(
        r"^\[[^\]:]+\] .*The training was finished at 2 epochs", (root / "single.log").read_text(), flags=re.M
    )
    return {name: torch.load(root / f"{name}.pth", weights_only=True) for name in jobs}


def _pruning_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.endswith("log_alpha") or ".controller." in k}


def test_ranks_agree_on_gates_lambdas_and_updates(states) -> None:
    rank0, rank1 = _pruning_state(states["rank0"]), _pruning_state(states["rank1"])
    assert rank0.keys() == rank1.keys() and any(k.endswith("log_alpha") for k in rank0)
    # 8 training utterances, batches of 2 (one per rank), 2 epochs: 8 optimizer updates on each rank
    assert int(rank0["encoder.ssl.controller.updates"]) == int(rank1["encoder.ssl.controller.updates"]) == 8
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert (rank0["encoder.ssl.controller.lambdas"] != 0).any()
    for key in states["rank0"]:  # DDP keeps every parameter identical
        assert torch.equal(states["rank0"][key], states["rank1"][key]), key


def test_ddp_matches_one_process_on_the_same_batches(states) -> None:
    ddp, single = states["rank0"], states["single"]
    controller = "encoder.ssl.controller."
    assert int(ddp[controller + "updates"]) == int(single[controller + "updates"]) == 8
    assert torch.allclose(ddp[controller + "lambdas"], single[controller + "lambdas"], rtol=1e-5, atol=1e-6)
    # the only source of difference (module docstring): the task-loss scale, measured on half batches
    assert float(ddp[controller + "loss_scale"]) == pytest.approx(
        float(single[controller + "loss_scale"]), rel=0.1
    )
    assert float(ddp[controller + "loss_scale"]) != float(single[controller + "loss_scale"])
    for key in ddp:
        if key.endswith("log_alpha"):
            assert torch.allclose(ddp[key], single[key], atol=0.3), (key, ddp[key] - single[key])
        elif ddp[key].is_floating_point() and not key.startswith(controller):
            assert torch.allclose(ddp[key], single[key], atol=1e-2), key
