"""Checkpoint importers: fairseq / S3PRL, Hugging Face and torchaudio wav2vec2 / HuBERT, and Microsoft's and
Hugging Face WavLM, into our model.

``load_pretrained(path)`` recognises the format; the per-format functions are exported too. Every
importer returns ``(Wav2Vec2Model in eval mode, Wav2Vec2Config)`` and fails with one ValueError or
FileNotFoundError naming the file and the offending key. Nothing is fetched from the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from espnet_prune.models.config import Wav2Vec2Config
from espnet_prune.models.importers.common import PathLike, load_torch_file
from espnet_prune.models.importers.import_fairseq import (
    import_fairseq_checkpoint,
    is_fairseq_checkpoint,
    is_s3prl_checkpoint,
    load_fairseq_checkpoint,
)
from espnet_prune.models.importers.import_huggingface import load_huggingface_checkpoint
from espnet_prune.models.importers.import_torchaudio import (
    import_torchaudio_state_dict,
    infer_torchaudio_config,
    is_torchaudio_state_dict,
    load_torchaudio_state_dict,
)
from espnet_prune.models.model import Wav2Vec2Model

__all__ = [
    "import_fairseq_checkpoint",
    "import_torchaudio_state_dict",
    "infer_torchaudio_config",
    "load_fairseq_checkpoint",
    "load_huggingface_checkpoint",
    "load_pretrained",
    "load_torchaudio_state_dict",
]


def load_pretrained(
    path: PathLike, config: Optional[Wav2Vec2Config] = None, trust_checkpoint: bool = False
) -> Tuple[Wav2Vec2Model, Wav2Vec2Config]:
    """Load a pretrained wav2vec2 / HuBERT / WavLM checkpoint of any supported format.

    A directory (or its config.json / .safetensors file) is a Hugging Face model; a file is a fairseq checkpoint, an
    S3PRL converted checkpoint, a WavLM checkpoint (Microsoft's layout) or a torchaudio state dict. ``config`` is
    needed, and allowed, only for torchaudio state dicts, which record no geometry (``load_torchaudio_state_dict``
    can infer most of it). Files are read with ``weights_only=True``; ``trust_checkpoint`` allows one that
    pickles other classes.
    """
    path = Path(path)
    if path.is_file() and (path.name == "config.json" or path.suffix == ".safetensors"):
        path = path.parent  # a file of a Hugging Face model directory
    if path.is_dir():
        if config is not None:
            raise ValueError(f"{path}: a Hugging Face model records its own config; do not pass one")
        return load_huggingface_checkpoint(path)
    checkpoint = load_torch_file(path, trust_checkpoint)
    if is_torchaudio_state_dict(checkpoint):
        if config is None:
            raise ValueError(
                f"{path}: a torchaudio state dict records no config; pass config=, or use "
                "load_torchaudio_state_dict(path, num_heads=..., layer_norm_first=...)"
            )
        return import_torchaudio_state_dict(checkpoint, path, config)
    if not (is_fairseq_checkpoint(checkpoint) or is_s3prl_checkpoint(checkpoint)):
        raise ValueError(
            f"{path}: unrecognised checkpoint: not a fairseq or WavLM ('model' with 'cfg'/'args'), S3PRL "
            "('model_cfg', 'model_weight') or torchaudio ('encoder.transformer.*') checkpoint"
        )
    if config is not None:
        raise ValueError(
            f"{path}: a fairseq / S3PRL / WavLM checkpoint records its own config; do not pass one"
        )
    return import_fairseq_checkpoint(checkpoint, path)
