"""ESPnet frontend ``pruned_wav2vec2``: the prunable SSL model in front of another encoder (like ``s3prl``)."""

from __future__ import annotations

import logging
from typing import Any, Dict, Tuple, Union

import humanfriendly
import torch
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from torch import nn

from espnet_prune.constants import SAMPLE_RATE
from espnet_prune.espnet.ssl import ConfigError, PrunableSSL, SSLOptions, with_ssl_options


class PrunedWav2Vec2Frontend(AbsFrontend):
    """wav2vec2 / HuBERT features for a downstream ESPnet encoder, optionally gated for HJ-Pruning.

    Args:
        fs: sampling rate (ESPnet's asr.sh passes it); the models are 16 kHz only.
        multilayer_feature: output a learned softmax-weighted sum of all hidden states (input of layer 1
            and every layer output, up to ``output_layer``) instead of the last layer.
        Others: the ``SSLOptions``.
    """

    @with_ssl_options
    def __init__(
        self, fs: Union[int, str] = SAMPLE_RATE, multilayer_feature: bool = False, **options: Any
    ) -> None:
        super().__init__()
        if isinstance(fs, str):
            fs = humanfriendly.parse_size(fs)
        if fs != SAMPLE_RATE:
            raise ConfigError(f"frontend_conf.fs: wav2vec2 / HuBERT models take 16 kHz audio, got {fs}")
        self.options = SSLOptions.from_conf(options, "frontend_conf")
        self.ssl = PrunableSSL("frontend_conf", self.options)
        self.multilayer_feature = multilayer_feature
        self.layer_weights = (
            nn.Parameter(torch.zeros(self.ssl.config.num_layers + 1)) if multilayer_feature else None
        )

    def output_size(self) -> int:
        return self.ssl.config.embed_dim

    def explicit_conf(self) -> Dict[str, Any]:
        """``frontend_conf`` that rebuilds this frontend from config.yaml alone."""
        return dict(self.ssl.explicit_options().to_conf(), multilayer_feature=self.multilayer_feature)

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """input: (B, samples) waveforms -> features (B, frames, embed_dim) and frame lengths."""
        out = self.ssl(input, input_lengths)
        if self.layer_weights is None:
            return out.last_hidden_state, out.lengths
        weights = torch.softmax(self.layer_weights, dim=0)
        feats = torch.einsum("l,lbtc->btc", weights, torch.stack(out.hidden_states))
        return feats, out.lengths

    def reload_pretrained_parameters(self) -> None:
        """Called by ESPnet after ``--init``: rebuild the SSL model from its checkpoint."""
        self.ssl = PrunableSSL("frontend_conf", self.options)
        logging.info("pruned_wav2vec2 frontend: pretrained parameters reloaded after --init")
