"""The evidence benchmark: accuracy versus exact MACs on real and SLURP-shaped speech, several seeds.

A stand-in for wav2vec2-base with base's cost proportions (bench/training.py) is pre-trained once on a
broad multi-voice corpus (bench/pretrain.py). Every method then fine-tunes it on a task for the same
number of updates over the same batches (per seed), as in the paper, where pruning happens while a
pre-trained model is fine-tuned:

- Dense: plain fine-tuning (the unpruned reference).
- HJ-MAC, HJ-SepSize, HJ-Size, Transformer-only: the library's gates and ``PruningController`` with its
  defaults; the target rises over the first third of the updates and is held for the rest; at the end
  the masks are fitted to the exact budget and removed, as ``espnet_prune.bin.remove_masks`` does, and the
  removed model is scored. Targets: HJ-MAC 1 - budget of the MACs; HJ-Size 1 - budget of all params and
  HJ-SepSize 1 - budget of CNN and of Transformer params (a uniform cut at those sparsities lands near the
  budget's MACs); Transformer-only (1 - budget) / the Transformer's share of the MACs of its
  Transformer params, so that it also lands near the budget (unreachable below the CNN's share).
- HJ-MAC + distillation: HJ-MAC with the library's layer-to-layer distillation from the pre-trained model;
  "fine-tuned teacher": from the dense fine-tuned model of the same seed instead (CoFi's teacher; it costs
  the dense run's updates on top).
- Torch-Pruning (L1): the pre-trained encoder cut by group L1 magnitude to the budget's MACs, then
  fine-tuned (bench/magnitude.py).
- From scratch: the same uniformly narrowed geometry, random init, fine-tuned for the same updates.

Tasks: ``cathy`` (real read speech, character CTC; WER and CER), ``fsdd`` (real spoken digits; accuracy),
``slurp`` (real SLURP sentences and intents, synthesized, held-out phrasings; intent accuracy). MACs are
exact (``exact_cost``) at the stand-in's reference length (1.875 s, T/D as base's at 10 s). Latency (HJ-Latency's
table and the measured latency column) is of one 10-s utterance on this CPU, where the stand-in's forward
pass is compute-bound; at 1.875 s it is dominated by per-op overhead that no structure removes.

Each (task, method, budget, seed) result is cached in bench/work/evidence/, so a rerun only adds what is
missing, and a task's report shows every run cached under the same settings (so the core grid and the
extra rows can be run by separate calls). Tables report mean and standard deviation over the seeds, and
the paper's claims C1-C3 are checked per task. Run: ``python -m bench.accuracy`` (all tasks, the claims'
grid ``CLAIMS_GRID``), ``--tasks fsdd``, ``--methods dense hj_mac`` (these at every budget), ``--budgets
0.5``, ``--seeds 0 1 2``, ``--quick`` (smoke run on subsets). Every run keeps its final model beside its
result, so ``--extra_test DIR`` scores cached runs on further test folders too.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import multiprocessing
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    DATA_DIR,
    RESULTS_DIR,
    WORK_DIR,
    Stopwatch,
    cache_key,
    cached_latency_table,
    interleaved_medians,
    load_average,
    markdown_table,
    use_cpu_threads,
)
from bench.data import NUM_DIGITS, Example, Splits, load_task, read_extra_test
from bench.magnitude import config_at_mac_ratio, magnitude_prune, torch_pruning
from bench.pretrain import PretrainSettings, pretrained_encoder
from bench.speech import SLURP_DIR, load_slurp_task
from bench.speed import inference_runs
from bench.training import (
    BASE_SECONDS,
    REFERENCE_SECONDS,
    Schedule,
    TaskModel,
    cost_proportions,
    evaluate,
    standin_config,
    train,
)
from espnet_prune.io import atomic_write
from espnet_prune.models import Wav2Vec2Config, Wav2Vec2Model
from espnet_prune.pruning import PruningConfig, PruningController, attach_gates, exact_cost, remove_masks
from espnet_prune.pruning.budget import exact_sparsity, fit_to_targets
from espnet_prune.pruning.distill import DistillConfig, LayerDistiller

TASKS = ("fsdd", "slurp", "cathy")
METRICS = {
    "cathy": ("cer", "wer"),  # the claims use the first: CER, as WER is near 100 on cathy
    "fsdd": ("accuracy",),
    "slurp": ("accuracy",),
}
HIGHER_IS_BETTER = {"wer": False, "cer": False, "accuracy": True}
HJ_VARIANTS = {
    "hj_mac": "mac",
    "hj_mac_distill": "mac",
    "hj_mac_distill_ft": "mac",
    "hj_sep_size": "sep_size",
    "hj_size": "size",
    "transformer_only": "transformer_only",
    "hj_latency": "latency",
    "hj_mac_long": "mac",
    "hj_mac_keep_attention": "mac",
}
LABELS = {
    "dense": "Dense fine-tuning",
    "hj_mac": "HJ-MAC",
    "hj_mac_distill": "HJ-MAC + distillation",
    "hj_mac_distill_ft": "HJ-MAC + distillation (fine-tuned teacher)",
    "hj_sep_size": "HJ-SepSize",
    "hj_size": "HJ-Size",
    "transformer_only": "Transformer-only",
    "torch_pruning": "Torch-Pruning (L1)",
    "scratch": "From scratch (same geometry)",
    "hj_latency": "HJ-Latency (this CPU)",
    "hj_mac_long": "HJ-MAC (MACs at 10 s)",
    "hj_mac_keep_attention": "HJ-MAC, attention ungated",
}
METHODS = tuple(LABELS)
# HJ-Latency prices this machine's latency table of the stand-in, and HJ-MAC at 10 s is its comparison at the
# same length; HJ-MAC with attention ungated is the SLURP demo's variant: their rows are run on request
# (--methods).
ON_REQUEST = ("hj_latency", "hj_mac_long", "hj_mac_keep_attention")
DEFAULT_METHODS = tuple(m for m in METHODS if m not in ON_REQUEST)
BUDGETS = (0.7, 0.5, 0.3)
# What the claims need, the default when neither --methods nor --budgets is given: dense, HJ-MAC at every
# budget (C1, C2), its rivals at <= 0.5 (C3; Transformer-only cannot reach 0.3).
CLAIMS_GRID: Dict[str, Tuple[float, ...]] = {
    "dense": (1.0,),
    "hj_mac": BUDGETS,
    "transformer_only": (0.5,),
    "torch_pruning": (0.5, 0.3),
}
TIMING_ROUNDS = 15  # interleaved rounds of the measured latency column (median) in each process
# Fresh processes the latency column is measured in (median): one process's medians moved single rows by up
# to 0.12 between two writes; the range over the processes is shown beside the column.
LATENCY_PROCESSES = 3
# The stand-in's latency (HJ-Latency's table, the measured column) is of one utterance of base's reference
# length: its forward pass there is compute-bound (README: at 1.875 s the table's whole-model error was 0.15).
LATENCY_SECONDS = BASE_SECONDS
# The length each HJ variant prices its quantity at: the reference length, but HJ-Latency and the HJ-MAC it
# is compared with price that of the latency.
PRICED_AT = {"hj_latency": LATENCY_SECONDS, "hj_mac_long": LATENCY_SECONDS}
# Methods whose gates differ from the library's default (every structure gated): HJ-MAC with attention heads
# and layers ungated, the SLURP demo's setting (conf/demo/train_hj_mac_keep_attention.yaml), where it kept
# the intent accuracy that gating attention lost; whether it does so here is what its rows show.
GATES = {"hj_mac_keep_attention": {"attention_heads": False, "attention_layers": False}}
# HJ-MAC and its variants, each checked against claims C1-C3 (the claims are HJ-MAC's; the variants' lines
# say what their change does to them).
HJ_MAC_FAMILY = ("hj_mac", "hj_mac_keep_attention", "hj_mac_distill", "hj_mac_distill_ft")
DISTILL = DistillConfig(weight=1.0, layers=[2, 4], loss="l1_cos")  # DPHuBERT's every third layer, for 4


@dataclass
class Settings:
    """Everything that decides a run's result (and so its cache key), besides task, method, budget, seed."""

    updates: int = 300
    batch_size: int = 8
    peak_lr: float = 1e-3
    warmup: int = 50
    target_warmup: float = 1 / 3  # fraction of the updates over which HJ targets rise; the rest holds them
    # A gate closes in about 4.6 / gate_lr updates (README): 46, inside the 100-update target warm-up. The
    # library's default (0.02) is for runs of thousands of updates; here it lags the warm-up (see README).
    gate_lr: float = 0.1
    max_train: Optional[int] = None  # quick runs train and score on subsets
    max_eval: Optional[int] = None
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)

    def results_dir(self, task: str) -> Path:
        """Where the runs of ``task`` under these settings are cached, one JSON file per run. The gate
        settings are not in the folder's key but in the gated runs' file names (``run_file``), so that the
        ungated runs serve every gate setting."""
        shared = {k: v for k, v in asdict(self).items() if k != "gate_lr"}
        return WORK_DIR / "evidence" / f"{task}-{cache_key({**shared, 'task': task})}"

    def run_file(self, task: str, method: str, budget: float, seed: int) -> Path:
        gated = f"-gate_lr{self.gate_lr:g}" if method in HJ_VARIANTS else ""
        return self.results_dir(task) / f"{method}-{budget:g}-seed{seed}{gated}.json"

    def covers(self, row: Dict) -> bool:
        """Whether a cached row was run under these settings' gate settings (ungated rows always are)."""
        return row["method"] not in HJ_VARIANTS or row.get("gate_lr") == self.gate_lr


