"""The evidence benchmark's set-up: a stand-in with wav2vec2-base's cost proportions, held-out SLURP
phrasings kept out of pre-training, and the claim verdicts (a difference inside the spread is a tie)."""

from __future__ import annotations

import pytest

from espnet_prune.models import Wav2Vec2Model
from espnet_prune.models.config import wav2vec2_base
from espnet_prune.pruning import exact_cost, measure_macs

from conftest import REPO

SHARED_SLURP = REPO.parent / "shared" / "data" / "slurp"


def test_the_stand_in_has_the_cost_proportions_of_wav2vec2_base_within_5_points() -> None:
    from bench.training import BASE_SECONDS, REFERENCE_SECONDS, cost_proportions, standin_config

    base = cost_proportions(wav2vec2_base(), BASE_SECONDS)
    standin = cost_proportions(standin_config(), REFERENCE_SECONDS)
    assert base.keys() == standin.keys() and len(base) == 4
    for name in base:
        assert abs(standin[name] - base[name]) <= 0.05, (name, standin[name], base[name])
    # the shares come from a cost model that counts what the stand-in computes
    config = standin_config()
    assert (
        measure_macs(Wav2Vec2Model(config).eval(), REFERENCE_SECONDS)
        == exact_cost(config, REFERENCE_SECONDS).macs
    )
    # base's shares as published: the CNN is ~4% of the params and ~1/3 of the MACs at 10 s
    assert 0.04 < base["CNN share of params"] < 0.05 and 0.30 < base["CNN share of MACs"] < 0.36


def test_the_demo_prunes_the_stand_in_geometry_at_its_reference_length() -> None:
    """The recipes' demo model and HJ-MAC budget are the evidence stand-in's, so the demo prices MACs in
    wav2vec2-base's proportions (the test above), not with the T^2 attention scores of 10 s at width 144."""
    import dataclasses

    import yaml

    from bench.training import REFERENCE_SECONDS, standin_config
    from espnet_prune.models import Wav2Vec2Config

    demo = REPO / "egs2" / "TEMPLATE" / "asr1" / "conf" / "demo"
    model = Wav2Vec2Config(**yaml.safe_load((demo / "model.yaml").read_text()))
    standin = standin_config()
    regularisation = {
        "dropout",
        "attention_dropout",
        "activation_dropout",
        "projection_dropout",
        "layer_drop",
    }
    for field in dataclasses.fields(Wav2Vec2Config):
        if field.name not in regularisation:
            assert getattr(model, field.name) == getattr(standin, field.name), field.name
    pruning = yaml.safe_load((demo / "train_hj_mac.yaml").read_text())["encoder_conf"]["pruning"]
    assert pruning["variant"] == "mac" and pruning["reference_seconds"] == REFERENCE_SECONDS


@pytest.mark.skipif(not SHARED_SLURP.is_dir(), reason="../shared/data/slurp not available")
def test_slurp_task_splits_are_held_out_phrasings_and_never_pre_trained_on() -> None:
    from bench.data import normalise_text
    from bench.speech import MIN_SENTENCES, pretraining_texts, slurp_split

    intents, splits = slurp_split()
    texts = {name: {text for _, text, _ in rows} for name, rows in splits.items()}
    assert texts["train"].isdisjoint(texts["test"]) and texts["train"].isdisjoint(texts["dev"])
    assert texts["dev"].isdisjoint(texts["test"])
    assert len(intents) >= 20 and all(rows for rows in splits.values())
    for label in range(len(intents)):  # every intent has held-out phrasings of its own
        counts = [sum(1 for _, _, y in splits[name] if y == label) for name in ("train", "dev", "test")]
        assert sum(counts) >= MIN_SENTENCES and min(counts) >= 0.1 * sum(counts), (intents[label], counts)
    held_out = texts["dev"] | texts["test"]
    lm = {normalise_text(line) for line in (SHARED_SLURP / "lm.txt").read_text(encoding="utf-8").splitlines()}
    assert lm & held_out  # lm.txt does hold some held-out sentences: the exclusion is exercised
    pretraining = {text for _, text in pretraining_texts(lm_sentences=10**6, grammar_sentences=10, seed=0)}
    assert pretraining.isdisjoint(held_out) and len(pretraining) > 10000


