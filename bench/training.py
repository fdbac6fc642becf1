"""The CPU stand-in for wav2vec2-base with a task head, its plain PyTorch training loop (dense or HJ-pruned)
and evaluation.

The stand-in is a narrow wav2vec2 whose *cost proportions* are base's (``cost_proportions``): what HJ-MAC
sees (CNN versus Transformer MACs and params, attention scores versus projections, FFN share) decides what
it prunes, so a proxy with other proportions shows another method. Base's CNN-to-Transformer ratios are kept
by narrowing channels and width together (C/D constant up to the depth: 56 / 144 with 4 layers against
512 / 768 with 12), and the attention-score share by a reference length with T/D constant
(10 s x 144 / 768 = 1.875 s). The optimiser settings are those a prototype found to learn on 2 CPU cores:
layer-norm CNN with bias, pre-LN Transformer, AdamW with linear warm-up then inverse-sqrt decay, batches of
similar length, gradient clipping at 5.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import jiwer
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.data import CHARACTERS, Example, collate, decode_labels, encode_text, length_batches
from espnet_prune.models import Wav2Vec2Config, Wav2Vec2Model
from espnet_prune.models.config import wav2vec2_base
from espnet_prune.models.model import Wav2Vec2Output
from espnet_prune.pruning import PruningController, exact_cost, weight_parameters
from espnet_prune.pruning.cost import frame_counts

GRAD_CLIP = 5.0
WEIGHT_DECAY = 0.01


BASE_SECONDS = 10.0  # wav2vec2-base's reference length: 499 frames at width 768
STANDIN_WIDTH = 144
REFERENCE_SECONDS = BASE_SECONDS * STANDIN_WIDTH / 768  # T/D as base's at 10 s: 93 frames


def standin_config() -> Wav2Vec2Config:
    """The stand-in for wav2vec2-base: 7 conv layers of 56 channels, 4 pre-LN layers of width 144 (4 heads
    x 36, FFN 576), positional conv of kernel 16 in 8 groups (1.1 M params)."""
    return Wav2Vec2Config(
        conv_layers=[(56, 10, 5)] + [(56, 3, 2)] * 4 + [(56, 2, 2)] * 2,
        extractor_mode="layer_norm",
        conv_bias=True,
        layer_norm_first=True,
        embed_dim=STANDIN_WIDTH,
        num_heads=[4] * 4,
        head_dim=36,
        ffn_dims=[576] * 4,
        pos_conv_kernel=16,
        pos_conv_groups=8,
        layer_drop=0.0,
    )


def cost_proportions(config: Wav2Vec2Config, seconds: float) -> Dict[str, float]:
    """The shares that decide what a MAC or size target prunes, from the library's exact cost model:
    CNN share of MACs and of params, attention-score (2 T^2 per head dim) and FFN shares of Transformer MACs."""
    cost = exact_cost(config, seconds)
    frames = frame_counts(config, seconds)[-1]
    scores = sum(2 * frames * frames * heads * config.head_dim for heads in config.num_heads)
    return {
        "CNN share of MACs": cost.cnn_macs / cost.macs,
        "CNN share of params": cost.cnn_params / cost.params,
        "attention-score share of Transformer MACs": scores / cost.transformer_macs,
        "FFN share of Transformer MACs": cost.ffn.macs / cost.transformer_macs,
    }


def proportions_table() -> Tuple[List[str], List[List[str]]]:
    """Header and rows comparing the stand-in at its reference length with wav2vec2-base at 10 s."""
    standin = cost_proportions(standin_config(), REFERENCE_SECONDS)
    base = cost_proportions(wav2vec2_base(), BASE_SECONDS)
    rows = [[name, f"{100 * base[name]:.1f}", f"{100 * standin[name]:.1f}"] for name in base]
    header = ["share (%)", "wav2vec2-base @ 10 s", f"stand-in @ {REFERENCE_SECONDS:g} s"]
    return header, rows


class TaskModel(nn.Module):
    """Encoder plus a linear head: per-frame characters (CTC) or a mean-pooled digit class."""

    def __init__(self, encoder: Wav2Vec2Model, task: str, classes: int = 0) -> None:
        super().__init__()
        if task not in ("ctc", "classify"):
            raise ValueError(f"task: {task!r} is not 'ctc' or 'classify'")
        if task == "classify" and classes < 2:
            raise ValueError(f"classes: a classification head needs at least 2, got {classes}")
        self.encoder, self.task = encoder, task
        self.last_output: Optional[Tuple[Tensor, Tensor, Wav2Vec2Output]] = None
        outputs = len(CHARACTERS) + 1 if task == "ctc" else classes
        self.head = nn.Linear(encoder.config.embed_dim, outputs)

    def forward(self, waves: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """CTC: per-frame logits (B, T, labels) and frame lengths; classify: logits (B, classes) and lengths."""
        output = self.encoder(waves, lengths)
        self.last_output = (waves, lengths, output)  # for a distillation loss of the same batch
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
    losses: Optional[List[float]] = None,
    distiller: Optional[Callable[[], Tensor]] = None,
) -> float:
    """Train ``updates`` updates; with a controller, the gates and lambdas learn alongside (HJ-Pruning).

    ``first_update`` continues the schedule of an earlier run; ``losses`` (when given) receives every
    update's task loss (the training curve); ``distiller`` (when given) returns the weighted distillation
    loss of the forward pass just run (``model.last_output``), added in units of the task loss's running
    magnitude (the controller's scale). Returns the wall time in seconds.
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
            if losses is not None:
                losses.append(float(loss.detach()))
            stats: Dict[str, Tensor] = {}
            if controller is not None:
                pruning, stats = controller(model.encoder, loss)
                loss = loss + pruning
            if distiller is not None:  # in units of the task loss's running magnitude, as the library's
                loss = loss + stats.get("task_loss_scale", torch.ones(())) * distiller()
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