def targets_for(method: str, budget: float) -> Optional[Dict[str, float]]:
    """The pruning block's target keys for ``method`` at MAC ``budget``; None when it cannot get there.

    The size variants' targets are chosen to land near the budget's MACs: HJ-SepSize removes ``1 - budget``
    of the CNN's and of the Transformer's params (each part's MACs follow its params), while Transformer-only
    and HJ-Size take the MACs to remove from the Transformer (HJ-Size too, as the CNN holds under 5% of the
    params but 35% of the MACs: cutting it gains little size), which cannot remove over 90% of it."""
    sparsity = 1.0 - budget
    if method == "hj_sep_size":
        return {"cnn_target_sparsity": sparsity, "transformer_target_sparsity": sparsity}
    if method in ("transformer_only", "hj_size"):
        shares = cost_proportions(standin_config(), REFERENCE_SECONDS)
        transformer = sparsity / (1.0 - shares["CNN share of MACs"])
        if transformer > 0.9:
            return None
        # HJ-Size's target is of all params, Transformer-only's of the Transformer's
        of_all = 1.0 - shares["CNN share of params"] if method == "hj_size" else 1.0
        return {"target_sparsity": round(transformer * of_all, 3)}
    return {"target_sparsity": sparsity}


def read_cached_run(path: Path) -> Dict:
    """A cached run's row; an HJ run trained at other targets than ``targets_for`` gives it now (the
    mapping changed) is an error naming the file, never a row shown under the new targets. Rows cached
    before the targets were recorded are taken as they are."""
    row = json.loads(path.read_text())
    if row["method"] in HJ_VARIANTS and "targets" in row:
        expected = targets_for(row["method"], row["budget"])
        trained, wanted = sorted(row["targets"].values()), sorted((expected or {}).values())
        if len(trained) != len(wanted) or not all(
            math.isclose(a, b, abs_tol=1e-9) for a, b in zip(trained, wanted)
        ):
            raise SystemExit(
                f"{path}: run at the targets {row['targets']}, but {LABELS[row['method']]} at {row['budget']:g} "
                f"now gets {expected}; delete it and its .pt to run it again"
            )
    return row


