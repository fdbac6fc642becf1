"""espnet_prune: structured pruning of wav2vec2 / HuBERT while fine-tuning in ESPnet."""

from setuptools import find_packages, setup

# ONNX export and its checks (python -m espnet_prune.bin.export --format onnx); TorchScript needs only torch.
EXPORT = ["onnx>=1.16", "onnxruntime>=1.18"]

setup(
    name="espnet_prune",
    version="0.1.0",
    description="HJ-Pruning of self-supervised speech models (wav2vec2, HuBERT) as an ESPnet plugin",
    packages=find_packages(include=["espnet_prune", "espnet_prune.*"]),
    python_requires=">=3.9",
    install_requires=[
        "espnet>=202402",
        "torch>=2.1",
        "torchaudio>=2.1",
        "sentencepiece>=0.1.99",
        "jiwer>=3.0",
        "pyyaml>=5.1",
        "soundfile>=0.12",
        "matplotlib>=3.5",
    ],
    extras_require={
        # The tests cover the ONNX export too (onnx + onnxruntime add about 110 MB to an install with torch).
        "test": ["pytest>=7", "ruff>=0.15", "transformers>=4.30", "safetensors>=0.3", *EXPORT],
        "export": EXPORT,
        "bench": ["torch-pruning>=1.3"],
    },
)
