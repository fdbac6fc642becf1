"""ESPnet model ``pruned_espnet``: ESPnet's ASR model plus the HJ-Pruning Lagrangian term."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.torch_utils.device_funcs import force_gatherable

from espnet_prune.espnet.ssl import PrunableSSL, find_prunable


class PrunedESPnetASRModel(ESPnetASRModel):
    """``ESPnetASRModel`` whose loss adds the pruning term of its gated ``pruned_wav2vec2`` encoder/frontend.

    Training stats gain ``loss_task`` (ESPnet's loss), ``loss_pruning``, ``task_loss_scale`` (the running task-loss
    magnitude the pruning term is scaled by), ``expected_params`` / ``exact_params`` (M),
    ``expected_gmacs`` / ``exact_gmacs`` (at the pruning block's reference duration) and, per controlled
    quantity, ``expected_sparsity_*`` (under the gates' distribution), ``exact_sparsity_*`` (of the model
    mask removal would cut now, which the controller steers), ``target_*``, ``lambda1_*`` and
    ``lambda2_*``; ``loss`` is the sum of the two losses, in training and validation alike. Without a gated
    module it behaves exactly like ``ESPnetASRModel``.
    """

    def gated_ssl(self) -> Optional[PrunableSSL]:
        """The gated SSL module (at most one per model), or None."""
        gated = [m for _, m in find_prunable(self) if m.controller is not None]
        if len(gated) > 1:
            raise ValueError("pruned_espnet: only one of frontend and encoder may carry a pruning block")
        return gated[0] if gated else None

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        loss, stats, weight = super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
        ssl = self.gated_ssl()
        if ssl is None:
            return loss, stats, weight
        loss_pruning, pruning_stats = ssl.pruning_loss(loss)
        # super() made every value 1-dim for DataParallel; the pruning term is a 0-dim tensor.
        loss = loss + loss_pruning
        stats = dict(stats, loss_task=stats["loss"], **pruning_stats)
        stats["loss"] = loss.detach()
        return force_gatherable((loss, stats, weight), loss.device)
