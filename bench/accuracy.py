"""Accuracy versus MACs on real speech: HJ-Pruning variants against Torch-Pruning and dense-from-scratch.

For each task (``cathy``: character CTC, WER; ``fsdd``: digit classification, accuracy) a tiny wav2vec2 is
first trained densely (the stand-in for a pre-trained model; cached under bench/work/). From it, with the
same number of updates and the same batches, at each MAC budget:

- HJ-MAC, HJ-Size, HJ-SepSize, Transformer-only: gates and the Lagrangian controller train with the model;
  the target sparsity is 1 - budget on each variant's own quantity (MACs; all params; CNN and Transformer
  params apart; Transformer params), as in the paper, so the size variants land where their shapes put
  them in MACs. The removed model (``remove_masks``) is evaluated; its MACs are counted exactly.
- Torch-Pruning: L1-magnitude structured pruning to the budget's MACs (see bench/magnitude.py), then the
  same fine-tuning.
- Dense from scratch: a uniformly narrowed model of the budget's MACs trained for pretrain + prune updates.
- Dense: the start model trained for the prune updates more (the unpruned reference).

Run: ``python -m bench.accuracy`` (full), ``--quick`` (a few minutes), ``--datasets cathy``,
``--extra_test DIR`` (score every model on a further folder in a task's layout). Results go to bench/results/.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    DATA_DIR,
    RESULTS_DIR,
    WORK_DIR,
    Stopwatch,
    load_average,
    markdown_table,
    use_cpu_threads,
)
from bench.data import Example, load_task, read_extra_test
from bench.magnitude import config_at_mac_ratio, magnitude_prune, torch_pruning
from bench.training import Schedule, TaskModel, evaluate, tiny_config, train
from espnet_prune.models import Wav2Vec2Config, Wav2Vec2Model
from espnet_prune.pruning import PruningConfig, PruningController, attach_gates, exact_cost, remove_masks

TASKS = {"cathy": "ctc", "fsdd": "classify"}
HJ_VARIANTS = {
    "hj_mac": "mac",
    "hj_size": "size",
    "hj_sep_size": "sep_size",
    "transformer_only": "transformer_only",
}
LABELS = {
    "dense": "Dense (start + prune updates)",
    "hj_mac": "HJ-MAC",
    "hj_size": "HJ-Size",
    "hj_sep_size": "HJ-SepSize",
    "transformer_only": "Transformer-only",
    "torch_pruning": "Torch-Pruning (L1)",
    "scratch": "Dense from scratch",
}
METHODS = ("hj_mac", "hj_size", "hj_sep_size", "transformer_only", "torch_pruning", "scratch")
REFERENCE_SECONDS = 10.0


@dataclass
class Settings:
    """Everything that decides a trained model (and so its cache key)."""

    pretrain_updates: int = 1200
    prune_updates: int = 300
    budgets: List[float] = field(default_factory=lambda: [0.8, 0.5])
    batch_size: int = 8
    peak_lr: float = 2e-3
    warmup: int = 300
    gate_lr: float = 0.05
    lambda_lr: float = 1.0
    target_warmup: float = 1 / 3  # fraction of the prune updates over which HJ targets rise
    seed: int = 0
    max_train: Optional[int] = None  # quick runs train and score on subsets
    max_eval: Optional[int] = None

    def schedule(self) -> Schedule:
        return Schedule(self.peak_lr, self.warmup)

    def pretrain_key(self, dataset: str) -> str:
        fields = {
            k: v
            for k, v in asdict(self).items()
            if k in ("pretrain_updates", "batch_size", "peak_lr", "warmup", "seed", "max_train")
        }
        return _digest({"dataset": dataset, "config": tiny_config().to_dict(), **fields})

    def run_key(self, dataset: str, method: str) -> str:
        """Cache key of a model trained from the start model; only the HJ variants use the gate settings."""
        fields = {"pretrain": self.pretrain_key(dataset), "prune_updates": self.prune_updates}
        if method in HJ_VARIANTS:
            fields.update(gate_lr=self.gate_lr, lambda_lr=self.lambda_lr, target_warmup=self.target_warmup)
        return _digest(fields)


def _digest(data: Dict) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def pruning_config(method: str, budget: float, settings: Settings) -> PruningConfig:
    """HJ variant ``method`` with sparsity 1 - budget on its own quantity."""
    sparsity = 1.0 - budget
    data: Dict = {
        "variant": HJ_VARIANTS[method],
        "warmup_updates": int(settings.target_warmup * settings.prune_updates),
        "reference_seconds": REFERENCE_SECONDS,
        "gate_lr": settings.gate_lr,
        "lambda_lr": settings.lambda_lr,
    }
    if method == "hj_sep_size":
        data.update(cnn_target_sparsity=sparsity, transformer_target_sparsity=sparsity)
    else:
        data["target_sparsity"] = sparsity
    return PruningConfig.from_dict(data)


# --- model cache ------------------------------------------------------------------------------------


def save_model(path: Path, model: TaskModel, train_seconds: float) -> None:
    """Write atomically, so that an interrupted run never leaves a half-written cache entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "config": model.encoder.config.to_dict(),
        "task": model.task,
        "state": model.state_dict(),
        "train_seconds": train_seconds,
    }
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)