def test_claims_call_a_difference_inside_the_spread_a_tie() -> None:
    from bench.accuracy import Point, claims

    def point(method: str, budget: float, values: list) -> Point:
        return Point(
            method, budget, [{"accuracy": v, "mac_ratio": budget, "seed": i} for i, v in enumerate(values)]
        )

    dense = point("dense", 1.0, [90.0, 92.0, 94.0])  # std 2
    verdicts = claims(
        "fsdd",
        [
            dense,
            point("hj_mac", 0.7, [93.0, 93.5, 94.0]),  # +1.5 over dense, inside the spread 2: tie
            point("hj_mac", 0.5, [89.0, 89.5, 90.0]),  # -2.5: more than one dense std below
            point("transformer_only", 0.5, [80.0, 81.0, 82.0]),  # HJ-MAC ahead by 8.5 > spread 1
            point("torch_pruning", 0.5, [86.0, 89.5, 93.0]),  # HJ-MAC ahead by 0 inside the spread 3.5
        ],
    )
    assert verdicts[0].startswith("- C1") and "holds (tie)" in verdicts[0]
    assert verdicts[1].startswith("- C2") and ": fails." in verdicts[1]
    assert "Transformer-only at 0.5: holds" in verdicts[2]
    assert "Torch-Pruning (L1) at 0.5: tie" in verdicts[3]
    # HJ-MAC's variants are checked against the same claims, each line named
    variant = claims("fsdd", [dense, point("hj_mac_keep_attention", 0.5, [91.0, 91.5, 92.0])])
    assert variant == [
        "- C2 HJ-MAC, attention ungated at ~0.5 within one std of dense: holds. HJ-MAC, attention ungated @ 0.5 "
        "(MAC ratio 0.500): 91.5 ± 0.5 vs Dense fine-tuning @ 1 (MAC ratio 1.000): 92.0 ± 2.0. Seed for seed: "
        "-0.50 ± 1.50 over seeds 0, 1, 2, ahead in 1 of 3."  # +1.0, -0.5, -2.0
    ]
    lower_is_better = claims(
        "cathy", [point_wer("dense", 1.0, [20.0, 22.0]), point_wer("hj_mac", 0.7, [15.0, 16.0])]
    )
    assert "beats dense" in lower_is_better[0]  # CER 7.75 vs 10.5: lower is better
    assert lower_is_better[0].endswith(" Seed for seed: +2.75 ± 0.35 over seeds 0, 1, ahead in 2 of 2.")
    # The size variants and the narrowed geometry from scratch are compared with HJ-MAC beside the claims
    beside = claims(
        "fsdd",
        [
            point("hj_mac", 0.5, [89.0, 89.5, 90.0]),
            point("hj_size", 0.5, [85.0, 86.0, 87.0]),  # HJ-MAC ahead by 3.5 > spread 1
            point("scratch", 0.5, [88.0, 90.0, 92.0]),  # -0.5 inside the spread 2
            point("hj_sep_size", 0.7, [80.0, 81.0, 82.0]),  # no HJ-MAC at 0.7: nothing to compare
        ],
    )
    assert [line.split(":")[:2] for line in beside] == [
        ["- Beside the claims, HJ-MAC vs HJ-Size at 0.5", " HJ-MAC better. HJ-MAC @ 0.5 (MAC ratio 0.500)"],
        [
            "- Beside the claims, HJ-MAC vs From scratch (same geometry) at 0.5",
            " tie (inside the spread). HJ-MAC @ 0.5 (MAC ratio 0.500)",
        ],
    ]
    # One seed in common: no paired difference to state
    assert "Seed for seed" not in claims("fsdd", [dense, point("hj_mac", 0.7, [93.0])])[0]


