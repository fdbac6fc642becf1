"""ESPnet frontend ``pruned_wav2vec2``: the prunable SSL model in front of another encoder (like ``s3prl``)."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple, Union

import humanfriendly
import torch
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from torch import nn

from espnet_prune.espnet.ssl import ConfigError, MappingOrPath, PrunableSSL


class PrunedWav2Vec2Frontend(AbsFrontend):
    """wav2vec2 / HuBERT features for a downstream ESPnet encoder, optionally gated for HJ-Pruning.

    Args:
        fs: sampling rate (ESPnet's asr.sh passes it); the models are 16 kHz only.
        multilayer_feature: output a learned softmax-weighted sum of all hidden states (input of layer 1
            and every layer output, up to ``output_layer``) instead of the last layer.
        Others: those of ``PrunableSSL``.
    """

    def __init__(
        self,
        fs: Union[int, str] = 16000,
        ssl_checkpoint: Optional[str] = None,
        model_config: MappingOrPath = None,
        preset: Optional[str] = None,
        model_overrides: Optional[Dict[str, Any]] = None,
        output_layer: Optional[int] = None,
        pruning: MappingOrPath = None,
        freeze_cnn_updates: int = 0,
        normalize_waveform: bool = False,
        multilayer_feature: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(fs, str):
            fs = humanfriendly.parse_size(fs)
        if fs != 16000:
            raise ConfigError(f"frontend_conf.fs: wav2vec2 / HuBERT models take 16 kHz audio, got {fs}")
        self._kwargs = dict(
            ssl_checkpoint=ssl_checkpoint,
            model_config=model_config,
            preset=preset,
            model_overrides=model_overrides,
            output_layer=output_layer,
            pruning=pruning,
            freeze_cnn_updates=freeze_cnn_updates,
            normalize_waveform=normalize_waveform,
        )
        self.ssl = PrunableSSL("frontend_conf", **self._kwargs)
        self.multilayer_feature = multilayer_feature
        self.layer_weights = nn.Parameter(torch.zeros(self.ssl.config.num_layers + 1)) if multilayer_feature else None

    def output_size(self) -> int:
        return self.ssl.config.embed_dim

    def explicit_conf(self) -> Dict[str, Any]:
        """``frontend_conf`` that rebuilds this frontend from config.yaml alone."""
        return dict(self.ssl.explicit_conf(), multilayer_feature=self.multilayer_feature)

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
        self.ssl = PrunableSSL("frontend_conf", **self._kwargs)
        logging.info("pruned_wav2vec2 frontend: pretrained parameters reloaded after --init")
