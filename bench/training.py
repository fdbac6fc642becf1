"""A tiny wav2vec2 with a task head, its plain PyTorch training loop (dense or HJ-pruned) and evaluation.

The tiny geometry and the optimiser settings are those a prototype found to learn on 2 CPU cores:
layer-norm CNN with bias, pre-LN Transformer, AdamW with linear warm-up then inverse-sqrt decay, batches of
similar length, gradient clipping at 5.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import jiwer
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.data import CHARACTERS, NUM_DIGITS, Example, collate, decode_labels, encode_text, length_batches
from espnet_prune.models import Wav2Vec2Config, Wav2Vec2Model
from espnet_prune.pruning import PruningController, weight_parameters

GRAD_CLIP = 5.0
WEIGHT_DECAY = 0.01


def tiny_config(channels: int = 96) -> Wav2Vec2Config:
    """The stand-in for a pre-trained model: 7 conv layers of ``channels``, 4 pre-LN layers of width 144."""
    return Wav2Vec2Config(
        conv_layers=[(channels, 10, 5)] + [(channels, 3, 2)] * 4 + [(channels, 2, 2)] * 2,
        extractor_mode="layer_norm",
        conv_bias=True,
        layer_norm_first=True,
        embed_dim=144,
        num_heads=[4] * 4,
        head_dim=36,
        ffn_dims=[576] * 4,
        pos_conv_kernel=32,
        pos_conv_groups=8,
        layer_drop=0.0,
    )


class TaskModel(nn.Module):
    """Encoder plus a linear head: per-frame characters (CTC) or a mean-pooled digit class."""

    def __init__(self, encoder: Wav2Vec2Model, task: str) -> None:
        super().__init__()
        if task not in ("ctc", "classify"):
            raise ValueError(f"task: {task!r} is not 'ctc' or 'classify'")
        self.encoder, self.task = encoder, task
        outputs = len(CHARACTERS) + 1 if task == "ctc" else NUM_DIGITS
        self.head = nn.Linear(encoder.config.embed_dim, outputs)

    def forward(self, waves: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """CTC: per-frame logits (B, T, labels) and frame lengths; classify: logits (B, classes) and lengths."""
        output = self.encoder(waves, lengths)
        hidden = output.last_hidden_state
        if self.task == "ctc":
            return self.head(hidden), output.lengths
        valid = (~output.padding_mask).to(hidden.dtype)[..., None]
        pooled = (hidden * valid).sum(1) / valid.sum(1).clamp(min=1.0)
        return self.head(pooled), output.lengths

    def loss(self, batch: List[Example]) -> Tensor:
        waves, lengths = collate(batch)
        logits, frames = self(waves, lengths)
        if self.task == "classify":
            return F.cross_entropy(logits, torch.tensor([example.target for example in batch]))
        labels = [encode_text(example.target) for example in batch]
        targets = torch.tensor([label for sequence in labels for label in sequence])
        target_lengths = torch.tensor([len(sequence) for sequence in labels])
        log_probs = logits.log_softmax(-1).transpose(0, 1)
        return F.ctc_loss(log_probs, targets, frames, target_lengths, zero_infinity=True)


@dataclass
class Schedule:
    """AdamW learning rate: linear warm-up to ``peak_lr`` over ``warmup`` updates, then inverse-sqrt decay."""

    peak_lr: float = 2e-3
    warmup: int = 300

    def lr(self, update: int) -> float:
        """Learning rate of update number ``update`` (counted from 1)."""
        return self.peak_lr * min(update / self.warmup, math.sqrt(self.warmup / update))


def train(
    model: TaskModel,
    examples: List[Example],
    updates: int,
    schedule: Schedule,
    first_update: int = 1,
    controller: Optional[PruningController] = None,
    batch_size: int = 8,
    seed: int = 0,
    log_every: int = 50,
) -> float:
    """Train ``updates`` updates; with a controller, the gates and lambdas learn alongside (HJ-Pruning).

    ``first_update`` continues the schedule of an earlier run. Returns the wall time in seconds.
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    gate_groups = [] if controller is None else controller.param_groups(model.encoder)
    weights = [p for _, p in weight_parameters(model)]
    optimizer = torch.optim.AdamW(
        [{"params": weights, "weight_decay": WEIGHT_DECAY}, *gate_groups], lr=schedule.lr(first_update)
    )
    if controller is not None:
        controller.attach(optimizer)
        controller.train()
    model.train()
    start = time.perf_counter()
    done = 0
    while done < updates:
        for batch in length_batches(examples, batch_size, rng):
            optimizer.param_groups[0]["lr"] = schedule.lr(first_update + done)
            loss = model.loss(batch)
            stats: Dict[str, Tensor] = {}
            if controller is not None:
                pruning, stats = controller(model.encoder, loss)
                loss = loss + pruning
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(weights, GRAD_CLIP)
            optimizer.step()
            done += 1
            if done % log_every == 0 or done == updates:
                _log(done, updates, loss, stats, time.perf_counter() - start)
            if done == updates:
                break
    return time.perf_counter() - start


def _log(done: int, updates: int, loss: Tensor, stats: Dict[str, Tensor], seconds: float) -> None:
    prefix = "exact_sparsity_"
    quantities = [name[len(prefix) :] for name in stats if name.startswith(prefix)]
    controlled = " ".join(
        f"{q} sparsity exact {float(stats[prefix + q]):.3f} expected "
        f"{float(stats['expected_sparsity_' + q]):.3f} target {float(stats['target_' + q]):.3f}"
        for q in quantities
    )
    print(
        f"    update {done}/{updates}: loss {float(loss.detach()):.3f} {controlled} ({seconds / done:.2f} s/update)"
    )


@torch.no_grad()
def evaluate(model: TaskModel, examples: List[Example], batch_size: int = 16) -> Dict[str, float]:
    """CTC: word and character error rates in %; classify: accuracy in %."""
    model.eval()
    references, hypotheses, correct = [], [], 0
    for batch in length_batches(examples, batch_size):
        waves, lengths = collate(batch)
        logits, frames = model(waves, lengths)
        if model.task == "classify":
            correct += sum(int(p == e.target) for p, e in zip(logits.argmax(-1).tolist(), batch))
            continue
        for example, best, valid in zip(batch, logits.argmax(-1), frames):
            references.append(example.target)
            hypotheses.append(decode_labels(best[: int(valid)].tolist()))
    if model.task == "classify":
        return {"accuracy": 100.0 * correct / len(examples)}
    return {
        "wer": 100.0 * jiwer.wer(references, hypotheses),
        "cer": 100.0 * jiwer.cer(references, hypotheses),
    }