def pruning_config(method: str, budget: float, s: Settings) -> PruningConfig:
    """The library's defaults, with the variant, its targets, the target warm-up and gate lr of this benchmark."""
    seconds = PRICED_AT.get(method, REFERENCE_SECONDS)
    latency = (
        {"latency_table": str(cached_latency_table(standin_config(), seconds, "standin-"))}
        if method == "hj_latency"
        else {}
    )
    return PruningConfig.from_dict(
        {
            "variant": HJ_VARIANTS[method],
            "warmup_updates": int(s.target_warmup * s.updates),
            "gate_lr": s.gate_lr,
            "reference_seconds": seconds,
            **latency,
            **targets_for(method, budget),
            **({"gates": GATES[method]} if method in GATES else {}),
        }
    )


def _latency_ratios_here(configs: Dict[str, Dict], dense: str, threads: int, rounds: int) -> Dict[str, float]:
    """In this process: each shape's eval latency (median of interleaved rounds) over that of ``dense``."""
    use_cpu_threads(threads)
    torch.manual_seed(0)
    models = {key: Wav2Vec2Model(Wav2Vec2Config.from_dict(config)).eval() for key, config in configs.items()}
    medians = interleaved_medians(inference_runs(models, LATENCY_SECONDS), rounds)
    return {key: medians[key] / medians[dense] for key in configs}


def measured_latency_ratios(
    rows: List[Dict], processes: int = LATENCY_PROCESSES, rounds: int = TIMING_ROUNDS
) -> None:
    """Set each row's ``latency_ratio``: its removed model's eval latency over the dense stand-in's on this
    machine, one utterance of LATENCY_SECONDS (random weights: the time depends on the shape only), the
    median over ``processes`` fresh interpreters, each timing every shape in ``rounds`` interleaved rounds;
    the ratios of each process are kept as ``latency_ratio_repeats``. Rows cached without their shape are
    left without."""
    dense = standin_config().to_dict()
    configs = {cache_key(dense): dense}  # a row of the dense shape is timed as the dense model itself
    for row in rows:
        if "encoder_config" in row:
            configs.setdefault(cache_key(row["encoder_config"]), row["encoder_config"])
    spawn = multiprocessing.get_context("spawn")  # a fresh allocator and thread pool each time
    repeats = []
    for _ in range(processes):
        with spawn.Pool(1) as pool:
            repeats.append(
                pool.apply(_latency_ratios_here, (configs, cache_key(dense), torch.get_num_threads(), rounds))
            )
    for row in rows:
        if "encoder_config" in row:
            ratios = [repeat[cache_key(row["encoder_config"])] for repeat in repeats]
            row["latency_ratio"] = statistics.median(ratios)
            row["latency_ratio_repeats"] = ratios


# --- one run --------------------------------------------------------------------------------------------


def task_model(task: str, classes: int, pretrained: TaskModel) -> TaskModel:
    """The pre-trained encoder with the task's head: the pre-trained CTC head for ASR, a new one otherwise."""
    if task == "cathy":
        return copy.deepcopy(pretrained)
    return TaskModel(copy.deepcopy(pretrained.encoder), "classify", classes)


