"""espeak-ng demo corpora, written in the real corpus layouts so the real preparation reads them unchanged.

* :func:`build_librispeech_corpus`: sentences from a small English grammar (about 240 words, so a tiny
  CTC model can learn it), spoken by espeak-ng voices with their own speed and pitch, in
  ``<root>/LibriSpeech/{train-clean-100,dev-clean,test-clean}/<spk>/<chapter>/``; the three sets are
  disjoint by sentence (the voices are shared: a closed-speaker demo).
* :func:`build_slurp_corpus`: voice commands for 16 intents from templates with slots, in
  ``<root>/dataset/slurp/{train,devel,test}.jsonl`` + ``metadata.json`` and ``<root>/audio/slurp_real/``.
  Train uses its own phrasings; devel and test use held-out phrasings (disjoint sentences). Each filled
  slot is an entity, annotated as SLURP does (``sentence_annotation``, ``tokens``, ``entities``), so the
  corpus also serves the recipe's entity mode.
  Alternatively the real SLURP sentences of a folder of jsonl files are spoken under their real
  recording names (:func:`build_slurp_from_annotations`).

Synthesis: ``espeak-ng -v VOICE -s SPEED -p PITCH --stdout`` with the text on stdin (22050 Hz), resampled to 16 kHz mono
with a polyphase filter and written as 16-bit FLAC; a process pool runs several espeak-ng at once.
A corpus is built under a temporary name and renamed at the end, so a failed run leaves nothing.

Modules: ``espeak`` (the engine and the voices), ``english`` (the sentence grammar), ``slurp_commands``
(intents, templates, slots and their SLURP annotation), ``corpora`` (the two corpus writers).
"""

from espnet_prune.data.synth.corpora import (
    LIBRISPEECH_SUBSETS,
    build_librispeech_corpus,
    build_slurp_corpus,
    build_slurp_from_annotations,
)
from espnet_prune.data.synth.english import generate_sentences
from espnet_prune.data.synth.espeak import (
    VOICES,
    SynthJob,
    SynthStats,
    Voice,
    synthesize,
    synthesize_many,
    trim_trailing_silence,
)
from espnet_prune.data.synth.slurp_commands import (
    INTENT_TEMPLATES,
    SLOT_TYPES,
    Command,
    expand_annotated_template,
    expand_template,
    generate_commands,
)

__all__ = [
    "INTENT_TEMPLATES",
    "LIBRISPEECH_SUBSETS",
    "SLOT_TYPES",
    "VOICES",
    "Command",
    "SynthJob",
    "SynthStats",
    "Voice",
    "build_librispeech_corpus",
    "build_slurp_corpus",
    "build_slurp_from_annotations",
    "expand_annotated_template",
    "expand_template",
    "generate_commands",
    "generate_sentences",
    "synthesize",
    "synthesize_many",
    "trim_trailing_silence",
]
