"""Pre-train the stand-in for wav2vec2-base: CTC on characters over the multi-voice pre-training corpus.

Character CTC is the supervised stand-in for self-supervision (a CPU cannot run HuBERT's iterations in a
benchmark): it gives the encoder what fine-tuning from a pre-trained SSL model relies on, general acoustic
and phonetic features learnt on more and broader speech than any downstream task (bench/speech.py: many
synthetic voices over thousands of sentences plus the real train speech; every downstream dev and test
split excluded). 200 corpus utterances are held out to draw the curve (loss every 100 updates, CER on the
held-out utterances every ``eval_every``).

Cached under ``bench/work/pretrain/`` by its settings; the curve is written to
``bench/results/pretrain_curve.{json,png}``. Run on its own: ``python -m bench.pretrain``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS_DIR, WORK_DIR, Stopwatch, cache_key, load_average, use_cpu_threads
from bench.speech import pretraining_corpus
from bench.training import Schedule, TaskModel, evaluate, standin_config, train
from espnet_prune.constants import SAMPLE_RATE
from espnet_prune.io import atomic_write
from espnet_prune.models import Wav2Vec2Config, Wav2Vec2Model

HELD_OUT = 200


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that decides the pre-trained model (and so its cache key)."""

    lm_sentences: int = 4000
    grammar_sentences: int = 1000
    updates: int = 8000
    batch_size: int = 8
    peak_lr: float = 2e-3
    warmup: int = 300
    eval_every: int = 500
    seed: int = 0

    def key(self) -> str:
        return cache_key({**asdict(self), "config": standin_config().to_dict()})

    def path(self) -> Path:
        return WORK_DIR / "pretrain" / f"standin-{self.key()}.pt"


def pretrain(s: PretrainSettings) -> Dict:
    """Train and save the stand-in; returns the curve."""
    corpus = pretraining_corpus(s.lm_sentences, s.grammar_sentences, s.seed)
    random.Random(s.seed).shuffle(corpus)
    held_out, train_set = corpus[:HELD_OUT], corpus[HELD_OUT:]
    hours = sum(example.waveform.numel() for example in corpus) / SAMPLE_RATE / 3600
    print(f"pre-training corpus: {len(train_set)} utterances ({hours:.2f} h), {HELD_OUT} held out")
    torch.manual_seed(s.seed)
    model = TaskModel(Wav2Vec2Model(standin_config()), "ctc")
    schedule = Schedule(s.peak_lr, s.warmup)
    losses: List[float] = []
    curve: Dict = {"updates": [], "held_out_cer": [], "loss_every_100": [], "seconds": 0.0}
    done = 0
    while done < s.updates:
        chunk = min(s.eval_every, s.updates - done)
        curve["seconds"] += train(
            model,
            train_set,
            chunk,
            schedule,
            first_update=done + 1,
            batch_size=s.batch_size,
            seed=s.seed + done,
            log_every=100,
            losses=losses,
        )
        done += chunk
        cer = evaluate(model, held_out)["cer"]
        curve["updates"].append(done)
        curve["held_out_cer"].append(cer)
        print(f"  pre-training update {done}/{s.updates}: held-out CER {cer:.1f} (load {load_average()})")
    curve["loss_every_100"] = [
        sum(losses[i : i + 100]) / len(losses[i : i + 100]) for i in range(0, len(losses), 100)
    ]
    curve.update(settings=asdict(s), utterances=len(train_set), hours=hours)
    s.path().parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(s.path(), "wb") as f:
        torch.save({"config": model.encoder.config.to_dict(), "state": model.state_dict(), "curve": curve}, f)
    write_curve(curve, "" if s == PretrainSettings() else f"_{s.path().stem}")
    return curve


def write_curve(curve: Dict, suffix: str = "") -> None:
    """The curve as ``pretrain_curve{suffix}.{json,png}``: a pre-training at other settings than the
    default one (a ``--quick`` smoke run's) names its own files and leaves the published curve alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"pretrain_curve{suffix}.json").write_text(json.dumps(curve, indent=1))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot([100 * (i + 1) for i in range(len(curve["loss_every_100"]))], curve["loss_every_100"])
    left.set(xlabel="update", ylabel="CTC loss (mean of 100 updates)", title="pre-training loss")
    right.plot(curve["updates"], curve["held_out_cer"], "o-")
    right.set(xlabel="update", ylabel="CER % (held-out corpus utterances)", title="held-out CER")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(RESULTS_DIR / f"pretrain_curve{suffix}.png", dpi=120)
    plt.close(figure)


def pretrained_encoder(s: PretrainSettings) -> TaskModel:
    """The pre-trained stand-in (CTC head included), trained first when it is not cached."""
    if not s.path().is_file():
        print(f"pre-training the stand-in ({s.updates} updates; cached as {s.path().relative_to(WORK_DIR)})")
        pretrain(s)
    saved = torch.load(s.path(), weights_only=True)
    model = TaskModel(Wav2Vec2Model(Wav2Vec2Config.from_dict(saved["config"], source=str(s.path()))), "ctc")
    model.load_state_dict(saved["state"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=PretrainSettings.updates)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    use_cpu_threads(args.threads)
    stopwatch = Stopwatch()
    print(f"load average at start: {load_average()}")
    pretrained_encoder(PretrainSettings(updates=args.updates))
    print(f"pre-training took {stopwatch.elapsed()}")


if __name__ == "__main__":
    main()