def point_wer(method: str, budget: float, values: list):
    from bench.accuracy import Point

    return Point(
        method,
        budget,
        [{"wer": v, "cer": v / 2, "mac_ratio": budget, "seed": i} for i, v in enumerate(values)],
    )


def test_hj_latency_is_compared_with_hj_mac_at_equal_measured_latency() -> None:
    from bench.accuracy import DEFAULT_METHODS, Point, latency_lines, targets_for

    def point(method: str, budget: float, values: list, latency: list) -> Point:
        rows = [
            {"accuracy": v, "mac_ratio": budget, "latency_ratio": t}
            for v, t in zip(values, latency, strict=True)
        ]
        return Point(method, budget, rows)

    assert targets_for("hj_latency", 0.5) == {"target_sparsity": 0.5} and "hj_latency" not in DEFAULT_METHODS
    hj_mac = [point("hj_mac", 0.7, [90.0, 90.0], [0.8, 0.8]), point("hj_mac", 0.5, [80.0, 81.0], [0.6, 0.6])]
    latency = [
        point("hj_latency", 0.7, [88.0, 89.0], [0.69, 0.71]),  # HJ-MAC at 0.7: 85.25 by interpolation
        point("hj_latency", 0.3, [70.0, 71.0], [0.3, 0.3]),
    ]
    lines = latency_lines("fsdd", hj_mac + latency)
    assert lines == [
        "- HJ-Latency at 0.7: measured latency ratio 0.700 ± 0.014, accuracy 88.5 ± 0.7; HJ-MAC at that latency "
        "ratio (between its 0.5 and 0.7 points): 85.2: better.",
        "- HJ-Latency at 0.3: measured latency ratio 0.300 ± 0.000, accuracy 70.5 ± 0.7; outside HJ-MAC's "
        "measured latency ratios (0.600-0.800).",
    ]
    # HJ-MAC priced at the latency's length is the rival when it ran; a worse point is called worse
    long = [point("hj_mac_long", 0.7, [95.0], [0.75]), point("hj_mac_long", 0.5, [92.0], [0.65])]
    assert latency_lines("fsdd", hj_mac + long + latency[:1])[0].endswith(
        "HJ-MAC (MACs at 10 s) at that latency ratio (between its 0.5 and 0.7 points): 93.5: worse."
    )
    old = Point("hj_mac", 0.5, [{"accuracy": 80.0}, {"accuracy": 81.0, "latency_ratio": 0.6}])
    assert old.shown("latency_ratio") == "-"  # a row cached before the column existed has no time
    assert latency_lines("fsdd", [old, *latency]) == []  # an untimed curve compares nothing


def test_the_default_plan_is_the_claims_grid_and_methods_run_at_every_budget() -> None:
    from bench.accuracy import CLAIMS_GRID, run_plan

    claims_plan = run_plan(None, None)
    assert sorted(claims_plan) == sorted((m, b) for m, grid in CLAIMS_GRID.items() for b in grid)
    assert claims_plan[0] == ("dense", 1.0) and [b for _, b in claims_plan] == sorted(
        (b for _, b in claims_plan), reverse=True
    )
    assert run_plan(["hj_mac", "dense"], [0.5]) == [("dense", 1.0), ("hj_mac", 0.5)]
    assert run_plan(["hj_size"], None) == [("hj_size", 0.7), ("hj_size", 0.5), ("hj_size", 0.3)]


