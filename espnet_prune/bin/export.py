"""Export a mask-removed ESPnet CTC model (waveforms in, CTC log-probs out) to ONNX or TorchScript, checked
against PyTorch.

    python -m espnet_prune.bin.export --asr_train_config exp/asr/pruned/config.yaml \\
        --asr_model_file exp/asr/pruned/model.pth --format onnx --out_dir exp/asr/onnx \\
        --check_data dump/raw/test_clean/wav.scp

Inputs ``speech`` (batch, samples) float32 16 kHz waveforms, zero-padded, and ``speech_lengths`` (batch,)
int64; outputs ``log_probs`` (batch, frames, vocabulary) and ``log_probs_lengths`` (batch,); batch and time
are dynamic. OUT_DIR gets the model (``model.onnx`` | ``model.torchscript.pt``), ``tokens.txt`` (token id
= line number), the sentencepiece model of a bpe token list (``bpe.model``) and ``export_<format>.json``
(sample rate, input/output names, blank id, frame shift, the checks' numbers). ONNX files carry the same
facts in their metadata. How each format is made: see ``espnet_prune.export``.

Checks, on the file as written: random batches of several sizes and lengths, padded ones included, must
give the PyTorch model's CTC log-probs over the valid frames to --tolerance (max abs difference) and its
output lengths exactly; with --check_data, every utterance of that set must get the same greedy CTC
hypothesis through the export as through PyTorch. A failed check, like any error, exits with status 1 and
leaves nothing in OUT_DIR (files are staged in a temporary folder and moved in once all checks passed, the
JSON last). A gated model is refused: remove its masks first (``espnet_prune.bin.remove_masks``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from espnet_prune.cli import add_trust_checkpoint, exit_on_error
from espnet_prune.constants import SAMPLE_RATE
from espnet_prune.espnet import ConfigError
from espnet_prune.espnet.export import (
    bpemodel_path,
    ctc_export_model,
    data_batches,
    espnet_ctc_function,
    skip_tokens,
)
from espnet_prune.espnet.loading import load_asr_model
from espnet_prune.export import (
    DEFAULT_OPSET,
    FORMATS,
    INPUT_NAMES,
    OUTPUT_NAMES,
    TOLERANCE,
    ExportError,
    check_hypotheses,
    check_parity,
    export_onnx,
    export_torchscript,
    frame_shift,
    load_exported,
    min_input_samples,
    random_batches,
)

MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
MIN_CHECK_SECONDS = 0.25


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--asr_train_config", type=Path, required=True, help="config.yaml of a removed (or dense) model"
    )
    parser.add_argument(
        "--asr_model_file", type=Path, required=True, help="its weights, e.g. exp/asr/pruned/model.pth"
    )
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--out_dir", type=Path, required=True, help="where the exported files are written")
    parser.add_argument(
        "--check_data",
        type=Path,
        default=None,
        help="a data file (e.g. dump/raw/test/wav.scp) to decode through both and compare",
    )
    parser.add_argument(
        "--check_data_type", default="sound", help="ESPnet's type of --check_data (sound, kaldi_ark, ...)"
    )
    parser.add_argument("--batch_size", type=int, default=4, help="utterances per batch for --check_data")
    parser.add_argument(
        "--check_batches", type=int, default=6, help="random batches of the parity check (>= 3)"
    )
    parser.add_argument("--check_max_seconds", type=float, default=2.0, help="longest random utterance")
    parser.add_argument(
        "--tolerance", type=float, default=TOLERANCE, help="max abs difference of the log-probs"
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random batches")
    add_trust_checkpoint(parser)
    return parser


def _describe_io(
    model_file: str, token_list_size: int, blank_id: int, skip: Sequence[int], conv_layers
) -> Dict[str, Any]:
    """What a user needs to feed the exported model and read its output."""
    return {
        "model_file": model_file,
        "sample_rate": SAMPLE_RATE,
        "input_names": list(INPUT_NAMES),
        "output_names": list(OUTPUT_NAMES),
        "inputs": {
            "speech": "float32 (batch, samples): mono waveforms, zero-padded",
            "speech_lengths": "int64 (batch,): valid samples per utterance",
        },
        "outputs": {
            "log_probs": "float32 (batch, frames, vocabulary): CTC log-probabilities",
            "log_probs_lengths": "int64 (batch,): valid frames per utterance",
        },
        "frame_shift_samples": frame_shift(conv_layers),
        "min_input_samples": min_input_samples(conv_layers),
        "vocabulary_size": token_list_size,
        "blank_id": blank_id,
        "skip_ids": list(skip),
        "token_list": "tokens.txt",
    }


def run(
    asr_train_config: Path,
    asr_model_file: Path,
    format: str,
    out_dir: Path,
    check_data: Optional[Path] = None,
    check_data_type: str = "sound",
    batch_size: int = 4,
    check_batches: int = 6,
    check_max_seconds: float = 2.0,
    tolerance: float = TOLERANCE,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    trust_checkpoint: bool = False,
) -> Dict[str, Any]:
    """Export, check, and move the files into ``out_dir``; returns what export_<format>.json holds."""
    if check_batches < 3:
        raise ConfigError(
            f"--check_batches: at least 3 (one single utterance, one unpadded, one padded), got {check_batches}"
        )
    if check_data is not None and not check_data.is_file():
        raise ConfigError(f"--check_data: {str(check_data)!r} does not exist")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out_dir: {str(out_dir)!r} exists and is not a directory")
    missing = [
        name
        for name in ("onnx", "onnxruntime")
        if format == "onnx" and importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ConfigError(f"--format onnx needs {' and '.join(missing)}: pip install 'espnet_prune[export]'")
    model, args = load_asr_model(asr_train_config, asr_model_file, trust_checkpoint)
    module = ctc_export_model(model, str(asr_train_config))
    reference = espnet_ctc_function(model)
    conv_layers = module.ssl.config.conv_layers
    skip = skip_tokens(model)
    bpemodel = bpemodel_path(args)
    if bpemodel is not None and not bpemodel.is_file():
        raise ConfigError(f"{asr_train_config}: bpemodel {str(bpemodel)!r} does not exist")
    manifest: Dict[str, Any] = {
        "format": format,
        **_describe_io(MODEL_FILES[format], len(model.token_list), model.blank_id, skip, conv_layers),
    }
    manifest.update(
        token_type=args.token_type,
        bpemodel=None if bpemodel is None else "bpe.model",
        normalize_waveform=module.ssl.normalize_waveform,
    )  # done inside the exported model
    if format == "onnx":
        manifest["opset"] = opset
    manifest["source"] = {"asr_train_config": str(asr_train_config), "asr_model_file": str(asr_model_file)}

    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".export-{format}-", dir=out_dir))
    try:
        model_path = stage / MODEL_FILES[format]
        if format == "onnx":
            metadata = {
                k: json.dumps(manifest[k])
                for k in (
                    "sample_rate",
                    "blank_id",
                    "skip_ids",
                    "vocabulary_size",
                    "frame_shift_samples",
                    "token_type",
                )
            }
            export_onnx(module, model_path, metadata, opset)
        else:
            export_torchscript(module, model_path)
        exported = load_exported(model_path, format, num_threads=torch.get_num_threads())
        min_samples = max(min_input_samples(conv_layers), int(MIN_CHECK_SECONDS * SAMPLE_RATE))
        batches = random_batches(
            check_batches, min_samples, max(min_samples, int(check_max_seconds * SAMPLE_RATE)), seed=seed
        )
        parity = check_parity(reference, exported, batches, f"{format} export of {asr_model_file}", tolerance)
        print(f"{format} export checked against PyTorch: {parity.describe()} (tolerance {tolerance:g})")
        manifest["checks"] = {"random_batches": dict(vars(parity), tolerance=tolerance)}
        if check_data is not None:
            hypotheses = check_hypotheses(
                reference,
                exported,
                data_batches(check_data, check_data_type, args, batch_size),
                skip,
                f"{format} export of {asr_model_file} on {check_data}",
            )
            print(f"--check_data {check_data}: {hypotheses.describe()}")
            manifest["checks"]["data"] = dict(vars(hypotheses), path=str(check_data))
        (stage / "tokens.txt").write_text(
            "".join(f"{token}\n" for token in model.token_list), encoding="utf-8"
        )
        if bpemodel is not None:
            shutil.copyfile(bpemodel, stage / "bpe.model")
        manifest_name = f"export_{format}.json"
        (stage / manifest_name).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        files = (
            [MODEL_FILES[format], "tokens.txt"]
            + (["bpe.model"] if bpemodel is not None else [])
            + [manifest_name]
        )
        for name in files:
            os.replace(stage / name, out_dir / name)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    stage.rmdir()
    print(f"wrote {', '.join(str(out_dir / name) for name in files)}")
    return manifest


def main(cmd: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"
    )
    with exit_on_error("export", ExportError):
        run(
            args.asr_train_config,
            args.asr_model_file,
            args.format,
            args.out_dir,
            args.check_data,
            args.check_data_type,
            args.batch_size,
            args.check_batches,
            args.check_max_seconds,
            args.tolerance,
            args.opset,
            args.seed,
            args.trust_checkpoint,
        )


if __name__ == "__main__":
    main()