def fine_tune(
    task: str,
    method: str,
    budget: float,
    seed: int,
    train_set: List[Example],
    classes: int,
    pretrained: TaskModel,
    s: Settings,
    teacher: Optional[Wav2Vec2Model] = None,
) -> Tuple[TaskModel, Dict, float]:
    """Fine-tune with ``method`` at ``budget`` (distilling from ``teacher`` when given): the final (removed)
    model, the HJ sparsities (target, trained masks, removed model; empty for the other methods) and the
    training seconds."""
    torch.manual_seed(seed)  # the head and the gates' initial log_alpha are drawn from it
    kind = "ctc" if task == "cathy" else "classify"
    model = task_model(task, classes, pretrained)
    dense_config = model.encoder.config
    controller: Optional[PruningController] = None
    distiller = None
    sparsities: Dict = {}
    if method == "scratch":
        model = TaskModel(
            Wav2Vec2Model(config_at_mac_ratio(dense_config, budget, REFERENCE_SECONDS)), kind, classes
        )
    elif method == "torch_pruning":
        model.encoder = magnitude_prune(
            model.encoder, config_at_mac_ratio(dense_config, budget, REFERENCE_SECONDS)
        )
    elif method in HJ_VARIANTS:
        cfg = pruning_config(method, budget, s)
        attach_gates(model.encoder, cfg.gates)
        controller = PruningController(model.encoder, cfg)
        if teacher is not None:
            model.distiller = LayerDistiller(copy.deepcopy(teacher), DISTILL)
            distiller = lambda: DISTILL.weight * model.distiller(*model.last_output)  # noqa: E731
    seconds = train(
        model,
        train_set,
        s.updates,
        Schedule(s.peak_lr, s.warmup),
        controller=controller,
        batch_size=s.batch_size,
        seed=seed,
        log_every=100,
        distiller=distiller,
    )
    model.last_output = None
    if controller is not None:
        sparsities["gate_lr"] = controller.cfg.gate_lr
        targets = controller.cfg.targets()
        sparsities["targets"] = {q: t for q, t in targets}
        table, seconds_priced = controller.latency_table, controller.cfg.reference_seconds
        sparsities["trained_sparsity"] = {
            q: exact_sparsity(model.encoder, q, seconds_priced, table) for q, _ in targets
        }
        fits = fit_to_targets(model.encoder, targets, seconds_priced, table)
        sparsities["removed_sparsity"] = {fit.quantity: fit.fitted for fit in fits}
        model.encoder, _ = remove_masks(model.encoder)
        if teacher is not None:
            del model.distiller  # never part of the pruned model
    return model, sparsities, seconds


def run(
    task: str,
    method: str,
    budget: float,
    seed: int,
    data: Splits,
    classes: int,
    pretrained: TaskModel,
    s: Settings,
    teacher: Optional[Wav2Vec2Model] = None,
) -> Tuple[Dict, TaskModel]:
    """Fine-tune with ``method`` at ``budget`` (distilling from ``teacher`` when given): the test metrics
    and exact costs of the final model, and the model."""
    model, sparsities, seconds = fine_tune(
        task, method, budget, seed, data["train"], classes, pretrained, s, teacher
    )
    cost, dense = (
        exact_cost(model.encoder.config, REFERENCE_SECONDS),
        exact_cost(pretrained.encoder.config, REFERENCE_SECONDS),
    )
    row = {
        **sparsities,
        "task": task,
        "method": method,
        "budget": budget,
        "seed": seed,
        "mac_ratio": cost.macs / dense.macs,
        "param_ratio": cost.params / dense.params,
        "params_m": cost.params / 1e6,
        "encoder_config": model.encoder.config.to_dict(),
        "train_min": seconds / 60,
        **evaluate(model, data["test"]),
    }
    return row, model


def model_file(run_file: Path) -> Path:
    """Where a run's final (removed) model is kept beside its result, to score further test sets later."""
    return run_file.with_suffix(".pt")


def save_model(model: TaskModel, path: Path) -> None:
    state = {"config": model.encoder.config.to_dict(), "task": model.task, "classes": model.head.out_features}
    with atomic_write(path, "wb") as f:
        torch.save({**state, "state": model.state_dict()}, f)


def load_model(path: Path) -> TaskModel:
    saved = torch.load(path, weights_only=True)
    encoder = Wav2Vec2Model(Wav2Vec2Config.from_dict(saved["config"], source=str(path)))
    model = TaskModel(encoder, saved["task"], saved["classes"] if saved["task"] == "classify" else 0)
    model.load_state_dict(saved["state"])
    return model


def distillation_teacher(
    task: str, method: str, seed: int, load: TaskData, s: Settings
) -> Optional[Wav2Vec2Model]:
    """The frozen teacher ``method`` distils from: the pre-trained encoder, or the dense fine-tuned one of
    the same seed (run first when not cached); None for the methods without distillation."""
    if method == "hj_mac_distill":
        return load.get()[2].encoder
    if method == "hj_mac_distill_ft":
        cached_run(task, "dense", 1.0, seed, load, s)
        dense = s.run_file(task, "dense", 1.0, seed)
        kept = model_file(dense)
        if not kept.is_file():
            raise FileNotFoundError(
                f"{dense}: the dense run of seed {seed}, the teacher of {method}, is cached without its model "
                f"({kept.name}); delete the result file to run it again"
            )
        return load_model(kept).encoder
    return None


