"""Same seed, same code, same thread count -> the same gates, masks and numbers on CPU.

A tiny gated model is trained in two separate Python processes (different hash seeds, so that any
dependence on the iteration order of sets or dicts of strings would show) and every tensor is compared
exactly: model weights and gates, the controller's buffers, the optimizer state. The accuracy benchmark's
gated run must not depend on what ran before it in the process (its jobs come from a cache or not).

Run as a script, this file is the worker: ``python tests/test_determinism.py OUT THREADS``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

from espnet_prune.models import Wav2Vec2Model
from espnet_prune.pruning import PruningConfig, PruningController, attach_gates
from espnet_prune.pruning.gating import gate_parameters
from espnet_prune.pruning.removal import pruned_config

from conftest import REPO, tiny_config

THREADS = 2
UPDATES = 12
ACCUM_GRAD = 2
CLASSES = 4


def train_tiny_gated_model(out: Path, threads: int) -> None:
    """HJ-MAC on a tiny wav2vec2 with dropout and layer drop (so that training draws random numbers), a
    linear classifier on random audio, AdamW, 2 forward passes per update. Saves every tensor to ``out``, with
    the eval-mode output and the geometry that mask removal would cut."""
    torch.set_num_threads(threads)
    data = torch.Generator().manual_seed(1)
    waves = torch.randn(8, 1600, generator=data)
    labels = torch.randint(CLASSES, (8,), generator=data)
    lengths = torch.tensor([1600, 1200, 1400, 1600] * 2)

    torch.manual_seed(0)
    encoder = Wav2Vec2Model(tiny_config(dropout=0.1, attention_dropout=0.1, layer_drop=0.1))
    head = torch.nn.Linear(encoder.config.embed_dim, CLASSES)
    cfg = PruningConfig.from_dict(
        {
            "variant": "mac",
            "target_sparsity": 0.5,
            "warmup_updates": 10,
            "reference_seconds": 2.0,
            "gate_lr": 0.2,
        }
    )
    attach_gates(encoder, cfg.gates)
    controller = PruningController(encoder, cfg)
    gates = {id(p) for p in gate_parameters(encoder)}
    weights = [p for p in encoder.parameters() if id(p) not in gates] + list(head.parameters())
    optimizer = torch.optim.AdamW([{"params": weights}, *controller.param_groups(encoder)], lr=2e-3)
    controller.attach(optimizer)
    encoder.train()
    controller.train()
    for _ in range(UPDATES):
        for part in range(ACCUM_GRAD):
            batch = slice(4 * part, 4 * part + 4)
            output = encoder(waves[batch], lengths[batch])
            logits = head(output.last_hidden_state.mean(1))
            loss = torch.nn.functional.cross_entropy(logits, labels[batch])
            pruning, _ = controller(encoder, loss)
            ((loss + pruning) / ACCUM_GRAD).backward()
        optimizer.step()
        optimizer.zero_grad()
    encoder.eval()
    with torch.no_grad():
        eval_output = encoder(waves, lengths).last_hidden_state
    torch.save(
        {
            "encoder": encoder.state_dict(),
            "head": head.state_dict(),
            "controller": controller.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "eval_output": eval_output,
            "pruned_config": pruned_config(encoder).to_dict(),
        },
        out,
    )


def _flatten(value: Any, prefix: str = "") -> Dict[str, Any]:
    """Nested dicts and lists as one mapping ``path -> leaf``."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return {prefix: value}
    flat: Dict[str, Any] = {}
    for key, item in items:
        flat.update(_flatten(item, f"{prefix}/{key}"))
    return flat


def _differences(first: Dict[str, Any], second: Dict[str, Any]) -> List[str]:
    """Paths whose leaves differ (tensors bit for bit, with dtype and shape)."""
    if first.keys() != second.keys():
        return sorted(first.keys() ^ second.keys())
    return [
        path
        for path, leaf in first.items()
        if not (
            torch.equal(leaf, second[path]) and leaf.dtype == second[path].dtype
            if isinstance(leaf, torch.Tensor)
            else leaf == second[path]
        )
    ]


def test_two_processes_train_the_same_gated_model_bit_for_bit(tmp_path) -> None:
    saved = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run_hash_seed_{hash_seed}.pt"
        env = dict(
            os.environ,
            PYTHONHASHSEED=hash_seed,
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        )
        subprocess.run([sys.executable, __file__, str(out), str(THREADS)], check=True, env=env, cwd=REPO)
        saved.append(_flatten(torch.load(out, weights_only=True)))
    first, second = saved
    assert int(first["/controller/updates"]) == UPDATES and first["/controller/lambdas"].any()
    assert any("log_alpha" in path for path in first) and any("/optimizer/state/" in path for path in first)
    assert _differences(first, second) == []


def test_a_gated_benchmark_run_does_not_depend_on_what_ran_before_it() -> None:
    pytest.importorskip("torch_pruning")  # bench.accuracy imports its L1 baseline
    from bench.accuracy import Settings, fine_tune
    from bench.data import Example
    from bench.training import TaskModel

    data = torch.Generator().manual_seed(1)
    examples = [
        Example(f"utt{i}", torch.randn(2400 + 400 * (i % 3), generator=data), i % CLASSES) for i in range(8)
    ]
    settings = Settings(updates=4, warmup=2, batch_size=4)
    torch.manual_seed(0)
    pretrained = TaskModel(Wav2Vec2Model(tiny_config()), "ctc")

    def gated_run() -> Dict[str, torch.Tensor]:
        model, _, _ = fine_tune("fsdd", "hj_mac", 0.5, 0, examples, CLASSES, pretrained, settings)
        return model.state_dict()

    torch.manual_seed(12345)  # whatever state earlier work left the global generator in
    alone = gated_run()
    fine_tune("fsdd", "dense", 1.0, 0, examples, CLASSES, pretrained, settings)  # as when not cached
    after_dense = gated_run()
    assert alone.keys() == after_dense.keys()
    assert [key for key in alone if not torch.equal(alone[key], after_dense[key])] == []


if __name__ == "__main__":
    train_tiny_gated_model(Path(sys.argv[1]), int(sys.argv[2]))
