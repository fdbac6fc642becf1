"""Command-line entry points: ``python -m espnet_prune.bin.<name> --help``.

ESPnet's ASR task imports ``g2p_en`` (through ``espnet2.text.phoneme_tokenizer``), which on import looks for
two nltk data packages and, not finding them, downloads them: an offline run prints ``[nltk_data] Error
loading averaged_perceptron_tagger_eng ... refusing to connect`` although nothing needs them. Before any
ESPnet import, the entry points put a stand-in for ``g2p_en`` in ``sys.modules`` that imports the real
module (downloads included) when one of its names is first used, i.e. when a g2p_en phoneme tokenizer is
built; its errors show there. (``importlib.util.LazyLoader`` does not do: ``inspect.getmodule``, which
torch calls while importing, touches every module's ``__file__``.)
"""

import importlib
import importlib.util
import sys
import types


class _DeferredModule(types.ModuleType):
    """A module whose first look-up of a name it lacks imports the real module and answers from it."""

    def __getattr__(self, name: str):
        if self.__dict__.get("_real") is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            self._real = importlib.import_module(self.__name__)
        return getattr(self._real, name)


def _defer_g2p_en_import() -> None:
    """Put a deferred g2p_en into sys.modules (nothing when it is absent or already imported)."""
    if "g2p_en" in sys.modules:
        return
    spec = importlib.util.find_spec("g2p_en")
    if spec is None:
        return
    module = _DeferredModule("g2p_en")
    module.__file__, module.__spec__, module._real = spec.origin, spec, None
    sys.modules["g2p_en"] = module


_defer_g2p_en_import()