def cached_run(task: str, method: str, budget: float, seed: int, load: TaskData, s: Settings) -> Dict:
    path = s.run_file(task, method, budget, seed)
    if path.is_file():
        return read_cached_run(path)
    data, classes, pretrained = load.get()
    teacher = distillation_teacher(task, method, seed, load, s)
    print(f"{task}: {LABELS[method]} @ {budget:g}, seed {seed} (load {load_average()})", flush=True)
    row, model = run(task, method, budget, seed, data, classes, pretrained, s, teacher)
    metrics = ", ".join(f"{m} {row[m]:.1f}" for m in METRICS[task])
    print(f"  -> MAC ratio {row['mac_ratio']:.3f}, {metrics} ({row['train_min']:.1f} min)", flush=True)
    save_model(model, model_file(path))
    with atomic_write(path) as f:
        json.dump(row, f)
    return row


def extra_key(metric: str, folder: Path) -> str:
    return f"{metric}@{folder.name}"


def score_extra_tests(task: str, run_files: List[Path], folders: List[Path]) -> None:
    """Score each run's kept model on every further test folder (the task's layout) it was not scored on
    yet, and record the metrics in its result file (``<metric>@<folder name>``)."""
    for folder in folders:
        examples = read_extra_test(task, folder)
        for path in run_files:
            row = json.loads(path.read_text())
            if all(extra_key(m, folder) in row for m in METRICS[task]):
                continue
            if not model_file(path).is_file():
                print(
                    f"{task}: {path.name} has no kept model (run before models were kept): not scored on {folder}"
                )
                continue
            scores = evaluate(load_model(model_file(path)), examples)
            row.update({extra_key(m, folder): scores[m] for m in METRICS[task]})
            with atomic_write(path) as f:
                json.dump(row, f)


class TaskData:
    """The task's splits, classes and the pre-trained model, read only when a run is not cached."""

    def __init__(self, task: str, s: Settings) -> None:
        self.task, self.s = task, s
        self.loaded: Optional[Tuple[Splits, int, TaskModel]] = None

    def available(self) -> bool:
        folder = SLURP_DIR if self.task == "slurp" else DATA_DIR / self.task
        if not folder.is_dir():
            print(f"skipping {self.task}: {folder} not found (the shared data folder is not available)")
        return folder.is_dir()

    def get(self) -> Tuple[Splits, int, TaskModel]:
        if self.loaded is None:
            s = self.s
            if self.task == "slurp":
                intents, data = load_slurp_task()
                classes = len(intents)
            else:
                data = load_task(self.task, DATA_DIR / self.task)
                classes = NUM_DIGITS if self.task == "fsdd" else 0
            data = {k: _subset(v, s.max_train if k == "train" else s.max_eval) for k, v in data.items()}
            print(f"{self.task}: " + ", ".join(f"{k} {len(v)}" for k, v in data.items()) + " utterances")
            self.loaded = (data, classes, pretrained_encoder(s.pretrain))
        return self.loaded


