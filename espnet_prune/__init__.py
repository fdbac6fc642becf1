"""espnet_prune: structured pruning (HJ-Pruning) of wav2vec2 / HuBERT inside ESPnet."""

__version__ = "0.1.0"
