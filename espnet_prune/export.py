"""Export a CTC speech model to TorchScript or ONNX, load the exported file back, and check it against PyTorch.

The exported module takes ``speech`` (B, samples) float32 waveforms and ``speech_lengths`` (B,) int64 and
returns ``log_probs`` (B, frames, vocabulary) CTC log-probabilities and ``log_probs_lengths`` (B,) int64,
with the batch and time axes dynamic. No ESPnet import: ``espnet_prune.espnet.export`` builds that module
from an ESPnet model.

How each format is made, and why:

- TorchScript: ``torch.jit.script``. The components test their gate slots, norms and removed branches
  for None before using them (and ``layer_norm_first`` is a TorchScript constant), so an ungated model
  compiles; scripting keeps the model's control flow, e.g. the per-utterance GroupNorm of the first conv,
  which takes the plain ``group_norm`` path for an unpadded batch and the masked one for a padded batch.
  The weight-norm parametrization of the positional convolution is folded into a plain weight first
  (parametrized modules do not script), on a fresh copy: ``remove_parametrizations`` on a deep copy would
  also strip the original's, because both share the class that parametrize creates.
- ONNX: ``torch.jit.trace`` and the TorchScript-based ``torch.onnx.export`` (``dynamo=False``), as icefall
  does. The torch.export-based exporter (torch's default since 2.9) needs onnxscript and fails on the
  data-dependent branch above. A trace records one branch; the example batch is padded so that the masked
  GroupNorm is recorded, which is exact for padded and unpadded batches alike.

torch 2.11 marks ``torch.jit.script/trace/save/load`` and the TorchScript-based ONNX exporter deprecated;
they work, and their deprecation warnings are silenced here. The checks below are what a move to
``torch.export`` would have to pass too.

Checks (after icefall's ``onnx_check.py``): the exported file is loaded back as written and run on random
batches of several sizes and lengths, padded ones included; the CTC log-probs over the valid frames must
agree with the PyTorch model's to ``tolerance`` (max abs difference) and the output lengths exactly.
``greedy_ctc`` turns log-probs into best-path token ids, for comparing the hypotheses on real data.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Callable, Collection, Dict, Iterable, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from espnet_prune.constants import SAMPLE_RATE

FORMATS = ("onnx", "torchscript")
INPUT_NAMES = ("speech", "speech_lengths")
OUTPUT_NAMES = ("log_probs", "log_probs_lengths")
DYNAMIC_AXES = {
    "speech": {0: "batch", 1: "samples"},
    "speech_lengths": {0: "batch"},
    "log_probs": {0: "batch", 1: "frames"},
    "log_probs_lengths": {0: "batch"},
}
DEFAULT_OPSET = 17
TOLERANCE = 1e-4

# (speech, speech_lengths) -> (log_probs, log_probs_lengths), all torch tensors
CTCFunction = Callable[[Tensor, Tensor], Tuple[Tensor, Tensor]]


class ExportError(RuntimeError):
    """An export that failed or an exported model that does not match PyTorch; the message names the file."""


def example_batch(sample_rate: int = SAMPLE_RATE) -> Tuple[Tensor, Tensor]:
    """A padded batch of two (1 s and 0.6 s) for tracing: a trace records the padded-batch code paths."""
    generator = torch.Generator().manual_seed(0)
    speech = torch.randn(2, sample_rate, generator=generator) * 0.1
    return speech, torch.tensor([sample_rate, sample_rate * 3 // 5])


def export_torchscript(module: nn.Module, path: Path) -> None:
    """``torch.jit.script`` the eval-mode ``module`` and save it to ``path``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.11 calls TorchScript deprecated
            scripted = torch.jit.script(module.eval())
            torch.jit.save(scripted, str(path))
    except Exception as exc:  # TorchScript reports unsupported code with many exception types
        raise ExportError(f"{path}: TorchScript export failed: {exc}") from exc


