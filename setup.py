"""espnet_prune: structured pruning of wav2vec2 / HuBERT while fine-tuning in ESPnet."""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

# Stock ESPnet has no plugin mechanism: this .pth file, installed next to the package, runs a tiny import
# hook at interpreter start that registers the plugin once espnet2.tasks.asr is imported
# (espnet_prune/_espnet_hook.py).
HOOK_PTH = "espnet_prune-plugin.pth"
# A no-op where the package is gone or is another checkout without the hook (e.g. PYTHONPATH points there).
HOOK_LINE = (
    "import importlib.util as u; u.find_spec('espnet_prune') and u.find_spec('espnet_prune._espnet_hook') "
    "and __import__('espnet_prune._espnet_hook')\n"
)


class BuildWithHook(build_py):
    """Regular installs: the .pth goes into the wheel's root, i.e. site-packages."""

    def run(self) -> None:
        super().run()
        Path(self.build_lib, HOOK_PTH).write_text(HOOK_LINE)

    def get_outputs(self, include_bytecode: bool = True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib, HOOK_PTH))]


class EditableWithHook(editable_wheel):
    """Editable installs (pip install -e): the .pth goes into the editable wheel's root as well."""

    def _install_namespaces(self, installation_dir, pth_prefix):
        super()._install_namespaces(installation_dir, pth_prefix)
        Path(installation_dir, HOOK_PTH).write_text(HOOK_LINE)


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
    cmdclass={"build_py": BuildWithHook, "editable_wheel": EditableWithHook},
    extras_require={
        # The tests cover the ONNX export too (onnx + onnxruntime add about 110 MB to an install with torch).
        "test": ["pytest>=7", "ruff>=0.15", "transformers>=4.30", "safetensors>=0.3", *EXPORT],
        "export": EXPORT,
        "bench": ["torch-pruning>=1.3"],
    },
)
