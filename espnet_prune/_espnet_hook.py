"""Makes stock ESPnet know the plugin: run at interpreter start by ``espnet_prune-plugin.pth``.

ESPnet has no plugin mechanism; its ASR tools look names up in ``espnet2.tasks.asr``'s class choices.
This module installs an import hook that, right after ``espnet2.tasks.asr`` has been imported by anyone
(``python -m espnet2.bin.asr_train``, ``Speech2Text``, ``espnet2.bin.pack``, DDP workers), imports
``espnet_prune.espnet``, which registers ``pruned_wav2vec2`` and the pruning-aware task behaviour.
It imports neither torch nor ESPnet itself, so unrelated Python start-up costs nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Optional, Sequence

TARGET = "espnet2.tasks.asr"
PLUGIN = "espnet_prune.espnet"


class _RegisterAfterLoad(importlib.abc.Loader):
    """Wraps the loader of ``espnet2.tasks.asr``: executes it, then imports the plugin."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, name: str):  # get_source, get_code, ... (tracebacks show ESPnet's source)
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        import importlib

        importlib.import_module(PLUGIN)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``espnet2.tasks.asr`` with the other finders and wraps its loader."""

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisterAfterLoad(spec.loader)
                return spec
        return None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once per interpreter)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
