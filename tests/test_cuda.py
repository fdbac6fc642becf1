"""On a GPU: the gates, the controller, the distiller and mask removal work with everything on CUDA, as
ESPnet trains with ``--ngpu 1``, and give what the CPU gives. CI has no GPU, so these skip there; they run
wherever one is present (``pytest tests/test_cuda.py``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterator

import pytest
import torch
from test_controller import REFERENCE_SECONDS, _sparsity, prune_by_distillation
from test_latency import synthetic_table
from test_removal import ragged_config, randomly_gated
from torch import nn

from espnet_prune.checkpoints import load_checkpoint
from espnet_prune.models import Wav2Vec2Model
from espnet_prune.pruning import PruningConfig, PruningController, attach_gates, remove_masks
from espnet_prune.pruning.budget import fit_to_targets
from espnet_prune.pruning.distill import DistillConfig, LayerDistiller
from espnet_prune.pruning.gating import GateConfig, iter_gates
from espnet_prune.pruning.latency import exact_latency_ms

from conftest import tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = "cuda"


@pytest.fixture(autouse=True)
def full_precision_matmuls() -> Iterator[None]:
    """No TF32: the comparisons with the CPU are at float32 precision."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _on_cuda(module: nn.Module) -> bool:
    tensors = list(module.parameters()) + list(module.buffers())
    return bool(tensors) and all(t.device.type == CUDA for t in tensors)


@pytest.mark.parametrize(
    "pruning",
    [
        {"variant": "mac", "target_sparsity": 0.5},
        {"variant": "sep_size", "cnn_target_sparsity": 0.3, "transformer_target_sparsity": 0.5},
        {"variant": "latency", "target_sparsity": 0.5},
    ],
    ids=["mac", "sep_size", "latency"],
)
def test_a_pruning_run_on_cuda_ends_at_its_budget_and_removes_exactly(pruning, tmp_path: Path):
    if pruning["variant"] == "latency":
        table_path = tmp_path / "latency.json"
        synthetic_table(tiny_config()).save(table_path)
        pruning = {**pruning, "latency_table": str(table_path)}
    dense, model, controller, _ = prune_by_distillation(pruning, device=CUDA)
    assert _on_cuda(model) and _on_cuda(controller) and controller.num_updates == 400

    targets = controller.cfg.targets()
    fit_to_targets(model, targets, REFERENCE_SECONDS, controller.latency_table)
    removed, config = remove_masks(model)
    assert _on_cuda(removed)
    for name, final in targets:
        if name == "latency":
            table = controller.latency_table
            cut = 1.0 - exact_latency_ms(table, config) / exact_latency_ms(table, dense.config)
        else:
            cut = _sparsity(dense, config, name)
        assert abs(cut - final) <= 0.015, (name, cut)

    torch.manual_seed(5)
    waves, lengths = torch.randn(3, 9000), torch.tensor([9000, 7000, 5123])
    with torch.no_grad():
        gated_out = model(waves.to(CUDA), lengths.to(CUDA))
        removed_out = removed(waves.to(CUDA), lengths.to(CUDA))
        cpu_out = removed.cpu()(waves, lengths)
    valid = ~gated_out.padding_mask
    assert torch.equal(gated_out.lengths, removed_out.lengths)
    assert (gated_out.last_hidden_state - removed_out.last_hidden_state)[valid].abs().max() <= 1e-4
    assert (removed_out.last_hidden_state.cpu() - cpu_out.last_hidden_state)[valid.cpu()].abs().max() <= 1e-4


@pytest.mark.parametrize(
    "gates, geometry",
    [
        (GateConfig(conv_channels=False), {}),  # the Transformer-only baseline's gates: CNN kept whole
        (GateConfig(attention_heads=False, attention_layers=False), {}),  # attention kept whole
        (GateConfig(), {"model_type": "wavlm", "num_buckets": 32, "max_distance": 40}),
    ],
    ids=["cnn_ungated", "attention_ungated", "wavlm"],
)
def test_masks_removed_on_cuda_give_the_cpus_model(gates, geometry):
    """Every structure, gated or not, is cut on the model's device into the model the CPU cuts."""
    gated = randomly_gated(ragged_config("layer_norm", True).replace(**geometry), seed=4, gates=gates)
    cpu_removed, cpu_config = remove_masks(gated)
    removed, config = remove_masks(copy.deepcopy(gated).to(CUDA))
    assert config == cpu_config and _on_cuda(removed)
    cpu_state = cpu_removed.state_dict()
    for key, value in removed.state_dict().items():
        torch.testing.assert_close(value.cpu(), cpu_state[key], msg=key)


