"""ESPnet encoder ``pruned_wav2vec2``: the prunable SSL model on raw waveforms (``frontend: null``)."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder

from espnet_prune.espnet.ssl import ConfigError, PrunableSSL, SSLOptions, with_ssl_options


class PrunedWav2Vec2Encoder(AbsEncoder):
    """wav2vec2 / HuBERT as an ESPnet encoder, optionally gated for HJ-Pruning.

    ESPnet passes ``input_size`` from the config; raw waveforms need ``input_size: 1`` (and no frontend,
    no normalize layer). The other keyword arguments are the ``SSLOptions``; the output is the last kept
    layer (``output_layer`` k: layer k, with the layers above dropped).
    """

    @with_ssl_options
    def __init__(self, input_size: int, **options: Any) -> None:
        super().__init__()
        if input_size != 1:
            raise ConfigError(
                f"encoder_conf: pruned_wav2vec2 reads raw waveforms; set `input_size: 1` and `frontend: null` "
                f"(got input_size {input_size}, i.e. features from a frontend)"
            )
        self.options = SSLOptions.from_conf(options, "encoder_conf")
        self.ssl = PrunableSSL("encoder_conf", self.options)

    def output_size(self) -> int:
        return self.ssl.config.embed_dim

    def explicit_conf(self) -> Dict[str, Any]:
        """``encoder_conf`` that rebuilds this encoder from config.yaml alone."""
        return self.ssl.explicit_options().to_conf()

    def forward(
        self, xs_pad: torch.Tensor, ilens: torch.Tensor, prev_states: torch.Tensor = None
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """xs_pad: (B, samples) waveforms -> (B, frames, embed_dim), frame lengths, None."""
        out = self.ssl(xs_pad, ilens)
        return out.last_hidden_state, out.lengths, None

    def reload_pretrained_parameters(self) -> None:
        """Called by ESPnet after ``--init``: rebuild from the checkpoint so that its weights (and zero
        lambdas) survive the re-initialisation of the rest of the model."""
        self.ssl = PrunableSSL("encoder_conf", self.options)
        logging.info("pruned_wav2vec2 encoder: pretrained parameters reloaded after --init")