def export_onnx(module: nn.Module, path: Path, metadata: Dict[str, str], opset: int = DEFAULT_OPSET) -> None:
    """Trace the eval-mode ``module`` on a padded batch, export it to ONNX at ``path`` with dynamic batch and
    time axes, and store ``metadata`` in the model's metadata_props."""
    import onnx

    speech, lengths = example_batch()
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Expected: the trace records the padded-batch branch (see the module docstring; the checks
            # verify it), torch 2.9+ calls the TorchScript-based exporter deprecated, and it finds no Python
            # signature on a traced module.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", "no signature found", UserWarning)
            traced = torch.jit.trace(module.eval(), (speech, lengths))
            torch.onnx.export(
                traced,
                (speech, lengths),
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=DYNAMIC_AXES,
                opset_version=opset,
                **legacy,
            )
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # the tracer, the exporter and the checker raise many exception types
        raise ExportError(f"{path}: ONNX export failed: {exc}") from exc
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def load_exported(path: Path, format: str, num_threads: int = 1) -> CTCFunction:
    """The exported model at ``path`` as a function of torch tensors; ExportError naming the file if it
    cannot be loaded."""
    if format == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                scripted = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # a damaged archive raises RuntimeError, zipfile or pickle errors
            raise ExportError(f"{path}: not a loadable TorchScript model: {exc}") from exc

        def run_torchscript(speech: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
            with torch.inference_mode():
                return scripted(speech, lengths)

        return run_torchscript
    if format == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ExportError(f"{path}: not a loadable ONNX model: {exc}") from exc
        names = tuple(i.name for i in session.get_inputs()), tuple(o.name for o in session.get_outputs())
        if names != (INPUT_NAMES, OUTPUT_NAMES):
            raise ExportError(f"{path}: inputs/outputs are {names}, expected {(INPUT_NAMES, OUTPUT_NAMES)}")

        def run_onnx(speech: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
            log_probs, out_lengths = session.run(
                list(OUTPUT_NAMES),
                {"speech": speech.float().numpy(), "speech_lengths": lengths.long().numpy()},
            )
            return torch.from_numpy(log_probs), torch.from_numpy(out_lengths)

        return run_onnx
    raise ValueError(f"format: {format!r} is not one of {FORMATS}")


def random_batches(
    num_batches: int, min_samples: int, max_samples: int, max_batch_size: int = 4, seed: int = 0
) -> List[Tuple[Tensor, Tensor]]:
    """Random waveform batches for the parity check: one single utterance, one unpadded batch of equal
    lengths, and padded batches of random sizes, widths and lengths (the longest fills the width)."""
    if not 1 <= min_samples <= max_samples:
        raise ValueError(
            f"random_batches: need 1 <= min_samples <= max_samples, got {min_samples}, {max_samples}"
        )
    generator = torch.Generator().manual_seed(seed)

    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (), generator=generator))

    batches = []
    for index in range(num_batches):
        width = randint(min_samples, max_samples)
        if index == 0:
            size = 1
        else:
            size = randint(2, max(2, max_batch_size))
        lengths = torch.full((size,), width, dtype=torch.long)
        if index >= 2:  # padded: every utterance but the first is shorter than the batch width
            lengths[1:] = torch.randint(min_samples, width + 1, (size - 1,), generator=generator)
        speech = torch.randn(size, width, generator=generator) * 0.1
        speech *= torch.arange(width)[None, :] < lengths[:, None]  # zero padding, as ESPnet's collate gives
        batches.append((speech, lengths))
    return batches


@dataclass
class ParityReport:
    """What a parity check compared and the largest difference it saw."""

    batches: int
    utterances: int
    max_abs_diff: float  # of the CTC log-probs over the valid frames

    def describe(self) -> str:
        return (
            f"{self.batches} batches, {self.utterances} utterances, "
            f"max |log-prob difference| {self.max_abs_diff:.2e}"
        )


def compare_outputs(reference: Tuple[Tensor, Tensor], exported: Tuple[Tensor, Tensor], what: str) -> float:
    """Max abs difference of the log-probs over the valid frames; ExportError if the lengths or shapes differ."""
    ref_probs, ref_lengths = reference
    out_probs, out_lengths = exported
    if not torch.equal(ref_lengths.long(), out_lengths.long()):
        raise ExportError(
            f"{what}: output lengths {out_lengths.tolist()} differ from PyTorch's {ref_lengths.tolist()}"
        )
    if ref_probs.shape != out_probs.shape:
        raise ExportError(
            f"{what}: log-probs of shape {tuple(out_probs.shape)}, PyTorch gives {tuple(ref_probs.shape)}"
        )
    valid = torch.arange(ref_probs.shape[1])[None, :] < ref_lengths[:, None]
    difference = (ref_probs - out_probs)[valid].abs()
    return float(difference.max()) if difference.numel() else 0.0


@torch.no_grad()
def check_parity(
    reference: CTCFunction,
    exported: CTCFunction,
    batches: Iterable[Tuple[Tensor, Tensor]],
    source: str,
    tolerance: float = TOLERANCE,
) -> ParityReport:
    """Run both on every batch; ExportError naming ``source`` when an output length differs or a valid
    log-prob differs by more than ``tolerance``."""
    report = ParityReport(0, 0, 0.0)
    for speech, lengths in batches:
        what = f"{source}: batch of {len(lengths)} x {speech.shape[1]} samples (lengths {lengths.tolist()})"
        difference = compare_outputs(reference(speech, lengths), exported(speech, lengths), what)
        if not difference <= tolerance:  # also catches NaN
            raise ExportError(
                f"{what}: CTC log-probs differ from PyTorch's by {difference:.2e} (tolerance {tolerance:g})"
            )
        report = ParityReport(
            report.batches + 1, report.utterances + len(lengths), max(report.max_abs_diff, difference)
        )
    return report


@dataclass
class HypothesisReport:
    """A greedy-decoding comparison on real data that passed: every hypothesis was identical."""

    utterances: int
    max_abs_diff: float  # of the CTC log-probs over the valid frames (reported, not bounded)

    def describe(self) -> str:
        return (
            f"{self.utterances} utterances, greedy CTC hypotheses identical, "
            f"max |log-prob difference| {self.max_abs_diff:.2e}"
        )


@torch.no_grad()
def check_hypotheses(
    reference: CTCFunction,
    exported: CTCFunction,
    batches: Iterable[Tuple[List[str], Tensor, Tensor]],
    skip: Collection[int],
    source: str,
) -> HypothesisReport:
    """Decode every (keys, speech, lengths) batch with the greedy CTC best path through both; ExportError
    naming ``source`` and the first utterances when any hypothesis differs (or no utterance was read)."""
    utterances, differing, max_abs_diff = 0, [], 0.0
    for keys, speech, lengths in batches:
        ref_out, exp_out = reference(speech, lengths), exported(speech, lengths)
        max_abs_diff = max(max_abs_diff, compare_outputs(ref_out, exp_out, f"{source}: utterances {keys}"))
        ref_hyps, exp_hyps = greedy_ctc(*ref_out, skip), greedy_ctc(*exp_out, skip)
        differing += [key for key, a, b in zip(keys, ref_hyps, exp_hyps) if a != b]
        utterances += len(keys)
    if utterances == 0:
        raise ExportError(f"{source}: no utterance to compare")
    if differing:
        raise ExportError(
            f"{source}: greedy CTC hypotheses differ from PyTorch's on {len(differing)} of "
            f"{utterances} utterances, e.g. {differing[:5]}"
        )
    return HypothesisReport(utterances, max_abs_diff)


def greedy_ctc(log_probs: Tensor, lengths: Tensor, skip: Collection[int]) -> List[List[int]]:
    """Best-path token ids per utterance: argmax over the valid frames, repeats merged, ``skip`` (blank,
    sos/eos) dropped."""
    paths = log_probs.argmax(-1)
    return [
        [token for token, _ in groupby(paths[i, : int(lengths[i])].tolist()) if token not in skip]
        for i in range(len(lengths))
    ]


def min_input_samples(conv_layers: Sequence[Tuple[int, int, int]]) -> int:
    """Samples that the CNN needs for its first output frame (its receptive field)."""
    field, jump = 1, 1
    for _, kernel, stride in conv_layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field


def frame_shift(conv_layers: Sequence[Tuple[int, int, int]]) -> int:
    """Samples between two output frames."""
    return math.prod(stride for _, _, stride in conv_layers)