def test_size_targets_land_near_the_mac_budget() -> None:
    """HJ-Size's params target at a MAC budget is one whose Transformer cut costs about the budget's MACs
    (the exact cost of uniformly narrowed Transformer layers); it cannot reach 0.3 without the CNN."""
    import copy

    from bench.accuracy import targets_for
    from bench.training import REFERENCE_SECONDS, standin_config

    dense = standin_config()
    full = exact_cost(dense, REFERENCE_SECONDS)
    cuts = []
    for units in range(dense.ffn_dims[0] + 1):
        narrow = copy.deepcopy(dense)
        narrow.ffn_dims = [units] * dense.num_layers
        narrow.num_heads = [round(heads * units / dense.ffn_dims[0]) for heads in dense.num_heads]
        cost = exact_cost(narrow, REFERENCE_SECONDS)
        cuts.append((1 - cost.params / full.params, cost.macs / full.macs))
    for budget in (0.7, 0.5):
        target = targets_for("hj_size", budget)["target_sparsity"]
        _, mac_ratio = min(cuts, key=lambda cut: abs(cut[0] - target))
        assert abs(mac_ratio - budget) < 0.04, (budget, target, mac_ratio)
    assert targets_for("hj_size", 0.3) is None and targets_for("transformer_only", 0.3) is None


def test_a_cached_run_trained_at_other_targets_is_an_error_naming_the_file(tmp_path) -> None:
    """When the targets a method gets at a budget change, its cached runs are refused, not shown as new."""
    import json

    from bench.accuracy import read_cached_run, targets_for

    stale, fresh = tmp_path / "hj_size-0.5-seed0.json", tmp_path / "hj_size-0.5-seed1.json"
    stale.write_text(json.dumps({"method": "hj_size", "budget": 0.5, "targets": {"params": 0.5}}))
    fresh.write_text(
        json.dumps(
            {
                "method": "hj_size",
                "budget": 0.5,
                "targets": {"params": targets_for("hj_size", 0.5)["target_sparsity"]},
            }
        )
    )
    with pytest.raises(
        SystemExit, match=rf"{stale}: run at the targets .*'params': 0.5.*delete it and its .pt"
    ):
        read_cached_run(stale)
    assert read_cached_run(fresh)["targets"] == {"params": targets_for("hj_size", 0.5)["target_sparsity"]}
    dense = tmp_path / "dense-1-seed0.json"  # ungated runs have no targets
    dense.write_text(json.dumps({"method": "dense", "budget": 1.0}))
    assert read_cached_run(dense)["method"] == "dense"


def test_extra_test_folders_score_the_kept_models_of_cached_runs(tmp_path, monkeypatch) -> None:
    import json

    import numpy as np
    import soundfile as sf
    import torch

    import bench.accuracy as accuracy
    from bench.data import read_extra_test
    from bench.training import TaskModel, evaluate
    from espnet_prune.models import Wav2Vec2Model

    from conftest import tiny_config

    folder = tmp_path / "more_digits"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for digit in range(4):
        sf.write(folder / f"{digit}_someone_{digit}.wav", 0.1 * rng.standard_normal(3200), 16000)
    torch.manual_seed(0)
    model = TaskModel(Wav2Vec2Model(tiny_config()), "classify", 10).eval()
    run_file = tmp_path / "hj_mac-0.5-seed0.json"
    run_file.write_text(json.dumps({"seed": 0, "accuracy": 50.0}))
    accuracy.save_model(model, accuracy.model_file(run_file))
    old_run = tmp_path / "dense-1-seed0.json"  # cached before models were kept: reported, not scored
    old_run.write_text(json.dumps({"seed": 0, "accuracy": 60.0}))

    accuracy.score_extra_tests("fsdd", [run_file, old_run], [folder])
    expected = evaluate(model, read_extra_test("fsdd", folder))["accuracy"]
    assert json.loads(run_file.read_text()) == {"seed": 0, "accuracy": 50.0, "accuracy@more_digits": expected}
    assert "accuracy@more_digits" not in json.loads(old_run.read_text())
    monkeypatch.setattr(accuracy, "evaluate", None)  # scored once: a second call must not score again
    accuracy.score_extra_tests("fsdd", [run_file], [folder])


