"""Data preparation for the recipes: Kaldi-style data dirs from LibriSpeech and SLURP, audio checks,
downloads, and espeak-ng demo corpora in the real corpus layouts.

Modules: ``kaldi`` (write/read/validate data dirs), ``audio`` (sanity checks of audio files),
``librispeech`` and ``slurp`` (corpus readers and downloads), ``slurp_entity`` (the target text of
SLURP's entity mode), ``synth`` (demo corpora).
Nothing here imports ESPnet.
"""