def _subset(examples: List[Example], limit: Optional[int]) -> List[Example]:
    return examples if limit is None else examples[:: max(1, len(examples) // limit)][:limit]


# --- summary and claims ------------------------------------------------------------------------------


@dataclass
class Point:
    """One (method, budget) over its seeds."""

    method: str
    budget: float
    rows: List[Dict]

    def mean(self, key: str) -> float:
        return statistics.fmean(row[key] for row in self.rows)

    def std(self, key: str) -> float:
        values = [row[key] for row in self.rows]
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def shown(self, key: str, digits: int = 3) -> str:
        """Mean ± std of ``key``, or "-" where a row lacks it (cached before it was recorded)."""
        if any(key not in row for row in self.rows):
            return "-"
        return f"{self.mean(key):.{digits}f} ± {self.std(key):.{digits}f}"

    def latency_range(self) -> str:
        """The widest range (max - min) of a row's latency ratio over the processes that measured it."""
        if any("latency_ratio_repeats" not in row for row in self.rows):
            return "-"
        ranges = [max(row["latency_ratio_repeats"]) - min(row["latency_ratio_repeats"]) for row in self.rows]
        return f"{max(ranges):.3f}"

    def sparsity(self, stage: str) -> str:
        if stage not in self.rows[0]:
            return "-"
        quantities = self.rows[0][stage]
        return " / ".join(f"{statistics.fmean(row[stage][q] for row in self.rows):.3f}" for q in quantities)


def points(rows: List[Dict]) -> List[Point]:
    grouped: Dict[Tuple[str, float], List[Dict]] = {}
    for row in rows:
        grouped.setdefault((row["method"], row["budget"]), []).append(row)
    order = {m: i for i, m in enumerate(METHODS)}
    return [
        Point(m, b, r) for (m, b), r in sorted(grouped.items(), key=lambda kv: (-kv[0][1], order[kv[0][0]]))
    ]


def better_sign(metric: str) -> float:
    """+1 where a higher ``metric`` is better (accuracy), -1 where lower is (CER, WER)."""
    return 1.0 if HIGHER_IS_BETTER[metric] else -1.0


def compare(a: Point, b: Point, metric: str) -> Tuple[float, float]:
    """(a's advantage over b in the metric's better direction, the spread: the larger of the two stds)."""
    return better_sign(metric) * (a.mean(metric) - b.mean(metric)), max(a.std(metric), b.std(metric))


def paired(a: Point, b: Point, metric: str) -> str:
    """a's advantage over b seed for seed, where both ran the same seeds (the same pre-trained start, task
    head init and batch order): a sharper test than the two spreads, reported beside the claim's verdict.
    Empty with fewer than two common seeds."""
    sign = better_sign(metric)
    mine, theirs = ({row["seed"]: row[metric] for row in p.rows} for p in (a, b))
    common = sorted(mine.keys() & theirs.keys())
    if len(common) < 2:
        return ""
    gains = [sign * (mine[seed] - theirs[seed]) for seed in common]
    ahead = sum(gain > 0 for gain in gains)
    return (
        f" Seed for seed: {statistics.fmean(gains):+.2f} ± {statistics.stdev(gains):.2f} "
        f"over seeds {', '.join(map(str, common))}, ahead in {ahead} of {len(common)}."
    )


TIE = "tie (inside the spread)"
# The other rivals the issue names, compared with HJ-MAC at each budget beside the claims: the size variants
# (at targets that land near the budget's MACs, their MAC ratio shown) and the same geometry from scratch.
SIZE_AND_SCRATCH = ("hj_sep_size", "hj_size", "scratch")


def verdict(gain: float, spread: float, better: str, tie: str, worse: str) -> str:
    """``better`` when ``gain`` is larger than the spread, ``worse`` when it is below minus the spread,
    ``tie`` inside it: the benchmark's one rule for comparing two points."""
    return better if gain > spread else tie if gain >= -spread else worse


def claims(task: str, pts: List[Point]) -> List[str]:
    """C1-C3 for the task's first metric, stated with the numbers: for HJ-MAC, then for each of its variants
    (attention ungated, distillation) that ran."""
    metric = METRICS[task][0]
    find = {(p.method, p.budget): p for p in pts}
    dense = next((p for p in pts if p.method == "dense"), None)
    lines = []

    def show(p: Point) -> str:
        where = f"{LABELS[p.method]} @ {p.budget:g} (MAC ratio {p.mean('mac_ratio'):.3f})"
        return f"{where}: {p.mean(metric):.1f} ± {p.std(metric):.1f}"

    for method in HJ_MAC_FAMILY:
        name = LABELS[method]
        hj70, hj50 = find.get((method, 0.7)), find.get((method, 0.5))
        if dense and hj70:
            said = verdict(*compare(hj70, dense, metric), "holds (beats dense)", "holds (tie)", "fails")
            lines.append(
                f"C1 {name} at ~0.7 matches or beats dense: {said}. {show(hj70)} vs {show(dense)}."
                + paired(hj70, dense, metric)
            )
        if dense and hj50:
            gain, _ = compare(hj50, dense, metric)
            said = "holds" if gain >= -dense.std(metric) else "fails"
            lines.append(
                f"C2 {name} at ~0.5 within one std of dense: {said}. {show(hj50)} vs {show(dense)}."
                + paired(hj50, dense, metric)
            )
        for budget, rival in itertools.product((0.5, 0.3), ("transformer_only", "torch_pruning")):
            hj, other = find.get((method, budget)), find.get((rival, budget))
            if hj and other:
                said = verdict(*compare(hj, other, metric), "holds", TIE, "fails (rival better)")
                lines.append(
                    f"C3 {name} beats {LABELS[rival]} at {budget:g}: {said}. {show(hj)} vs {show(other)}."
                    + paired(hj, other, metric)
                )
    for budget, rival in itertools.product(BUDGETS, SIZE_AND_SCRATCH):
        hj, other = find.get(("hj_mac", budget)), find.get((rival, budget))
        if hj and other:
            said = verdict(*compare(hj, other, metric), "HJ-MAC better", TIE, "HJ-MAC worse")
            lines.append(
                f"Beside the claims, HJ-MAC vs {LABELS[rival]} at {budget:g}: {said}. {show(hj)} vs {show(other)}."
                + paired(hj, other, metric)
            )
    return [f"- {line}" for line in lines]


def latency_lines(task: str, pts: List[Point]) -> List[str]:
    """Each HJ-Latency point against HJ-MAC at equal measured latency: HJ-MAC's first metric interpolated
    linearly between its two points whose mean latency ratios bracket HJ-Latency's (HJ-MAC priced at the
    latency's length when it ran, else at the reference length); the spread is the largest of the three
    standard deviations."""
    metric = METRICS[task][0]
    timed = [p for p in pts if p.rows and all("latency_ratio" in row for row in p.rows)]
    rival, curve = "hj_mac", []
    for rival in ("hj_mac_long", "hj_mac"):
        curve = sorted((p for p in timed if p.method == rival), key=lambda p: p.mean("latency_ratio"))
        if len(curve) >= 2:
            break
    if len(curve) < 2:
        return []
    sign = better_sign(metric)
    lines = []
    for p in timed:
        if p.method != "hj_latency":
            continue
        x = p.mean("latency_ratio")
        head = f"- HJ-Latency at {p.budget:g}: measured latency ratio {p.shown('latency_ratio')}, {metric} "
        head += f"{p.mean(metric):.1f} ± {p.std(metric):.1f}"
        bracket = [
            (a, b)
            for a, b in zip(curve, curve[1:])
            if a.mean("latency_ratio") <= x <= b.mean("latency_ratio")
        ]
        if not bracket:
            low, high = curve[0].mean("latency_ratio"), curve[-1].mean("latency_ratio")
            lines.append(f"{head}; outside {LABELS[rival]}'s measured latency ratios ({low:.3f}-{high:.3f}).")
            continue
        a, b = bracket[0]
        weight = (x - a.mean("latency_ratio")) / max(b.mean("latency_ratio") - a.mean("latency_ratio"), 1e-12)
        value = a.mean(metric) + weight * (b.mean(metric) - a.mean(metric))
        gain, spread = sign * (p.mean(metric) - value), max(p.std(metric), a.std(metric), b.std(metric))
        lines.append(
            f"{head}; {LABELS[rival]} at that latency ratio (between its {a.budget:g} and {b.budget:g} points): "
            f"{value:.1f}: {verdict(gain, spread, 'better', TIE, 'worse')}."
        )
    return lines


def write_report(
    task: str, rows: List[Dict], s: Settings, seeds: List[int], took: str, suffix: str = ""
) -> None:
    metrics = METRICS[task]
    pts = points(rows)
    extra = sorted({key for row in rows for key in row if "@" in key})  # scores on --extra_test folders
    header = [
        "method",
        "budget",
        "target sparsity",
        "exact sparsity (trained masks)",
        "exact sparsity (removed)",
        "MAC ratio",
        f"latency ratio (this CPU, {LATENCY_SECONDS:g} s)",
        "latency range over processes",
        "params (M)",
        *[f"test {m.upper() if m != 'accuracy' else m} % (mean ± std)" for m in metrics],
        *[f"{key.replace('@', ' @ ')} %" for key in extra],
        "seeds",
        "train min",
    ]
    table = markdown_table(
        header,
        [
            (
                LABELS[p.method],
                f"{p.budget:g}",
                p.sparsity("targets"),
                p.sparsity("trained_sparsity"),
                p.sparsity("removed_sparsity"),
                f"{p.mean('mac_ratio'):.3f}",
                p.shown("latency_ratio"),
                p.latency_range(),
                f"{p.mean('params_m'):.3f}",
                *[f"{p.mean(m):.1f} ± {p.std(m):.1f}" for m in metrics],
                *[p.shown(key, digits=1) for key in extra],
                len(p.rows),
                f"{p.mean('train_min'):.1f}",
            )
            for p in pts
        ],
    )
    text = "\n\n".join(
        [
            f"# Evidence benchmark: {task}",
            f"Settings: {json.dumps(asdict(s))}; seeds {seeds}.",
            f"MACs exact (`exact_cost`) at the reference length {REFERENCE_SECONDS:g} s; params of the encoder; "
            f"latency ratio: the removed model's eval time for one {LATENCY_SECONDS:g}-s utterance over the dense "
            f"stand-in's on this CPU, the median over {LATENCY_PROCESSES} fresh processes of each one's median of "
            f"{TIMING_ROUNDS} interleaved rounds, ± over the seeds' shapes; beside it the widest range of one "
            "shape's ratio over the processes: differences between rows below it are noise. "
            "Sparsities are of each variant's controlled quantities (sep_size: CNN / Transformer params).",
            table,
            "Claims (first metric; spread = the larger standard deviation of the two points; seed for seed = "
            "the mean ± std of the differences between runs of the same seed, positive where the first point "
            "is better):",
            "\n".join(claims(task, pts) + latency_lines(task, pts)),
            f"Took {took}; load average at the end {load_average()}.",
        ]
    )
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"evidence_{task}{suffix}.md").write_text(text + "\n")
    (RESULTS_DIR / f"evidence_{task}{suffix}.json").write_text(json.dumps(rows, indent=1))
    plot(task, pts, metrics, RESULTS_DIR / f"evidence_{task}{suffix}.png")


def plot(task: str, pts: List[Point], metrics: Tuple[str, ...], path: Path) -> None:
    """One panel per metric: mean ± std versus the exact MAC ratio, one line per method; and the first
    metric versus the measured latency ratio (accuracy at equal latency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(metric, "mac_ratio") for metric in metrics] + [(metrics[0], "latency_ratio")]
    timed = [p for p in pts if all("latency_ratio" in row for row in p.rows)]
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    for axis, (metric, cost) in zip(axes[0], panels):
        shown = pts if cost == "mac_ratio" else timed
        for method in dict.fromkeys(p.method for p in shown):
            mine = sorted((p for p in shown if p.method == method), key=lambda p: p.mean(cost))
            axis.errorbar(
                [p.mean(cost) for p in mine],
                [p.mean(metric) for p in mine],
                xerr=[p.std(cost) for p in mine],
                yerr=[p.std(metric) for p in mine],
                fmt="*" if method == "dense" else "o-",
                markersize=11 if method == "dense" else 5,
                capsize=3,
                label=LABELS[method],
            )
        axis.set_xlabel(
            f"exact MAC ratio (reference length {REFERENCE_SECONDS:g} s)"
            if cost == "mac_ratio"
            else f"measured latency ratio (this CPU, {LATENCY_SECONDS:g} s)"
        )
        axis.set_ylabel(f"test {metric} % (mean ± std over seeds)")
        axis.set_title(f"{task}: {metric} versus {'MACs' if cost == 'mac_ratio' else 'latency'}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_plan(methods: Optional[List[str]], budgets: Optional[List[float]]) -> List[Tuple[str, float]]:
    """The (method, budget) points to run, by decreasing budget: ``CLAIMS_GRID`` when neither is given,
    else every method at every budget (default: ``DEFAULT_METHODS``, ``BUDGETS``), dense at 1 only."""
    if methods is None and budgets is None:
        plan = [(method, budget) for method, grid in CLAIMS_GRID.items() for budget in grid]
    else:
        plan = [
            (method, budget)
            for method in methods or DEFAULT_METHODS
            for budget in ([1.0] if method == "dense" else budgets or BUDGETS)
        ]
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(plan, key=lambda point: (-point[1], order[point[0]]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        help="run these at every budget (default with --budgets: all but "
        + ", ".join(ON_REQUEST)
        + "; hj_latency is a latency target priced by this machine's table of the stand-in whose budget is "
        "the latency ratio); with neither option, the claims' grid: "
        + ", ".join(f"{m} @ {'/'.join(map(str, b))}" for m, b in CLAIMS_GRID.items()),
    )
    parser.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        help=f"MAC ratios (default with --methods: {' '.join(map(str, BUDGETS))})",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--updates", type=int, default=Settings.updates, help="fine-tuning updates per run")
    parser.add_argument("--gate_lr", type=float, default=Settings.gate_lr, help="the HJ variants' gate lr")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--extra_test",
        type=Path,
        nargs="+",
        default=[],
        metavar="DIR",
        help="further test folders in the task's layout (fsdd: digit recordings, cathy: audio with "
        "transcripts): every kept model of the task is scored on them too, cached runs included",
    )
    parser.add_argument(
        "--report_suffix",
        default="",
        help="appended to the report's names (evidence_<task><suffix>.md), for a report of a part of the grid",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: subsets, few updates, tiny pre-training"
    )
    args = parser.parse_args()
    for folder in args.extra_test:
        if not folder.is_dir():
            parser.error(f"--extra_test: {folder} is not a folder")
    if args.extra_test and "slurp" in args.tasks:
        parser.error("--extra_test: the slurp task has no folder layout for further test sets (fsdd, cathy)")
    torch_pruning()  # the L1 baseline's package: fail now, not an hour in
    s = Settings(updates=args.updates, gate_lr=args.gate_lr)
    if args.quick:
        s = Settings(
            updates=12,
            warmup=4,
            max_train=64,
            max_eval=24,
            pretrain=PretrainSettings(updates=20, eval_every=10, lm_sentences=60, grammar_sentences=20),
        )
    stopwatch = Stopwatch()
    use_cpu_threads(args.threads)
    print(f"load average at start: {load_average()}")
    for task in args.tasks:
        load = TaskData(task, s)
        if not load.available():
            continue
        task_watch = Stopwatch()
        for method, budget in run_plan(args.methods, args.budgets):
            if method in HJ_VARIANTS and targets_for(method, budget) is None:
                print(f"{task}: {LABELS[method]} cannot reach a MAC ratio of {budget:g} (skipped)")
                continue
            for seed in args.seeds:
                cached_run(task, method, budget, seed, load, s)

        # the report shows every run cached under these settings for these seeds, from this call or earlier ones
        def covered(path: Path) -> bool:
            row = read_cached_run(path)
            return row["seed"] in args.seeds and s.covers(row)

        results = [path for path in sorted(s.results_dir(task).glob("*.json")) if covered(path)]
        score_extra_tests(task, results, args.extra_test)
        rows = [read_cached_run(path) for path in results]
        suffix = "_quick" if args.quick else "" if s.gate_lr == Settings.gate_lr else f"_gate_lr{s.gate_lr:g}"
        suffix += args.report_suffix
        if args.quick:  # a smoke run times once, briefly
            measured_latency_ratios(rows, processes=1, rounds=3)
        else:
            measured_latency_ratios(rows)
        write_report(task, rows, s, args.seeds, task_watch.elapsed(), suffix)
    print(f"evidence benchmark took {stopwatch.elapsed()}")


if __name__ == "__main__":
    main()