def test_the_fine_tuned_teacher_is_the_dense_run_of_the_same_seed(tmp_path, monkeypatch) -> None:
    """hj_mac_distill_ft distils from the kept dense fine-tuned model of its seed (CoFi's teacher), not
    from the pre-trained one that hj_mac_distill uses; the other methods distil from nothing."""
    import json

    import torch

    import bench.accuracy as accuracy
    from bench.training import TaskModel
    from espnet_prune.models import Wav2Vec2Model

    from conftest import tiny_config

    monkeypatch.setattr(accuracy, "WORK_DIR", tmp_path)
    s = accuracy.Settings()
    torch.manual_seed(0)
    pretrained = TaskModel(Wav2Vec2Model(tiny_config()), "classify", 10)
    fine_tuned = {seed: TaskModel(Wav2Vec2Model(tiny_config()), "classify", 10) for seed in (0, 1)}
    for seed, model in fine_tuned.items():
        run_file = s.run_file("fsdd", "dense", 1.0, seed)
        run_file.parent.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps({"method": "dense", "budget": 1.0, "seed": seed, "accuracy": 90.0}))
        accuracy.save_model(model, accuracy.model_file(run_file))

    class Loaded:  # the task's data, read on demand: here only the pre-trained model
        def get(self):
            return {}, 10, pretrained

    def same(a: Wav2Vec2Model, b: Wav2Vec2Model) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    teacher = accuracy.distillation_teacher("fsdd", "hj_mac_distill_ft", 1, Loaded(), s)
    assert same(teacher, fine_tuned[1].encoder) and not same(teacher, fine_tuned[0].encoder)
    assert accuracy.distillation_teacher("fsdd", "hj_mac_distill", 1, Loaded(), s) is pretrained.encoder
    assert accuracy.distillation_teacher("fsdd", "hj_mac", 1, Loaded(), s) is None
    # a dense run cached without its model (before models were kept) cannot teach: one clear error
    accuracy.model_file(s.run_file("fsdd", "dense", 1.0, 0)).unlink()
    with pytest.raises(FileNotFoundError, match=r"dense-1-seed0.json: .* delete the result file"):
        accuracy.distillation_teacher("fsdd", "hj_mac_distill_ft", 0, Loaded(), s)


@pytest.mark.parametrize("extractor_mode", ["layer_norm", "group_norm"])
def test_the_l1_baseline_cuts_the_pretrained_weights_of_either_cnn_to_the_target_shape(
    extractor_mode: str,
) -> None:
    """Torch-Pruning's graph must see the convs of both CNN layouts (the layer-norm CNN runs channels-last
    through conv2d): the L1 baseline returns the target's shape and keeps the pre-trained weights of the
    channels it keeps, coupled across conv, norm and the next conv's inputs."""
    pytest.importorskip("torch_pruning")
    import torch

    from bench.magnitude import config_at_mac_ratio, magnitude_prune

    from conftest import tiny_config

    torch.manual_seed(0)
    config = tiny_config(extractor_mode=extractor_mode, conv_bias=extractor_mode == "layer_norm")
    encoder = Wav2Vec2Model(config).eval()
    with torch.no_grad():  # distinct norm weights, so that a wrong coupling shows
        for block in encoder.feature_extractor.conv_layers:
            if block.layer_norm is not None:
                block.layer_norm.weight.uniform_(0.5, 1.5)
    target = config_at_mac_ratio(config, 0.5, 1.0)
    pruned = magnitude_prune(encoder, target)
    assert pruned.config.to_dict() == target.to_dict() != config.to_dict()

    first, second = encoder.feature_extractor.conv_layers[:2]
    cut_first, cut_second = pruned.feature_extractor.conv_layers[:2]
    rows = first.conv.weight.flatten(1)
    kept = [int((rows == row).all(1).nonzero()) for row in cut_first.conv.weight.flatten(1)]
    assert kept == sorted(kept) and len(kept) == target.conv_layers[0][0] < config.conv_layers[0][0]
    norm, cut_norm = first.layer_norm, cut_first.layer_norm
    if norm is not None:
        assert torch.equal(cut_norm.weight, norm.weight[kept])
    kept_next = [
        int((second.conv.weight[:, kept].flatten(1) == r).all(1).nonzero())
        for r in cut_second.conv.weight.flatten(1)
    ]
    assert torch.equal(cut_second.conv.weight, second.conv.weight[kept_next][:, kept])
    out = pruned(torch.randn(1, 16000)).last_hidden_state
    assert out.shape[-1] == config.embed_dim and torch.isfinite(out).all()


