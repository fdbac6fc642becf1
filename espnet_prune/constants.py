"""Constants shared by every layer (no imports, so the data preparation can use them without torch)."""

# Hz: the rate every supported SSL model was pre-trained on, of the data dirs, the demo corpora and the
# waveforms the encoder takes.
SAMPLE_RATE = 16000
