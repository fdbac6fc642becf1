"""The exportable CTC model of an ESPnet ASR model with a mask-removed (or dense) ``pruned_wav2vec2`` encoder.

``CTCExportModel`` is the encoder's SSL model, its waveform normalisation and the CTC head in one
scriptable module (see ``espnet_prune.export`` for the formats). ``espnet_ctc_function`` is the
reference it is checked against: ESPnet's own ``model.encode`` and ``model.ctc.log_softmax``.
``data_batches`` reads a data set (e.g. dump/raw/test/wav.scp) the way ESPnet's inference does.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.tasks.asr import ASRTask
from torch import Tensor, nn

from espnet_prune.espnet.encoder import PrunedWav2Vec2Encoder
from espnet_prune.espnet.ssl import ConfigError
from espnet_prune.export import CTCFunction
from espnet_prune.models import Wav2Vec2Model
from espnet_prune.pruning.gating import iter_gates


class CTCExportModel(nn.Module):
    """Waveforms -> CTC log-probs: the SSL model (which normalises its input when its config says so) and
    the CTC head.

    The output covers the whole input width; frames past ``log_probs_lengths`` are padding.
    """

    def __init__(self, ssl: Wav2Vec2Model, ctc_lo: nn.Linear) -> None:
        super().__init__()
        self.ssl = ssl
        self.ctc_lo = ctc_lo

    def forward(self, speech: Tensor, speech_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """speech: (B, samples) float32 at 16 kHz, speech_lengths: (B,) int64 -> (B, frames, vocab), (B,)."""
        out = self.ssl(speech, speech_lengths)
        lengths = out.lengths
        assert lengths is not None  # lengths were given (also refines the type for TorchScript)
        return F.log_softmax(self.ctc_lo(out.last_hidden_state), dim=-1), lengths


def plain_copy(ssl: Wav2Vec2Model) -> Wav2Vec2Model:
    """A fresh eval-mode copy whose positional-conv weight norm is folded into a plain weight."""
    copy = Wav2Vec2Model(ssl.config)
    copy.load_state_dict(ssl.state_dict())
    torch.nn.utils.parametrize.remove_parametrizations(copy.encoder.pos_conv_embed.conv, "weight")
    return copy.eval()


def ctc_export_model(model: ESPnetASRModel, config_file: str) -> CTCExportModel:
    """The exportable module of ``model`` (built from ``config_file``); ConfigError naming the file when
    the model is gated or not a ``pruned_wav2vec2`` encoder on raw waveforms with a CTC head."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, PrunedWav2Vec2Encoder):
        raise ConfigError(
            f"{config_file}: export needs `encoder: pruned_wav2vec2`, got {type(encoder).__name__}"
        )
    ssl = encoder.ssl
    if ssl.controller is not None or any(True for _ in iter_gates(ssl.model)):
        raise ConfigError(
            f"{config_file}: this is a gated pruning model (encoder_conf.pruning is set); remove its masks first "
            "with `python -m espnet_prune.bin.remove_masks --asr_train_config CONFIG --asr_model_file MODEL "
            "--out_dir DIR` and export DIR/config.yaml with DIR/model.pth"
        )
    for key in ("frontend", "normalize", "preencoder", "postencoder"):
        if getattr(model, key, None) is not None:
            raise ConfigError(
                f"{config_file}: export supports `{key}: null` only (the encoder reads raw "
                f"waveforms), got {type(getattr(model, key)).__name__}"
            )
    if getattr(model, "ctc", None) is None:
        raise ConfigError(f"{config_file}: the model has no CTC head (model_conf.ctc_weight is 0)")
    ctc_lo = nn.Linear(model.ctc.ctc_lo.in_features, model.ctc.ctc_lo.out_features)
    ctc_lo.load_state_dict(model.ctc.ctc_lo.state_dict())
    return CTCExportModel(plain_copy(ssl.model), ctc_lo).eval()


def espnet_ctc_function(model: ESPnetASRModel) -> CTCFunction:
    """ESPnet's own forward, the reference of the checks: ``model.encode`` then ``model.ctc.log_softmax``."""
    model.eval()

    def run(speech: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        with torch.inference_mode():
            encoded, encoded_lengths = model.encode(speech, lengths)
            return model.ctc.log_softmax(encoded), encoded_lengths

    return run


def skip_tokens(model: ESPnetASRModel) -> List[int]:
    """Token ids a best path drops: blank, and sos/eos (which a CTC head can emit)."""
    return sorted({model.blank_id, model.sos, model.eos})


def data_batches(
    data: Path, data_type: str, args: argparse.Namespace, batch_size: int
) -> Iterator[Tuple[List[str], Tensor, Tensor]]:
    """(keys, speech, speech_lengths) batches of a data file (e.g. wav.scp, ``sound``), read and zero-padded
    by ESPnet's loader and collate. Its preprocessor is left out: the checks feed the same batches to both
    models, and it would need the token settings (e.g. a bpe model) that comparing token ids does not."""
    loader = ASRTask.build_streaming_iterator(
        [(str(data), "speech", data_type)],
        dtype="float32",
        batch_size=batch_size,
        key_file=None,
        num_workers=0,
        preprocess_fn=None,
        collate_fn=ASRTask.build_collate_fn(args, False),
        inference=True,
    )
    for keys, batch in loader:
        yield list(keys), batch["speech"], batch["speech_lengths"]


def bpemodel_path(args: argparse.Namespace) -> Optional[Path]:
    """The sentencepiece model of a bpe token list, when the config names one."""
    path = getattr(args, "bpemodel", None)
    return Path(path) if getattr(args, "token_type", None) == "bpe" and path else None
