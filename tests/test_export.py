"""Export of a mask-removed ESPnet CTC model to TorchScript and ONNX, checked against the PyTorch model.

A tiny gated model has its gates set to remove two attention heads, a whole FFN branch, a whole attention
branch, FFN units and CNN channels; ``remove_masks`` cuts them out. Every exported number is compared to
ESPnet's own forward of the removed model (``model.encode`` + ``model.ctc.log_softmax``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import pytest
import soundfile
import torch
import yaml

from espnet_prune.bin import export as export_cli
from espnet_prune.espnet import PrunedASRTask
from espnet_prune.espnet.export import ctc_export_model, espnet_ctc_function, skip_tokens
from espnet_prune.export import (
    FORMATS,
    ExportError,
    check_parity,
    compare_outputs,
    export_onnx,
    export_torchscript,
    greedy_ctc,
    load_exported,
    random_batches,
)

from conftest import tiny_asr_args

TOKENS = ["<blank>", "<unk>", "<space>", "A", "B", "C", "D", "E", "<sos/eos>"]
TOLERANCE = 1e-4


def _needs(format: str) -> None:
    if format == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")


class Exp:
    """A gated run (exp/gated), its mask-removed model (exp/removed) and a small data set (data/wav.scp)."""

    def __init__(self, root: Path) -> None:
        from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

        from espnet_prune.bin import remove_masks

        self.root = root
        args = PrunedASRTask.get_parser().parse_args(tiny_asr_args(root, TOKENS))
        torch.manual_seed(0)
        model = PrunedASRTask.build_model(args)
        ssl = model.encoder.ssl.model
        with torch.no_grad():
            for block in ssl.feature_extractor.conv_layers:
                block.channel_gate.log_alpha.normal_(1.0, 3.0)
            first, second = ssl.encoder.layers
            first.attention.head_gate.log_alpha.copy_(torch.tensor([5.0, -10.0, 5.0, -10.0]))
            first.feed_forward.layer_gate.log_alpha.fill_(-10.0)  # whole FFN branch
            second.attention.layer_gate.log_alpha.fill_(-10.0)  # whole attention branch
            second.feed_forward.unit_gate.log_alpha.normal_(0.0, 3.0)
            model.ctc.ctc_lo.weight.normal_(0.0, 1.0)  # a confident head: varied best paths, not all blank
        self.gated = root / "exp" / "gated"
        self.gated.mkdir(parents=True)
        with (self.gated / "config.yaml").open("w") as f:
            yaml_no_alias_safe_dump(vars(args), f)
        torch.save(model.state_dict(), self.gated / "latest.pth")
        self.removed = root / "exp" / "removed"
        remove_masks.main(
            [
                "--asr_train_config",
                str(self.gated / "config.yaml"),
                "--asr_model_file",
                str(self.gated / "latest.pth"),
                "--out_dir",
                str(self.removed),
                "--allow_budget_miss",
            ]
        )
        self.config, self.weights = self.removed / "config.yaml", self.removed / "model.pth"

        data = root / "data"
        data.mkdir()
        generator = torch.Generator().manual_seed(1)
        lines = []
        for i, seconds in enumerate([0.4, 1.3, 0.7, 0.55, 1.0]):
            wave = torch.randn(int(seconds * 16000), generator=generator) * 0.1
            soundfile.write(data / f"utt{i}.wav", wave.numpy(), 16000, subtype="FLOAT")
            lines.append(f"utt{i} {data / f'utt{i}.wav'}\n")
        self.wav_scp = data / "wav.scp"
        self.wav_scp.write_text("".join(lines))

    def model(self):
        model, _ = PrunedASRTask.build_model_from_file(self.config, self.weights)
        return model.eval()

    def export(self, out_dir: Path, *extra: str) -> None:
        export_cli.main(
            [
                "--asr_train_config",
                str(self.config),
                "--asr_model_file",
                str(self.weights),
                "--out_dir",
                str(out_dir),
                *extra,
            ]
        )


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> Exp:
    torch.set_num_threads(1)
    return Exp(tmp_path_factory.mktemp("export"))


def _export_to(exp: Exp, format: str, path: Path, config: Optional[Path] = None):
    """The exported file of the removed model (or of ``config`` with its weights) at ``path``, loaded back,
    and the PyTorch reference."""
    config = config or exp.config
    model, _ = PrunedASRTask.build_model_from_file(config, exp.weights)
    module = ctc_export_model(model, str(config))
    if format == "onnx":
        export_onnx(module, path, {"sample_rate": "16000"})
    else:
        export_torchscript(module, path)
    return load_exported(path, format), espnet_ctc_function(model)


def test_removal_cut_heads_and_whole_branches(exp: Exp) -> None:
    conf = yaml.safe_load(exp.config.read_text())["encoder_conf"]["model_config"]
    assert conf["num_heads"] == [2, 0] and conf["ffn_dims"][0] == 0 and 0 < conf["ffn_dims"][1] < 64
    assert all(
        0 < channels < dense for (channels, _, _), dense in zip(conf["conv_layers"], [16, 32, 32, 32, 32])
    )


@pytest.mark.parametrize("format", FORMATS)
def test_export_matches_pytorch_on_random_lengths_and_batches(exp: Exp, format: str, tmp_path) -> None:
    _needs(format)
    exported, reference = _export_to(exp, format, tmp_path / f"model.{format}")
    batches = random_batches(8, 1000, 20000, max_batch_size=4, seed=3)
    assert len({speech.shape[1] for speech, _ in batches}) == 8  # eight widths
    assert {len(lengths) for _, lengths in batches} >= {1, 2}
    assert any(len(set(lengths.tolist())) > 1 for _, lengths in batches)  # padded batches included
    report = check_parity(reference, exported, batches, "test", TOLERANCE)
    assert report.batches == 8 and report.utterances == sum(len(lengths) for _, lengths in batches)
    assert report.max_abs_diff <= TOLERANCE
    # The outputs compared are meaningful: a distribution over the tokens at every valid frame, not constant.
    log_probs, lengths = reference(*batches[2])
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(()), atol=1e-5)
    assert log_probs[0, : int(lengths[0])].argmax(-1).unique().numel() > 2


@pytest.mark.parametrize("format", FORMATS)
def test_padded_batch_equals_each_utterance_alone(exp: Exp, format: str, tmp_path) -> None:
    _needs(format)
    exported, reference = _export_to(exp, format, tmp_path / f"model.{format}")
    generator = torch.Generator().manual_seed(5)
    lengths = torch.tensor([12000, 7001, 3333])
    speech = torch.randn(3, 12000, generator=generator) * 0.1
    speech *= torch.arange(12000)[None, :] < lengths[:, None]
    batch_probs, batch_lengths = exported(speech, lengths)
    for i, length in enumerate(lengths.tolist()):
        alone_probs, alone_lengths = exported(speech[i : i + 1, :length], lengths[i : i + 1])
        ref_probs, ref_lengths = reference(speech[i : i + 1, :length], lengths[i : i + 1])
        frames = int(ref_lengths[0])
        assert int(batch_lengths[i]) == int(alone_lengths[0]) == frames
        assert (batch_probs[i, :frames] - ref_probs[0, :frames]).abs().max() <= TOLERANCE
        assert (alone_probs[0, :frames] - ref_probs[0, :frames]).abs().max() <= TOLERANCE


@pytest.mark.parametrize("format", FORMATS)
def test_waveform_normalisation_is_part_of_the_export(exp: Exp, format: str, tmp_path) -> None:
    _needs(format)
    config = yaml.safe_load(exp.config.read_text())
    config["encoder_conf"]["normalize_waveform"] = True
    normalizing = tmp_path / "config.yaml"
    normalizing.write_text(yaml.safe_dump(config))
    exported, reference = _export_to(exp, format, tmp_path / f"model.{format}", normalizing)
    # quiet audio: below the first GroupNorm's eps, only the normalisation brings it to the usual scale
    batches = [(speech * 1e-3, lengths) for speech, lengths in random_batches(3, 4000, 12000, seed=4)]
    assert check_parity(reference, exported, batches, "test", TOLERANCE).max_abs_diff <= TOLERANCE
    # normalisation changes the output: the check above would see an export that left it out
    plain = espnet_ctc_function(exp.model())
    assert compare_outputs(plain(*batches[2]), reference(*batches[2]), "plain vs normalised") > 0.01


def test_onnx_file_has_dynamic_axes_and_metadata(exp: Exp, tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    _export_to(exp, "onnx", tmp_path / "model.onnx")
    graph = onnx.load(str(tmp_path / "model.onnx"))
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(graph.graph.input) + list(graph.graph.output)
    }
    assert shapes == {
        "speech": ["batch", "samples"],
        "speech_lengths": ["batch"],
        "log_probs": ["batch", "frames", len(TOKENS)],
        "log_probs_lengths": ["batch"],
    }
    assert {p.key: p.value for p in graph.metadata_props} == {"sample_rate": "16000"}


def test_the_check_catches_a_trace_of_an_unpadded_batch(exp: Exp) -> None:
    """Why the ONNX export traces a padded example: a trace records one branch of the first conv's GroupNorm,
    and from an unpadded example that is the unmasked one, wrong for padded batches. The check sees it."""
    model = exp.model()
    module = ctc_export_model(model, str(exp.config))
    unpadded, _, padded = random_batches(3, 4000, 16000, seed=0)
    with torch.no_grad(), pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(module, (torch.randn(2, 16000) * 0.1, torch.tensor([16000, 16000])))
    reference = espnet_ctc_function(model)
    assert check_parity(reference, traced, [unpadded], "unpadded").max_abs_diff <= TOLERANCE
    with pytest.raises(ExportError, match=r"differ from PyTorch's by .* \(tolerance 0.0001\)"):
        check_parity(reference, traced, [padded], "padded")


@pytest.mark.parametrize("format", FORMATS)
def test_cli_exports_checks_and_writes_what_decoding_needs(exp: Exp, format: str, tmp_path, capsys) -> None:
    _needs(format)
    out = tmp_path / format
    exp.export(out, "--format", format, "--check_data", str(exp.wav_scp), "--batch_size", "2")
    printed = capsys.readouterr().out
    assert "5 utterances, greedy CTC hypotheses identical" in printed
    model_file = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}[format]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [model_file, "tokens.txt", f"export_{format}.json"]
    )
    manifest = json.loads((out / f"export_{format}.json").read_text())
    assert manifest["sample_rate"] == 16000 and manifest["model_file"] == model_file
    assert manifest["output_names"] == ["log_probs", "log_probs_lengths"] and manifest["blank_id"] == 0
    assert manifest["frame_shift_samples"] == 80 and manifest["vocabulary_size"] == len(TOKENS)
    assert manifest["checks"]["random_batches"]["max_abs_diff"] <= TOLERANCE
    assert manifest["checks"]["random_batches"]["batches"] == 6
    assert manifest["checks"]["data"]["utterances"] == 5
    assert (out / "tokens.txt").read_text().splitlines() == TOKENS

    # Decode the data with the exported file alone, independently of the CLI, and with ESPnet's model.
    exported = load_exported(out / model_file, format)
    model = exp.model()
    reference = espnet_ctc_function(model)
    hypotheses: List[List[int]] = []
    for line in exp.wav_scp.read_text().splitlines():
        wave, _ = soundfile.read(line.split()[1], dtype="float32")
        speech, lengths = torch.from_numpy(wave)[None], torch.tensor([len(wave)])
        ours, theirs = exported(speech, lengths), reference(speech, lengths)
        assert compare_outputs(theirs, ours, line) <= TOLERANCE
        hypothesis = greedy_ctc(*ours, skip_tokens(model))[0]
        assert hypothesis == greedy_ctc(*theirs, skip_tokens(model))[0]
        hypotheses.append(hypothesis)
    assert all(hypotheses) and len({tuple(h) for h in hypotheses}) == 5  # non-trivial, distinct hypotheses


def test_cli_copies_the_bpe_model_a_config_names(exp: Exp, tmp_path) -> None:
    config = yaml.safe_load(exp.config.read_text())
    config.update(token_type="bpe", bpemodel=str(tmp_path / "bpe.model"))
    bpe_config = tmp_path / "config.yaml"
    bpe_config.write_text(yaml.safe_dump(config))
    command = [
        "--asr_train_config",
        str(bpe_config),
        "--asr_model_file",
        str(exp.weights),
        "--format",
        "torchscript",
    ]
    with pytest.raises(SystemExit) as error:
        export_cli.main(command + ["--out_dir", str(tmp_path / "missing")])
    assert f"bpemodel '{tmp_path / 'bpe.model'}' does not exist" in str(error.value.code)
    (tmp_path / "bpe.model").write_bytes(b"sentencepiece model bytes")
    export_cli.main(command + ["--out_dir", str(tmp_path / "out")])
    assert (tmp_path / "out" / "bpe.model").read_bytes() == b"sentencepiece model bytes"
    assert json.loads((tmp_path / "out" / "export_torchscript.json").read_text())["bpemodel"] == "bpe.model"


def _exit_message(exp: Exp, out: Path, *extra: str) -> str:
    with pytest.raises(SystemExit) as error:
        exp.export(out, *extra)
    message = str(error.value.code)
    assert message.startswith("export: error: ") and "\n" not in message, message
    return message


def test_cli_refuses_a_gated_model(exp: Exp, tmp_path) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as error:
        export_cli.main(
            [
                "--asr_train_config",
                str(exp.gated / "config.yaml"),
                "--asr_model_file",
                str(exp.gated / "latest.pth"),
                "--format",
                "torchscript",
                "--out_dir",
                str(out),
            ]
        )
    message = str(error.value.code)
    assert "gated pruning model" in message and "espnet_prune.bin.remove_masks" in message
    assert str(exp.gated / "config.yaml") in message and not out.exists()


def test_cli_refuses_missing_check_data_before_writing(exp: Exp, tmp_path) -> None:
    out = tmp_path / "out"
    message = _exit_message(exp, out, "--format", "torchscript", "--check_data", str(tmp_path / "wav.scp"))
    assert f"--check_data: '{tmp_path / 'wav.scp'}' does not exist" in message and not out.exists()


def test_cli_refuses_corrupted_and_mismatched_weights(exp: Exp, tmp_path) -> None:
    corrupted = tmp_path / "model.pth"
    corrupted.write_bytes(exp.weights.read_bytes()[:1000])  # truncated
    with pytest.raises(SystemExit) as error:
        export_cli.main(
            [
                "--asr_train_config",
                str(exp.config),
                "--asr_model_file",
                str(corrupted),
                "--format",
                "torchscript",
                "--out_dir",
                str(tmp_path / "a"),
            ]
        )
    assert f"{corrupted}: not a readable PyTorch checkpoint (truncated or damaged" in str(error.value.code)
    with pytest.raises(SystemExit) as error:  # the gated weights with the removed model's config
        export_cli.main(
            [
                "--asr_train_config",
                str(exp.config),
                "--asr_model_file",
                str(exp.gated / "latest.pth"),
                "--format",
                "torchscript",
                "--out_dir",
                str(tmp_path / "b"),
            ]
        )
    assert "does not match the model that" in str(error.value.code)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("format", FORMATS)
def test_an_export_that_differs_fails_and_leaves_nothing(
    exp: Exp, format: str, tmp_path, monkeypatch
) -> None:
    _needs(format)

    def perturbed(model, config_file):
        module = ctc_export_model(model, config_file)
        with torch.no_grad():
            module.ctc_lo.bias[3] += 1e-3  # one token's logit: log-probs move by up to 1e-3
        return module

    monkeypatch.setattr(export_cli, "ctc_export_model", perturbed)
    out = tmp_path / "new"
    message = _exit_message(exp, out, "--format", format)
    assert "differ from PyTorch's by" in message and "(tolerance 0.0001)" in message
    assert not out.exists()
    kept = tmp_path / "existing"  # an existing directory keeps what it had, and no staging folder
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    _exit_message(exp, kept, "--format", format)
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("format", FORMATS)
def test_a_corrupted_exported_file_is_refused_naming_it(exp: Exp, format: str, tmp_path) -> None:
    _needs(format)
    path = tmp_path / f"model.{format}"
    _export_to(exp, format, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ExportError, match=f"{path}: not a loadable"):
        load_exported(path, format)