def test_hj_mac_with_attention_ungated_reaches_its_budget_without_cutting_attention() -> None:
    """The SLURP demo's variant in the benchmark: HJ-MAC's MAC budget met by CNN channels and FFN units
    alone, every head and attention layer of the pre-trained model kept in the removed model."""
    import torch

    import bench.accuracy as accuracy
    from bench.data import Example
    from bench.training import REFERENCE_SECONDS, TaskModel, standin_config

    torch.manual_seed(0)
    config = standin_config()  # in wav2vec2-base's proportions: the CNN and FFNs hold over half the MACs
    pretrained = TaskModel(Wav2Vec2Model(config), "classify", 10)
    examples = [Example(f"u{i}", 0.1 * torch.randn(8000), i % 10) for i in range(4)]
    s = accuracy.Settings(updates=3, warmup=1, batch_size=2)
    results = {}
    for method in ("hj_mac", "hj_mac_keep_attention"):
        model, sparsities, _ = accuracy.fine_tune("fsdd", method, 0.5, 0, examples, 10, pretrained, s)
        mac_ratio = (
            exact_cost(model.encoder.config, REFERENCE_SECONDS).macs
            / exact_cost(config, REFERENCE_SECONDS).macs
        )
        assert abs(mac_ratio - 0.5) < 0.03 and sparsities["targets"] == {"macs": 0.5}, (method, mac_ratio)
        results[method] = model.encoder.config
    kept = results["hj_mac_keep_attention"]
    assert kept.num_heads == config.num_heads and kept.conv_layers != config.conv_layers
    assert results["hj_mac"].num_heads != config.num_heads  # the default HJ-MAC does cut attention here
    assert "hj_mac_keep_attention" not in accuracy.DEFAULT_METHODS


def test_the_latency_column_is_the_median_over_fresh_processes_with_their_range_shown() -> None:
    """Each row's latency ratio is measured in several fresh interpreters: the median is the column and the
    range over the processes stands beside it (one process's medians moved rows by up to 0.12)."""
    import bench.accuracy as accuracy
    from bench.training import standin_config

    dense = standin_config()
    narrow = standin_config()
    narrow.num_heads = [2] * len(narrow.num_heads)
    narrow.ffn_dims = [64] * len(narrow.ffn_dims)
    rows = [
        {"method": "hj_mac", "budget": 0.5, "encoder_config": narrow.to_dict()},
        {"method": "hj_mac", "budget": 0.5, "encoder_config": narrow.to_dict()},  # the same shape: one timing
        {"method": "dense", "budget": 1.0, "encoder_config": dense.to_dict()},
        {"method": "torch_pruning", "budget": 0.5},  # cached before shapes were kept: nothing to time
    ]
    accuracy.measured_latency_ratios(rows, processes=2)
    assert rows[2]["latency_ratio_repeats"] == [1.0, 1.0]  # the dense shape over itself, in each process
    repeats = rows[0]["latency_ratio_repeats"]
    assert (
        len(repeats) == 2
        and all(ratio > 0 for ratio in repeats)
        and repeats == rows[1]["latency_ratio_repeats"]
    )
    assert rows[0]["latency_ratio"] == pytest.approx(sum(repeats) / 2)  # the median of two
    assert "latency_ratio" not in rows[3]
    point = accuracy.Point("hj_mac", 0.5, rows[:2])
    assert point.latency_range() == f"{max(repeats) - min(repeats):.3f}"
    assert accuracy.Point("torch_pruning", 0.5, rows[3:]).latency_range() == "-"
