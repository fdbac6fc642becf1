"""Distillation from the dense starting model while pruning (``pruning.distill``, DPHuBERT-style)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from espnet_prune.models import Wav2Vec2Model
from espnet_prune.pruning.controller import PruningConfig
from espnet_prune.pruning.distill import DistillConfig, LayerDistiller, frame_distillation_loss

from conftest import tiny_asr_args, tiny_config


def test_frame_loss_matches_a_loop_over_valid_frames() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    frames = [(b, t) for b in range(2) for t in range(5) if valid[b, t]]
    l1 = [sum(abs(float(student[b, t, c] - teacher[b, t, c])) for c in range(6)) / 6 for b, t in frames]
    cos = [
        float(student[b, t] @ teacher[b, t] / (student[b, t].norm() * teacher[b, t].norm()))
        for b, t in frames
    ]
    expected_l1 = sum(l1) / len(frames)
    expected_l1_cos = sum(a + math.log1p(math.exp(-c)) for a, c in zip(l1, cos)) / len(frames)
    assert float(frame_distillation_loss(student, teacher, valid, "l1")) == pytest.approx(
        expected_l1, rel=1e-5
    )
    assert float(frame_distillation_loss(student, teacher, valid, "l1_cos")) == pytest.approx(
        expected_l1_cos, rel=1e-5
    )
    # Padded frames do not count: changing them changes nothing.
    student[1, 3:] = 100.0
    assert float(frame_distillation_loss(student, teacher, valid, "l1")) == pytest.approx(
        expected_l1, rel=1e-5
    )


def test_a_student_equal_to_its_teacher_has_only_the_cosine_floor() -> None:
    torch.manual_seed(0)
    model = Wav2Vec2Model(tiny_config()).eval()
    distiller = LayerDistiller(Wav2Vec2Model(tiny_config()).eval(), DistillConfig(layers=[2, 4]))
    distiller.teacher.load_state_dict(model.state_dict())
    waveform, lengths = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 5000])
    with torch.no_grad():
        output = model(waveform, lengths)
        assert float(distiller(waveform, lengths, output)) == pytest.approx(
            math.log1p(math.exp(-1.0)), abs=1e-5
        )
        distiller.cfg.loss = "l1"
        assert float(distiller(waveform, lengths, output)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "block, message",
    [
        ({"weight": 0}, "weight: must be > 0"),
        ({"layers": []}, "layers: distinct"),
        ({"layers": [2, 2]}, "layers: distinct"),
        ({"loss": "mse"}, "loss: 'mse' is not one of"),
        ({"layrs": [1]}, "layrs"),
    ],
)
def test_bad_distill_blocks_name_the_key(block, message) -> None:
    with pytest.raises(ValueError, match=message):
        PruningConfig.from_dict({"variant": "mac", "target_sparsity": 0.5, "distill": block})


def test_layers_beyond_the_model_are_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"pruning.distill.layers: the model has 4 Transformer layers"):
        LayerDistiller(Wav2Vec2Model(tiny_config()), DistillConfig(layers=[4, 5]), "pruning.distill")


def _espnet_model(tmp_path: Path, *overrides: str):
    from espnet_prune.espnet import PrunedASRTask

    args = PrunedASRTask.get_parser().parse_args([*tiny_asr_args(tmp_path), *overrides])
    return PrunedASRTask.build_model(args), args


def _batch():
    torch.manual_seed(0)
    return dict(
        speech=torch.randn(2, 16000) * 0.1,
        speech_lengths=torch.tensor([16000, 12000]),
        text=torch.tensor([[3, 4, 5], [5, 3, -1]]),
        text_lengths=torch.tensor([3, 2]),
    )


def test_espnet_training_adds_the_weighted_loss_and_keeps_the_teacher_out_of_checkpoints(tmp_path) -> None:
    from espnet_prune.espnet import PrunedASRTask
    from espnet_prune.espnet.asr_removal import remove_asr_masks

    model, args = _espnet_model(tmp_path, "--encoder_conf", "pruning.distill={weight: 2.0, layers: [1, 2]}")
    ssl = model.encoder.ssl
    teacher = {k: v.clone() for k, v in ssl.distiller.teacher.state_dict().items()}
    assert teacher.keys() == {k for k in ssl.model.state_dict() if not k.endswith("log_alpha")}
    assert not any("teacher" in k for k in model.state_dict())  # never saved, never in config.yaml weights
    assert args.encoder_conf["pruning"]["distill"] == {
        "weight": 2.0,
        "layers": [1, 2],
        "loss": "l1_cos",
        "teacher": None,
    }

    optimizer = PrunedASRTask.build_optimizers(args, model)[0]
    model.train()
    for _ in range(3):
        loss, stats, _ = model(**_batch())
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in ssl.distiller.projections.parameters())
        optimizer.step()
    distill_part = float(stats["loss"] - stats["loss_task"] - stats["loss_pruning"])
    assert float(stats["loss_distill"]) > 0
    assert distill_part == pytest.approx(
        2.0 * float(stats["task_loss_scale"] * stats["loss_distill"]), rel=1e-4
    )
    assert all(torch.equal(v, ssl.distiller.teacher.state_dict()[k]) for k, v in teacher.items())
    assert not any(p.requires_grad for p in ssl.distiller.teacher.parameters())

    removed, removed_args = remove_asr_masks(model, args)
    assert removed_args.encoder_conf.get("pruning") is None
    assert not any("distiller" in k for k in removed.state_dict())


def test_distillation_pulls_a_perturbed_student_back_to_its_teacher(tmp_path) -> None:
    """With the task loss at zero weight in the gradient, only distillation moves the weights: the gap to the
    teacher (which the student started equal to) shrinks after perturbing the student."""
    model, args = _espnet_model(
        tmp_path,
        "--encoder_conf",
        "pruning.distill={weight: 1.0, layers: [1, 2], loss: l1}",
        "--encoder_conf",
        "pruning.gates.init_keep_prob=0.99",
    )
    ssl = model.encoder.ssl
    with torch.no_grad():
        for name, p in ssl.model.encoder.named_parameters():
            if not name.endswith("log_alpha"):
                p.add_(0.05 * torch.randn_like(p))
    trainable = [p for n, p in ssl.model.encoder.named_parameters() if not n.endswith("log_alpha")]
    optimizer = torch.optim.Adam(trainable, lr=3e-3)
    batch = _batch()
    losses = []
    ssl.eval()  # deterministic masks: the loss measures the weights alone
    for _ in range(30):
        output = ssl(batch["speech"], batch["speech_lengths"])
        distill = ssl.distiller(batch["speech"], batch["speech_lengths"], output)
        optimizer.zero_grad()
        distill.backward()
        optimizer.step()
        losses.append(float(distill))
    assert losses[-1] < 0.5 * losses[0], losses


def test_distill_block_round_trips_through_config_yaml(tmp_path) -> None:
    from espnet_prune.espnet import PrunedASRTask

    model, args = _espnet_model(tmp_path, "--encoder_conf", "pruning.distill={layers: [2]}")
    config, weights = tmp_path / "config.yaml", tmp_path / "model.pth"
    config.write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), weights)
    rebuilt, _ = PrunedASRTask.build_model_from_file(config, weights)
    assert rebuilt.encoder.ssl.distiller.cfg.layers == [2]
    assert all(torch.equal(v, rebuilt.state_dict()[k]) for k, v in model.state_dict().items())


def test_the_teacher_is_the_model_that_init_param_loads(tmp_path) -> None:
    """The recipes start a pruning run from a fine-tuned model with ESPnet's --init_param: the teacher must
    be those weights, not the ones the model was built with."""
    from espnet2.tasks import abs_task

    source, _ = _espnet_model(tmp_path, "--encoder_conf", "pruning=null")
    torch.manual_seed(1)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    weights = tmp_path / "dense.pth"
    torch.save(source.state_dict(), weights)
    model, _ = _espnet_model(tmp_path, "--encoder_conf", "pruning.distill={layers: [2]}")
    abs_task.load_pretrained_model(f"{weights}:encoder:encoder", model, True)
    teacher = model.encoder.ssl.distiller.teacher.state_dict()
    assert teacher.keys() == source.encoder.ssl.model.state_dict().keys()
    assert all(torch.equal(v, source.encoder.ssl.model.state_dict()[k]) for k, v in teacher.items())


def test_a_teacher_file_gives_the_teacher_its_weights_and_init_param_keeps_them(tmp_path) -> None:
    """``distill.teacher``: the teacher is the dense fine-tuned model of that file (CoFi's teacher), found
    inside a whole ESPnet model file, while --init_param sets the student only."""
    from espnet2.tasks import abs_task

    def perturbed(seed: int) -> Path:
        source, _ = _espnet_model(tmp_path, "--encoder_conf", "pruning=null")
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in source.parameters():
                p.add_(0.1 * torch.randn_like(p))
        path = tmp_path / f"dense{seed}.pth"
        torch.save(source.state_dict(), path)
        return path

    fine_tuned, start = perturbed(1), perturbed(2)
    model, _ = _espnet_model(  # as pruned_asr.sh --distill_teacher adds it to the config's options
        tmp_path,
        "--encoder_conf",
        f"pruning.distill.teacher={fine_tuned}",
        "--encoder_conf",
        "pruning.distill.layers=[2]",
    )
    abs_task.load_pretrained_model(f"{start}:encoder:encoder", model, True)
    reference = Wav2Vec2Model(model.encoder.ssl.distiller.teacher.config)
    prefix = "encoder.ssl.model."
    state = torch.load(fine_tuned)
    reference.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    reference.eval()
    batch = _batch()
    speech, lengths = batch["speech"], batch["speech_lengths"]
    with torch.no_grad():
        expected = reference(speech, lengths).hidden_states[2]
        taught = model.encoder.ssl.distiller.teacher(speech, lengths).hidden_states[2]
    assert torch.equal(taught, expected)
    student = {k: v for k, v in model.encoder.ssl.model.state_dict().items() if not k.endswith("log_alpha")}
    started = torch.load(start)
    assert all(torch.equal(v, started[f"{prefix}{k}"]) for k, v in student.items())
    assert not torch.equal(
        started[f"{prefix}feature_projection.projection.weight"],
        state[f"{prefix}feature_projection.projection.weight"],
    )


def test_a_bad_teacher_file_is_refused_naming_the_key_and_the_file(tmp_path) -> None:
    from espnet_prune.espnet.ssl import ConfigError

    def build(teacher: Path):
        return _espnet_model(
            tmp_path, "--encoder_conf", f"pruning.distill={{layers: [2], teacher: {teacher}}}"
        )

    with pytest.raises(
        ConfigError, match=r"encoder_conf.pruning.distill.teacher: .*absent.pth: no such file"
    ):
        build(tmp_path / "absent.pth")
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"decoder.weight": torch.zeros(2)}, unrelated)
    with pytest.raises(ConfigError, match=r"distill.teacher: .*unrelated.pth' holds no SSL model"):
        build(unrelated)
    narrower = tmp_path / "narrower.pth"
    config = _espnet_model(tmp_path, "--encoder_conf", "pruning=null")[0].encoder.ssl.config
    other = Wav2Vec2Model(config.replace(ffn_dims=[d // 2 for d in config.ffn_dims])).state_dict()
    torch.save({f"encoder.ssl.model.{k}": v for k, v in other.items()}, narrower)
    with pytest.raises(
        ConfigError, match=r"narrower.pth' does not match the SSL model's geometry: .* other shapes"
    ):
        build(narrower)
