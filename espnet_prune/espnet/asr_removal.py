"""Mask removal for a whole ESPnet ASR model: a smaller ungated model and the config that describes it."""

from __future__ import annotations

import argparse
import copy
import dataclasses
from typing import Tuple

import torch
from espnet2.asr.espnet_model import ESPnetASRModel

from espnet_prune.constants import SAMPLE_RATE
from espnet_prune.espnet.ssl import SSLOptions, find_ssl
from espnet_prune.espnet.task import MODEL_NAME, PrunedASRTask
from espnet_prune.pruning.removal import remove_masks


@torch.no_grad()
def remove_asr_masks(
    model: ESPnetASRModel, args: argparse.Namespace
) -> Tuple[ESPnetASRModel, argparse.Namespace]:
    """The ESPnet model with its gated SSL module replaced by the removed one, and its training args.

    The new args describe the removed model explicitly (``model_config`` with the kept sizes, no
    ``pruning``, no checkpoint, no CNN freezing, ``model: espnet``); the weights outside the SSL module
    are copied unchanged. The result equals ``model`` in eval mode.
    """
    name, ssl = find_ssl(model, gated=True)
    small, small_config = remove_masks(ssl.model.eval())
    owner = name.split(".")[0]  # "encoder" or "frontend"
    key = f"{owner}_conf"
    new_args = copy.deepcopy(args)
    options = {f.name for f in dataclasses.fields(SSLOptions)}
    owner_conf = {k: v for k, v in getattr(args, key).items() if k not in options}  # e.g. multilayer_feature
    setattr(new_args, key, {**owner_conf, **SSLOptions(model_config=small_config.to_dict()).to_conf()})
    if getattr(new_args, "model", None) == MODEL_NAME:
        new_args.model = "espnet"
    new_model = PrunedASRTask.build_model(new_args)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(f"{name}.")}
    state.update({f"{name}.model.{k}": v for k, v in small.state_dict().items()})
    new_model.load_state_dict(state)
    return new_model.eval(), new_args


@torch.no_grad()
def max_encode_difference(a: ESPnetASRModel, b: ESPnetASRModel, seconds: float = 1.0, seed: int = 0) -> float:
    """Largest absolute difference of the two models' eval-mode encoder outputs on a random batch,
    relative to the output scale (lengths must agree exactly, else inf)."""
    generator = torch.Generator().manual_seed(seed)
    samples = int(seconds * SAMPLE_RATE)
    speech = torch.randn(2, samples, generator=generator) * 0.1
    lengths = torch.tensor([samples, samples * 2 // 3])
    out_a, len_a = a.eval().encode(speech, lengths)
    out_b, len_b = b.eval().encode(speech, lengths)
    if out_a.shape != out_b.shape or not torch.equal(len_a, len_b):
        return float("inf")
    valid = torch.arange(out_a.shape[1])[None, :] < len_a[:, None]
    return float((out_a - out_b)[valid].abs().max() / out_a[valid].abs().max().clamp(min=1.0))