def test_the_lagrangian_term_and_its_gradients_on_cuda_equal_the_cpus():
    cpu_model = randomly_gated(tiny_config(), seed=3)
    cfg = PruningConfig.from_dict({"variant": "mac", "target_sparsity": 0.5, "reference_seconds": 2.0})
    cpu_controller = PruningController(cpu_model, cfg).eval()
    cpu_controller.lambdas.copy_(torch.tensor([[0.7, 0.2]]))
    cuda_model, cuda_controller = copy.deepcopy(cpu_model).to(CUDA), copy.deepcopy(cpu_controller).to(CUDA)

    task = torch.tensor(3.0)
    cpu_term, cpu_stats = cpu_controller(cpu_model, task)
    cuda_term, cuda_stats = cuda_controller(cuda_model, task.to(CUDA))
    assert cuda_term.device.type == CUDA
    assert float(cuda_term.detach()) == pytest.approx(float(cpu_term.detach()), rel=1e-5)
    for key in ("exact_sparsity_macs", "expected_sparsity_macs", "exact_gmacs", "target_macs"):
        assert float(cuda_stats[key]) == pytest.approx(float(cpu_stats[key]), rel=1e-5), key
    cpu_term.backward()
    cuda_term.backward()
    for (name, cpu_gate), (_, cuda_gate) in zip(iter_gates(cpu_model), iter_gates(cuda_model)):
        torch.testing.assert_close(cuda_gate.log_alpha.grad.cpu(), cpu_gate.log_alpha.grad, msg=name)


def test_the_distiller_follows_the_student_to_cuda_and_gives_the_cpus_loss():
    torch.manual_seed(0)
    teacher = Wav2Vec2Model(tiny_config()).eval()
    student = randomly_gated(tiny_config(), seed=1)
    cfg = DistillConfig.from_dict({"layers": [2, 4]})
    cpu_distiller = LayerDistiller(copy.deepcopy(teacher), cfg)
    cuda_distiller = LayerDistiller(teacher, cfg).to(CUDA)  # the teacher stays on the CPU until first used
    waves, lengths = torch.randn(2, 7000), torch.tensor([7000, 5000])
    with torch.no_grad():
        cpu_loss = cpu_distiller(waves, lengths, student(waves, lengths))
        cuda_student = copy.deepcopy(student).to(CUDA)
        cuda_waves, cuda_lengths = waves.to(CUDA), lengths.to(CUDA)
        cuda_loss = cuda_distiller(cuda_waves, cuda_lengths, cuda_student(cuda_waves, cuda_lengths))
    assert _on_cuda(cuda_distiller.teacher) and cuda_loss.device.type == CUDA
    assert float(cuda_loss) == pytest.approx(float(cpu_loss), rel=1e-4)


def test_a_checkpoint_written_on_cuda_resumes_on_the_cpu(tmp_path: Path):
    """A GPU run's checkpoint (gates and controller state) loads where no GPU is, with every value."""
    model = randomly_gated(tiny_config(), seed=2).to(CUDA)
    cfg = PruningConfig.from_dict({"variant": "mac", "target_sparsity": 0.5, "reference_seconds": 2.0})
    controller = PruningController(model, cfg).to(CUDA)
    controller.lambdas.fill_(0.3)
    controller.updates.fill_(17)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "controller": controller.state_dict()}, path)
    state = load_checkpoint(path)
    cpu_model = attach_gates(Wav2Vec2Model(tiny_config()), GateConfig())
    cpu_model.load_state_dict(state["model"])
    cpu_controller = PruningController(cpu_model, cfg)
    cpu_controller.load_state_dict(state["controller"])
    assert cpu_controller.num_updates == 17 and cpu_controller.lambdas.device.type == "cpu"
    assert torch.equal(cpu_controller.lambdas, controller.lambdas.cpu())
    for (name, gate), (_, cpu_gate) in zip(iter_gates(model), iter_gates(cpu_model)):
        assert torch.equal(gate.log_alpha.cpu(), cpu_gate.log_alpha), name