def load_model(path: Path) -> Tuple[TaskModel, float]:
    saved = torch.load(path, weights_only=True)
    model = TaskModel(
        Wav2Vec2Model(Wav2Vec2Config.from_dict(saved["config"], source=str(path))), saved["task"]
    )
    model.load_state_dict(saved["state"])
    return model, saved["train_seconds"]


def cached(path: Path, build: Callable[[], Tuple[TaskModel, float]]) -> Tuple[TaskModel, float]:
    """The model saved at ``path``, or ``build()`` it (model, training seconds) and save it there."""
    if path.is_file():
        print(f"  (cached: {path.relative_to(WORK_DIR)})")
        return load_model(path)
    model, seconds = build()
    save_model(path, model, seconds)
    return model, seconds


# --- methods ----------------------------------------------------------------------------------------


def train_from_scratch(
    task: str, config: Wav2Vec2Config, train_set: List[Example], updates: int, s: Settings
) -> Tuple[TaskModel, float]:
    torch.manual_seed(s.seed)
    model = TaskModel(Wav2Vec2Model(config), task)
    return model, train(model, train_set, updates, s.schedule(), batch_size=s.batch_size, seed=s.seed)


def continue_training(
    model: TaskModel, train_set: List[Example], s: Settings, controller: Optional[PruningController] = None
) -> float:
    """The prune-stage updates: same batches for every method, the schedule continuing after pretraining."""
    return train(
        model,
        train_set,
        s.prune_updates,
        s.schedule(),
        first_update=s.pretrain_updates + 1,
        controller=controller,
        batch_size=s.batch_size,
        seed=s.seed + 1,
    )


def run_method(
    method: str, budget: float, start: TaskModel, train_set: List[Example], s: Settings
) -> Tuple[TaskModel, float]:
    """Train ``method`` at ``budget`` from the dense ``start`` model; returns the (removed) model and seconds.

    The global generator is seeded first: the gates' initial log_alpha is drawn from it before ``train``
    seeds it again, and must not depend on what ran before in this process (which jobs came from the cache).
    """
    torch.manual_seed(s.seed)
    if method == "scratch":
        config = config_at_mac_ratio(start.encoder.config, budget, REFERENCE_SECONDS)
        return train_from_scratch(start.task, config, train_set, s.pretrain_updates + s.prune_updates, s)
    model = copy.deepcopy(start)
    if method == "dense":
        return model, continue_training(model, train_set, s)
    if method == "torch_pruning":
        model.encoder = magnitude_prune(
            model.encoder, config_at_mac_ratio(model.encoder.config, budget, REFERENCE_SECONDS)
        )
        return model, continue_training(model, train_set, s)
    cfg = pruning_config(method, budget, s)
    attach_gates(model.encoder, cfg.gates)
    seconds = continue_training(model, train_set, s, PruningController(model.encoder, cfg))
    model.encoder, _ = remove_masks(model.encoder)
    return model, seconds


# --- one dataset --------------------------------------------------------------------------------------


def score(
    name: str,
    model: TaskModel,
    label: str,
    budget: float,
    seconds: float,
    test: List[Example],
    extra: Dict[str, List[Example]],
) -> Dict:
    """One result row: exact encoder cost at 10 s, test metrics, and the metrics on every extra folder."""
    config = model.encoder.config
    cost, dense = exact_cost(config, REFERENCE_SECONDS), exact_cost(tiny_config(), REFERENCE_SECONDS)
    row = {
        "dataset": name,
        "method": label,
        "budget": budget,
        "gmacs": cost.macs / 1e9,
        "mac_ratio": cost.macs / dense.macs,
        "params_m": cost.params / 1e6,
        "train_min": seconds / 60,
        **evaluate(model, test),
    }
    for folder, examples in extra.items():
        for metric, value in evaluate(model, examples).items():
            row[f"{metric} {folder}"] = value
    print(
        f"  -> {label} @ {budget:g}: MAC ratio {row['mac_ratio']:.3f}, "
        + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k in ("wer", "cer", "accuracy"))
    )
    return row


