"""The ESPnet glue without data: registration, model building, loss and stats, optimizer groups, CNN freezing,
pretrained loading (with ESPnet's --init), and build-time errors for bad configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest
import torch
import yaml

from espnet_prune.bin import asr_train
from espnet_prune.espnet import PrunableSSL, PrunedASRTask, PrunedESPnetASRModel
from espnet_prune.espnet.ssl import SSLOptions
from espnet_prune.models import Wav2Vec2Config

from conftest import REPO, TINY_MODEL, TINY_TRAIN_CONFIG, tiny_asr_args


@pytest.fixture
def base_args(tmp_path) -> List[str]:
    return tiny_asr_args(tmp_path)


def _build(args: List[str]):
    parsed = PrunedASRTask.get_parser().parse_args(args)
    return PrunedASRTask.build_model(parsed), parsed


def _batch(batch: int = 2):
    torch.manual_seed(0)
    speech = torch.randn(batch, 16000) * 0.1
    lengths = torch.tensor([16000, 12000][:batch])
    text = torch.tensor([[3, 4, 5], [5, 3, -1]][:batch])
    return dict(speech=speech, speech_lengths=lengths, text=text, text_lengths=torch.tensor([3, 2][:batch]))


def _tiny_hf_dir(path: Path) -> Path:
    transformers = pytest.importorskip("transformers")
    config = transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16, 32, 32),
        conv_kernel=(10, 3, 2),
        conv_stride=(5, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        vocab_size=8,
    )
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(config).save_pretrained(path)
    return path


@pytest.mark.parametrize("module", ["asr_train", "asr_inference", "remove_masks", "profile", "export"])
def test_entry_points_have_help(module, capsys) -> None:
    entry = __import__(f"espnet_prune.bin.{module}", fromlist=["main"])
    with pytest.raises(SystemExit) as exit_:
        entry.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage" in out
    if module == "asr_train":
        assert "pruned_wav2vec2" in out and "pruned_espnet" in out


def test_pruning_model_adds_the_lagrangian_and_reports_stats(base_args) -> None:
    model, args = _build(base_args)
    assert isinstance(model, PrunedESPnetASRModel) and args.model == "pruned_espnet"
    assert set(args.encoder_conf) == {"model_config", "pruning"}
    controller = model.encoder.ssl.controller
    with torch.no_grad():
        controller.lambdas.fill_(1.0)  # make the pruning term non-zero
    model.train()
    loss, stats, _ = model(**_batch())
    assert int(controller.pending_passes) == 1 and controller.num_updates == 0
    assert torch.allclose(loss, stats["loss_task"] + stats["loss_pruning"])
    # The term is scaled by the task loss's running magnitude (the first one: this batch's loss).
    assert float(stats["task_loss_scale"]) == pytest.approx(float(stats["loss_task"]))
    gap = float(stats["exact_sparsity_macs"]) - float(stats["target_macs"])
    assert float(stats["loss_pruning"]) == pytest.approx(
        float(stats["loss_task"]) * (gap + gap * gap), rel=1e-4
    )
    for key in (
        "loss_ctc",
        "expected_params",
        "expected_gmacs",
        "exact_params",
        "exact_gmacs",
        "expected_sparsity_macs",
        "exact_sparsity_macs",
        "target_macs",
        "lambda1_macs",
        "lambda2_macs",
    ):
        assert key in stats
    model.eval()
    with torch.no_grad():
        model(**_batch())
    assert int(controller.pending_passes) == 1  # validation does not count


def test_dense_fine_tuning_keeps_espnets_model(base_args) -> None:
    model, args = _build(base_args + ["--encoder_conf", "pruning=null"])
    assert args.model == "espnet" and type(model).__name__ == "ESPnetASRModel"
    assert model.encoder.ssl.controller is None
    optimizer = PrunedASRTask.build_optimizers(args, model)[0]
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize("exclude_weight_decay", [False, True])
def test_optimizer_groups_and_dual_ascent_under_warmup(base_args, exclude_weight_decay) -> None:
    model, args = _build(
        base_args
        + [
            "--optim",
            "adamw",
            "--optim_conf",
            "lr=0.001",
            "--optim_conf",
            "weight_decay=0.01",
            "--encoder_conf",
            "pruning.warmup_updates=0",
            "--encoder_conf",
            "pruning.gate_lr=0.03",
            "--encoder_conf",
            "pruning.lambda_lr=0.04",
            "--exclude_weight_decay",
            str(exclude_weight_decay).lower(),
            "--scheduler",
            "warmuplr",
            "--scheduler_conf",
            "warmup_steps=5",
        ]
    )
    optimizer = PrunedASRTask.build_optimizers(args, model)[0]
    ssl = model.encoder.ssl
    lambdas = ssl.controller.lambdas
    gates = {id(p) for n, p in model.named_parameters() if n.endswith("log_alpha")}
    by_param = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    assert {(g["lr"], g["weight_decay"]) for g in map(by_param.get, gates)} == {(0.03, 0.0)}
    assert id(lambdas) not in by_param  # the controller updates them, not the optimizer
    assert by_param[id(model.encoder.ssl.model.encoder.layers[0].attention.q_proj.weight)]["lr"] == 0.001

    from espnet2.schedulers.warmup_lr import WarmupLR

    scheduler = WarmupLR(optimizer, warmup_steps=5)
    model.train()
    for step in range(3):  # exact sparsity ~0 is below the target 0.5: the lambdas must grow in magnitude
        optimizer.zero_grad()
        loss, stats = ssl.pruning_loss(torch.tensor(2.0))
        loss.backward()
        optimizer.step()
        scheduler.step()
        assert ssl.controller.num_updates == step + 1  # the optimizer's step hook counted the update
    assert (
        float(lambdas[0, 0]) < 0 < float(lambdas[0, 1])
    )  # ascent on lambda1 * gap + lambda2 * gap^2, gap < 0
    gap = float(stats["exact_sparsity_macs"]) - 0.5
    assert float(lambdas[0, 0]) == pytest.approx(3 * 0.04 * gap, rel=0.05)  # the scheduler does not scale it


def test_frontend_with_weighted_layer_sum(base_args, tmp_path) -> None:
    config = yaml.safe_load(TINY_TRAIN_CONFIG.read_text())
    del config["input_size"], config["encoder_conf"]
    config.update(
        frontend="pruned_wav2vec2",
        frontend_conf={
            "model_config": str(TINY_MODEL),
            "multilayer_feature": True,
            "pruning": str(REPO / "conf" / "pruning" / "hj_size_50.yaml"),
        },
        normalize="utterance_mvn",
        encoder="transformer",
        encoder_conf={"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 1},
    )
    (tmp_path / "frontend.yaml").write_text(yaml.safe_dump(config))
    model, args = _build(["--config", str(tmp_path / "frontend.yaml")] + base_args[4:])
    assert isinstance(model, PrunedESPnetASRModel) and model.frontend.output_size() == 32
    assert args.frontend_conf["multilayer_feature"] and "model_config" in args.frontend_conf
    model.train()
    loss, stats, _ = model(**_batch())
    loss.sum().backward()
    assert "exact_sparsity_params" in stats
    assert model.frontend.layer_weights.grad is not None and model.frontend.layer_weights.numel() == 3


def test_cnn_frozen_for_the_first_updates_while_its_gates_learn() -> None:
    options = SSLOptions(
        model_config=str(TINY_MODEL), pruning={"variant": "mac", "target_sparsity": 0.5}, freeze_cnn_updates=1
    )
    ssl = PrunableSSL("encoder_conf", options)
    optimizer = torch.optim.SGD(ssl.parameters(), lr=0.0)
    ssl.attach(optimizer)
    ssl.train()
    conv = ssl.model.feature_extractor.conv_layers[1].conv.weight
    gate = ssl.model.feature_extractor.conv_layers[1].channel_gate.log_alpha
    for step in range(3):  # passes 1, 2 are before the first update (frozen); pass 3 is after it
        ssl.zero_grad()
        ssl(torch.randn(1, 4000), torch.tensor([4000])).last_hidden_state.sum().backward()
        assert gate.grad is not None
        assert (conv.grad is None) == (step < 2), step
        if step == 1:  # accum_grad 2
            optimizer.step()


def test_checkpoint_survives_init_and_config_yaml_needs_no_checkpoint(base_args, tmp_path) -> None:
    from espnet_prune.models.importers import load_pretrained

    hf = _tiny_hf_dir(tmp_path / "hf")
    reference, _ = load_pretrained(hf)
    model, args = _build(
        base_args
        + [
            "--encoder_conf",
            "model_config=null",
            "--encoder_conf",
            f"ssl_checkpoint={hf}",
            "--encoder_conf",
            "output_layer=1",
            "--init",
            "xavier_uniform",
        ]
    )
    ssl = model.encoder.ssl
    assert ssl.config.num_layers == 1 and not ssl.controller.lambdas.any()
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("encoder.layers.1.")}
    actual = {k: v for k, v in ssl.model.state_dict().items() if "_gate." not in k}
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    # config.yaml gets the explicit geometry: rebuilding needs no checkpoint and gives the same model
    assert "ssl_checkpoint" not in args.encoder_conf and args.encoder_conf["model_config"]["num_heads"] == [4]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(vars(args)))
    weights = tmp_path / "model.pth"
    torch.save(model.state_dict(), weights)
    rebuilt, _ = PrunedASRTask.build_model_from_file(config, weights)
    assert all(torch.equal(v, rebuilt.state_dict()[k]) for k, v in model.state_dict().items())


def _bad_checkpoint(tmp_path: Path) -> str:
    path = tmp_path / "not_wav2vec2.pt"
    torch.save({"decoder.weight": torch.zeros(3, 3)}, path)
    return str(path)


def _bert_dir(tmp_path: Path) -> str:
    path = tmp_path / "bert"
    path.mkdir()
    (path / "config.json").write_text('{"model_type": "bert", "hidden_size": 32}')
    return str(path)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--encoder_conf", "pruning.variant=l1"], "encoder_conf.pruning.variant: 'l1' is not one of"),
        (
            ["--encoder_conf", "pruning.target_sparsity=1.5"],
            "encoder_conf.pruning.target_sparsity: must be a number in",
        ),
        (
            ["--encoder_conf", "pruning.target_sparsity=0"],
            "encoder_conf.pruning.target_sparsity: must be a number in",
        ),
        (
            ["--encoder_conf", "pruning.target_sparsity=0.995"],
            "encoder_conf.pruning.target_sparsity: 0.995 cannot be reached",
        ),
        (
            ["--encoder_conf", "pruning.gates.init_keep=0.5"],
            "encoder_conf.pruning.gates: unknown key(s) ['init_keep']",
        ),
        (
            [
                "--encoder_conf",
                "model_config=null",
                "--encoder_conf",
                "ssl_checkpoint=/nonexistent/wav2vec_small.pt",
            ],
            "encoder_conf.ssl_checkpoint: '/nonexistent/wav2vec_small.pt' does not exist",
        ),
        (
            ["--encoder_conf", "model_config=null", "--encoder_conf", "ssl_checkpoint={bad}"],
            "is not a supported wav2vec2/HuBERT checkpoint",
        ),
        (
            ["--encoder_conf", "model_config=null", "--encoder_conf", "ssl_checkpoint={bert}"],
            "model_type='bert' is not supported",
        ),
        (
            ["--encoder_conf", "preset=wav2vec2_base"],
            "give exactly one of ssl_checkpoint, model_config, preset",
        ),
        (["--encoder_conf", "model_overrides={{embed_dim: 64}}"], "model_overrides: ['embed_dim'] cannot be"),
        (["--keep_nbest_models", "10"], "keep_nbest_models: [10] would average gated checkpoints"),
        (["--input_size", "none"], "set `input_size: 1`"),
        (["--input_size", "none", "--frontend", "default"], "set `input_size: 1`"),
        (["--normalize", "utterance_mvn"], "normalize: the pruned_wav2vec2 encoder reads raw waveforms"),
        (
            [
                "--encoder_conf",
                "pruning.variant=latency",
                "--encoder_conf",
                "pruning.latency_table=/nonexistent/t.json",
            ],
            "encoder_conf.pruning.latency_table: no latency table at /nonexistent/t.json",
        ),
    ],
)
def test_bad_configs_fail_at_build_time_with_one_message(base_args, tmp_path, extra, message) -> None:
    paths = dict(bad=_bad_checkpoint(tmp_path), bert=_bert_dir(tmp_path))
    extra = [e.format(**paths) for e in extra]
    with pytest.raises(SystemExit) as exit_:
        asr_train.main(base_args + extra + ["--dry_run", "true"])
    text = str(exit_.value.code)
    assert text.startswith("asr_train: error: ") and message in text and "\n" not in text, text
    assert not (tmp_path / "exp").exists()  # nothing half-written


def test_remove_masks_of_a_gated_frontend_keeps_the_encoder_output(base_args, tmp_path) -> None:
    from espnet_prune.espnet.asr_removal import max_encode_difference, remove_asr_masks

    config = yaml.safe_load(TINY_TRAIN_CONFIG.read_text())
    del config["input_size"], config["encoder_conf"]
    config.update(
        frontend="pruned_wav2vec2",
        normalize=None,
        encoder="transformer",
        frontend_conf={
            "model_config": str(TINY_MODEL),
            "multilayer_feature": True,
            "pruning": {"variant": "mac", "target_sparsity": 0.5, "gates": {"init_keep_prob": 0.6}},
        },
        encoder_conf={"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 1},
    )
    (tmp_path / "frontend.yaml").write_text(yaml.safe_dump(config))
    model, args = _build(["--config", str(tmp_path / "frontend.yaml")] + base_args[4:])
    removed, new_args = remove_asr_masks(model.eval(), args)
    assert new_args.model == "espnet" and new_args.frontend_conf["pruning"] is None
    assert new_args.frontend_conf["multilayer_feature"] and removed.frontend.ssl.controller is None
    assert sum(p.numel() for p in removed.parameters()) < 0.8 * sum(p.numel() for p in model.parameters())
    assert max_encode_difference(model, removed) < 1e-4


@pytest.mark.parametrize("gated", [True, False])
def test_optimizer_steps_are_the_updates_that_the_ssl_module_counts(base_args, gated) -> None:
    extra = ["--encoder_conf", "freeze_cnn_updates=5", "--accum_grad", "4"]
    if not gated:
        extra += ["--encoder_conf", "pruning=null"]
    model, args = _build(base_args + extra)
    optimizer = PrunedASRTask.build_optimizers(args, model)[0]
    ssl = model.encoder.ssl
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        model(**_batch())[0].backward()
        optimizer.step()
    assert ssl.num_updates == 2


def test_profile_reports_costs_latency_and_png(tmp_path, capsys) -> None:
    from espnet_prune.bin import profile

    png = tmp_path / "profile.png"
    profile.main(
        [
            "--model_config",
            str(TINY_MODEL),
            "--seconds",
            "1",
            "--repeats",
            "1",
            "--png",
            str(png),
            "--reference_preset",
            "wav2vec2_base",
        ]
    )
    out = capsys.readouterr().out
    assert "GMACs @ 1 s" in out and "CPU latency" in out and "attention heads  4/12 4/12 0/12" in out
    assert png.stat().st_size > 0


def test_waveform_normalisation_ignores_padding() -> None:
    from espnet_prune.models.components import normalize_waveform

    torch.manual_seed(0)
    wave = torch.randn(2, 800) * 3 + 1
    lengths = torch.tensor([800, 500])
    out = normalize_waveform(wave, lengths)
    alone = normalize_waveform(wave[1:, :500], lengths[1:])
    assert torch.allclose(out[1, :500], alone[0], atol=1e-5) and not out[1, 500:].any()
    assert abs(float(out[0].mean())) < 1e-5 and abs(float(out[0].std(unbiased=False)) - 1) < 1e-3


def _gated_checkpoint(base_args, tmp_path, sparsity: float, updates: int, quantity: str = "macs"):
    """config.yaml and weights of a tiny HJ-MAC run (target 0.5, warm-up 10) whose eval masks cut ``sparsity``
    of the MACs after ``updates`` updates: the gates are set, not trained. ``quantity`` "latency": an
    HJ-Latency run with a table for the tiny model (``tmp_path / "latency.json"``) instead."""
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from espnet_prune.pruning.budget import exact_sparsity, fit_to_targets

    if quantity == "latency":
        from test_latency import synthetic_table

        synthetic_table(Wav2Vec2Config.load_yaml(TINY_MODEL), seconds=10.0).save(tmp_path / "latency.json")
        base_args = base_args + [
            "--encoder_conf",
            "pruning.variant=latency",
            "--encoder_conf",
            f"pruning.latency_table={tmp_path / 'latency.json'}",
        ]
    model, args = _build(base_args)
    ssl = model.encoder.ssl
    table = ssl.controller.latency_table
    fit_to_targets(ssl.model, [(quantity, sparsity)], 10.0, table)
    ssl.controller.updates.fill_(updates)
    exp = tmp_path / "exp"
    exp.mkdir(exist_ok=True)
    with (exp / "config.yaml").open("w") as f:
        yaml_no_alias_safe_dump(vars(args), f)
    torch.save(model.state_dict(), exp / "latest.pth")
    return exp, exact_sparsity(ssl.model, quantity, 10.0, table)


def _remove(exp, out, *extra):
    from espnet_prune.bin import remove_masks

    remove_masks.main(
        [
            "--asr_train_config",
            str(exp / "config.yaml"),
            "--asr_model_file",
            str(exp / "latest.pth"),
            "--out_dir",
            str(out),
            *extra,
        ]
    )


def test_remove_masks_fits_masks_near_the_target_onto_it(base_args, tmp_path, capsys) -> None:
    from espnet_prune.pruning.cost import exact_cost

    exp, trained = _gated_checkpoint(base_args, tmp_path, 0.48, updates=10)
    assert 0.47 <= trained < 0.5
    _remove(exp, tmp_path / "pruned")
    printed = capsys.readouterr().out
    assert (
        "macs @ 10 s: target 50.0%, expected" in printed and f"exact (trained masks) {trained:.1%}" in printed
    )
    conf = yaml.safe_load((tmp_path / "pruned" / "config.yaml").read_text())["encoder_conf"]
    dense = Wav2Vec2Config.load_yaml(TINY_MODEL)
    cut = 1 - exact_cost(Wav2Vec2Config.from_dict(conf["model_config"])).macs / exact_cost(dense).macs
    assert abs(cut - 0.5) < abs(trained - 0.5) and abs(cut - 0.5) <= 0.015
    assert f"macs: cut at {cut:.1%}" in printed


def test_remove_masks_fits_and_reports_a_latency_target(base_args, tmp_path, capsys) -> None:
    from espnet_prune.pruning.latency import LatencyTable, exact_latency_ms

    exp, trained = _gated_checkpoint(base_args, tmp_path, 0.48, updates=10, quantity="latency")
    assert 0.46 <= trained < 0.5
    _remove(exp, tmp_path / "pruned")
    printed = capsys.readouterr().out
    assert (
        "latency @ 10 s: target 50.0%, expected" in printed
        and f"exact (trained masks) {trained:.1%}" in printed
    )
    conf = yaml.safe_load((tmp_path / "pruned" / "config.yaml").read_text())["encoder_conf"]
    table = LatencyTable.load(tmp_path / "latency.json")
    dense = Wav2Vec2Config.load_yaml(TINY_MODEL)
    cut = 1 - exact_latency_ms(table, Wav2Vec2Config.from_dict(conf["model_config"])) / exact_latency_ms(
        table, dense
    )
    assert abs(cut - 0.5) <= 0.015 and f"latency: cut at {cut:.1%}" in printed


def test_remove_masks_calibrates_a_latency_target_by_timing_the_cut(base_args, tmp_path, capsys) -> None:
    exp, _ = _gated_checkpoint(base_args, tmp_path, 0.49, updates=10, quantity="latency")
    _remove(exp, tmp_path / "pruned", "--calibrate_latency", "1")
    printed = capsys.readouterr().out
    # Timings vary, so the rounds' numbers are not asserted (tests/test_latency.py checks the arithmetic).
    assert "latency calibration 1: table target 50.0%, cut at" in printed and "% measured" in printed
    assert (tmp_path / "pruned" / "config.yaml").is_file()


@pytest.mark.parametrize(
    "quantity, table_change, message",
    [
        ("macs", None, "the pruning variant is 'mac'; only variant 'latency' has a measured target"),
        (
            "latency",
            {"device_name": "Another CPU"},
            "this machine is not the latency table's (CPU 'Another CPU'",
        ),
    ],
)
def test_remove_masks_calibrates_only_latency_targets_on_the_tables_machine(
    base_args, tmp_path, quantity, table_change, message
) -> None:
    exp, _ = _gated_checkpoint(base_args, tmp_path, 0.49, updates=10, quantity=quantity)
    if table_change:
        table = json.loads((tmp_path / "latency.json").read_text())
        (tmp_path / "latency.json").write_text(json.dumps({**table, **table_change}))
    with pytest.raises(SystemExit) as error:
        _remove(exp, tmp_path / "pruned", "--calibrate_latency", "2")
    assert str(error.value).startswith("remove_masks: error: --calibrate_latency: ") and message in str(
        error.value
    )
    assert not (tmp_path / "pruned").exists()


@pytest.mark.parametrize("updates, cause", [(10, False), (4, True)])
def test_remove_masks_refuses_masks_far_from_the_target(base_args, tmp_path, updates, cause) -> None:
    exp, trained = _gated_checkpoint(base_args, tmp_path, 0.3, updates=updates)
    with pytest.raises(SystemExit) as error:
        _remove(exp, tmp_path / "pruned")
    message = str(error.value)
    assert message.startswith(
        "remove_masks: error: the trained masks miss the budget by more than 3 points: "
    )
    assert f"macs {trained:.1%} for a target of 50.0%" in message and "--allow_budget_miss" in message
    assert ("stopped at update 4, before the target's warm-up ended (update 10)" in message) == cause
    assert not (tmp_path / "pruned").exists()


def test_remove_masks_cuts_masks_far_from_the_target_when_allowed(base_args, tmp_path, caplog) -> None:
    from espnet_prune.pruning.cost import exact_cost

    exp, trained = _gated_checkpoint(base_args, tmp_path, 0.3, updates=10)
    _remove(exp, tmp_path / "pruned", "--allow_budget_miss")
    conf = yaml.safe_load((tmp_path / "pruned" / "config.yaml").read_text())["encoder_conf"]
    dense = Wav2Vec2Config.load_yaml(TINY_MODEL)
    cut = 1 - exact_cost(Wav2Vec2Config.from_dict(conf["model_config"])).macs / exact_cost(dense).macs
    assert cut == pytest.approx(trained)  # the trained masks, as they are
    assert "Cutting them as they are (--allow_budget_miss)" in caplog.text


def _save_gated(base_args: List[str], tmp_path: Path):
    """A built gated model, its config.yaml (as training writes it) and its weights file."""
    model, args = _build(base_args)
    config, weights = tmp_path / "config.yaml", tmp_path / "model.pth"
    config.write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), weights)
    return model, config, weights


@pytest.mark.parametrize(
    "corrupt, expected",
    [
        (lambda s: {k: v for k, v in s.items() if not k.endswith("log_alpha")}, "missing from the weights"),
        (lambda s: {**s, "encoder.ssl.model.extra.weight": torch.zeros(2)}, "not in the model"),
        (
            lambda s: {
                k: v[:1] if k.endswith("final_proj.weight") or k == "ctc.ctc_lo.weight" else v
                for k, v in s.items()
            },
            "with other shapes",
        ),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_espnets_own_loader_refuses_weights_that_do_not_fit(base_args, tmp_path, corrupt, expected) -> None:
    """Speech2Text and asr_inference build through ASRTask.build_model_from_file: strict for our models."""
    from espnet2.tasks.asr import ASRTask

    from espnet_prune.checkpoints import CheckpointError

    model, config, weights = _save_gated(base_args, tmp_path)
    bad = tmp_path / "bad.pth"
    torch.save(corrupt(model.state_dict()), bad)
    with pytest.raises(CheckpointError, match=expected) as error:
        ASRTask.build_model_from_file(config, bad)
    assert str(bad) in str(error.value) and str(config) in str(error.value)
    rebuilt, _ = ASRTask.build_model_from_file(config, weights)  # the matching pair loads
    assert all(torch.equal(v, rebuilt.state_dict()[k]) for k, v in model.state_dict().items())


def test_init_param_is_read_safely_and_must_cover_the_ssl_module(base_args, tmp_path) -> None:
    """ESPnet's --init_param (abs_task.load_pretrained_model): our safe loader reads the file first, and
    a file that initialises the SSL module must initialise all of it."""
    from espnet2.tasks import abs_task

    from espnet_prune.checkpoints import CheckpointError

    model, _, weights = _save_gated(base_args, tmp_path)
    target, _ = _build(base_args)
    abs_task.load_pretrained_model(str(weights), target, False)
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in model.state_dict().items())
    dense, _ = _build(
        base_args + ["--encoder_conf", "pruning=null"]
    )  # a pruning run starts from a dense model
    torch.save(dense.state_dict(), tmp_path / "dense.pth")
    abs_task.load_pretrained_model(str(tmp_path / "dense.pth"), target, False)
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in dense.state_dict().items())

    partial = tmp_path / "partial.pth"  # a whole SSL module but one layer: that layer would stay random
    torch.save({k: v for k, v in model.state_dict().items() if ".layers.1." not in k}, partial)
    with pytest.raises(CheckpointError, match=r"missing from the weights: .*layers\.1\."):
        abs_task.load_pretrained_model(str(partial), target, False)
    ctc_only = tmp_path / "ctc.pth"  # initialising other modules only is what --init_param is for
    torch.save({k: v for k, v in model.state_dict().items() if k.startswith("ctc.")}, ctc_only)
    abs_task.load_pretrained_model(f"{ctc_only}:ctc:ctc", target, False)

    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.pth"

    class Payload:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {marker}",))

    torch.save({"x": Payload()}, crafted)
    with pytest.raises(CheckpointError, match="refused"):
        abs_task.load_pretrained_model(str(crafted), target, False)
    assert not marker.exists()


def test_resume_reads_checkpoint_pth_safely(base_args, tmp_path) -> None:
    """Stage 11 reruns resume through ESPnet's Trainer.resume, which unpickles checkpoint.pth freely: the
    plugin reads it with the safe loader first. A checkpoint as ESPnet writes it (numpy scalars and timedeltas
    in the reporter) resumes; a crafted one is refused before anything runs."""
    import datetime

    import numpy
    from espnet2.train.reporter import Reporter
    from espnet2.train.trainer import Trainer

    from espnet_prune.checkpoints import CheckpointError

    model, args = _build(base_args)
    optimizer = PrunedASRTask.build_optimizers(args, model)[0]
    reporter = Reporter()
    good = tmp_path / "checkpoint.pth"
    state = {
        "model": model.state_dict(),
        "reporter": reporter.state_dict(),
        "optimizers": [optimizer.state_dict()],
        "schedulers": [None],
        "scaler": None,
        "extra": [numpy.float64(1.5), datetime.timedelta(seconds=3)],
    }
    torch.save(state, good)
    Trainer.resume(good, model, reporter, [optimizer], [None], None)

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {marker}",))

    crafted = tmp_path / "crafted" / "checkpoint.pth"
    crafted.parent.mkdir()
    torch.save({**state, "reporter": Payload()}, crafted)
    with pytest.raises(CheckpointError, match="refused"):
        Trainer.resume(crafted, model, reporter, [optimizer], [None], None)
    assert not marker.exists()