def run_dataset(name: str, s: Settings, extra_dirs: List[Path], suffix: str) -> List[Dict]:
    stopwatch = Stopwatch()
    limits = {"train": s.max_train, "dev": s.max_eval, "test": s.max_eval}
    splits = load_task(name, DATA_DIR / name, {k: v for k, v in limits.items() if v is not None}, s.seed)
    if splits is None:
        return []
    print(
        f"{name}: "
        + ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        + f" utterances; load {load_average()}"
    )
    extra: Dict[str, List[Example]] = {}
    for folder in extra_dirs:
        examples = read_extra_test(name, folder)
        if examples:
            extra[folder.name] = examples
        else:
            print(f"  extra test {folder}: nothing in the {name} layout, skipped for {name}")
    task = TASKS[name]
    workdir = WORK_DIR / "accuracy" / f"{name}-{s.pretrain_key(name)}"
    print(f"dense start model: {s.pretrain_updates} updates")
    start, pretrain_seconds = cached(
        workdir / "dense_start.pt",
        lambda: train_from_scratch(task, tiny_config(), splits["train"], s.pretrain_updates, s),
    )
    print(f"  dev: {evaluate(start, splits['dev'])}")
    rows = [score(name, start, "Dense (start)", 1.0, pretrain_seconds, splits["test"], extra)]
    jobs = [("dense", 1.0)] + [(method, budget) for budget in s.budgets for method in METHODS]
    for method, budget in jobs:
        print(f"{name}: {LABELS[method]} @ {budget:g} (load {load_average()})")
        model, seconds = cached(
            workdir / f"{method}-{budget:g}-{s.run_key(name, method)}.pt",
            lambda method=method, budget=budget: run_method(method, budget, start, splits["train"], s),
        )
        rows.append(score(name, model, LABELS[method], budget, seconds, splits["test"], extra))
    write_report(name, rows, s, suffix, stopwatch.elapsed())
    return rows


# --- reports ------------------------------------------------------------------------------------------


def write_report(name: str, rows: List[Dict], s: Settings, suffix: str, took: str) -> None:
    metrics = ["wer", "cer"] if TASKS[name] == "ctc" else ["accuracy"]
    extra_columns = sorted({k for row in rows for k in row if " " in k})
    header = [
        "method",
        "budget",
        f"GMACs @ {REFERENCE_SECONDS:g} s",
        "MAC ratio",
        "params (M)",
        *[f"test {m.upper() if m != 'accuracy' else m} %" for m in metrics],
        *extra_columns,
        "train min",
    ]
    table = markdown_table(
        header,
        [
            (
                row["method"],
                f"{row['budget']:g}",
                f"{row['gmacs']:.3f}",
                f"{row['mac_ratio']:.3f}",
                f"{row['params_m']:.3f}",
                *[f"{row[m]:.1f}" for m in metrics],
                *[f"{row.get(c, float('nan')):.1f}" for c in extra_columns],
                f"{row['train_min']:.1f}",
            )
            for row in rows
        ],
    )
    text = "\n\n".join(
        [
            f"# Accuracy versus MACs: {name}",
            f"Settings: {json.dumps(asdict(s))}",
            "Encoder MACs exact (`exact_cost`) for 10 s of audio; params of the encoder (the head is excluded). "
            "Budget = target MAC ratio (HJ-Size/SepSize/Transformer-only: 1 - budget of their own quantity).",
            table,
            f"Took {took}; load average at the end {load_average()}.",
        ]
    )
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"accuracy_{name}{suffix}.md").write_text(text + "\n")
    (RESULTS_DIR / f"accuracy_{name}{suffix}.json").write_text(json.dumps(rows, indent=1))
    plot(name, rows, metrics, RESULTS_DIR / f"accuracy_{name}{suffix}.png")


def plot(name: str, rows: List[Dict], metrics: List[str], path: Path) -> None:
    """One panel per metric, one line per method: the metric versus exact GMACs; the dense models as stars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for label in dict.fromkeys(row["method"] for row in rows):
            points = sorted((row["gmacs"], row[metric]) for row in rows if row["method"] == label)
            dense = label.startswith("Dense (")
            axis.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                "*" if dense else "o-",
                label=label,
                markersize=10 if dense else 5,
            )
        axis.set_xlabel(f"encoder GMACs for {REFERENCE_SECONDS:g} s of audio")
        axis.set_ylabel(f"test {metric.upper() if metric != 'accuracy' else metric} %")
        axis.set_title(f"{name}: {metric.upper() if metric != 'accuracy' else metric} versus MACs")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", choices=sorted(TASKS), default=["cathy", "fsdd"])
    parser.add_argument("--budgets", type=float, nargs="+", default=Settings().budgets, help="MAC ratios")
    parser.add_argument("--pretrain_updates", type=int, default=Settings.pretrain_updates)
    parser.add_argument("--prune_updates", type=int, default=Settings.prune_updates)
    parser.add_argument("--batch_size", type=int, default=Settings.batch_size)
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--extra_test", type=Path, nargs="*", default=[], help="further test folders")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run on subsets with few updates")
    args = parser.parse_args()
    torch_pruning()  # the L1 baseline's package: fail now, not an hour in
    settings = Settings(
        pretrain_updates=args.pretrain_updates,
        prune_updates=args.prune_updates,
        budgets=args.budgets,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    suffix = ""
    if args.quick:
        settings = Settings(
            pretrain_updates=40,
            prune_updates=16,
            budgets=[0.8, 0.5],
            warmup=16,
            batch_size=args.batch_size,
            seed=args.seed,
            max_train=96,
            max_eval=24,
        )
        suffix = "_quick"
    stopwatch = Stopwatch()
    use_cpu_threads(args.threads)
    print(f"load average at start: {load_average()}")
    for name in args.datasets:
        run_dataset(name, settings, args.extra_test, suffix)
    print(f"accuracy benchmark took {stopwatch.elapsed()}")


if __name__ == "__main__":
    main()
