"""Reading PyTorch files safely: no code from a file runs unless its user says they trust it.

``torch.load(weights_only=False)`` unpickles arbitrary classes, and unpickling can call any function
(``posix.system`` included), so a crafted checkpoint would run code the moment it is loaded. Every file
this package reads goes through ``load_checkpoint``: ``weights_only=True`` with a short allow-list of
plain-data classes the caller names (argparse / omegaconf configs of fairseq checkpoints, ESPnet's
training statistics), and one ``CheckpointError`` naming the file and what is wrong with it otherwise
(missing, empty, truncated, not a PyTorch file, or pickling classes outside the allow-list). Only
``trust=True``, which users set by name (``trust_checkpoint``), unpickles the rest.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, Sequence, Union

import torch

PathLike = Union[str, Path]

# How users opt in, for the messages.
TRUST_OPTION = (
    "trust_checkpoint (encoder_conf / frontend_conf `trust_checkpoint: true`, or --trust_checkpoint)"
)


class CheckpointError(ValueError):
    """A file that is not a readable, safe PyTorch checkpoint; the message names the file."""


def _starts_like_torch(path: Path) -> bool:
    """Whether the file begins like a PyTorch file: a zip archive (torch >= 1.6) or a pickle (legacy)."""
    with path.open("rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _unsafe_globals(path: Path, error: Exception) -> str:
    """The classes a file pickles beyond the allow-list, as torch reports them."""
    if zipfile.is_zipfile(path):
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except (RuntimeError, ValueError, pickle.UnpicklingError):
            names = []
        if names:
            return ", ".join(sorted(names))
    found = re.findall(r"GLOBAL ([\w.]+)", str(error))
    return ", ".join(sorted(set(found))) or "classes torch cannot name"


def load_checkpoint(path: PathLike, safe_globals: Sequence[Any] = (), trust: bool = False) -> Any:
    """``torch.load(path)`` on CPU with ``weights_only=True``, allowing ``safe_globals`` besides tensors.

    Raises CheckpointError naming the file when it is missing, empty, unreadable, or pickles other
    classes (then naming them and the option to trust it); with ``trust`` such a file is unpickled
    with ``weights_only=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a PyTorch checkpoint")
    with torch.serialization.safe_globals(list(safe_globals)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            unsafe = _unsafe_globals(path, exc)
            if "Unsupported global" not in str(exc) and "classes torch cannot name" in unsafe:
                raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (damaged pickle)") from None
            if not trust:
                raise CheckpointError(
                    f"{path}: the file pickles {unsafe}, which loading could run as code; refused. Only if you "
                    f"trust the file, set {TRUST_OPTION}"
                ) from None
        except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, AttributeError) as exc:
            kind = "truncated or damaged" if _starts_like_torch(path) else "not a PyTorch file"
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint ({kind}: {type(exc).__name__})"
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # any unpickling failure of a trusted file is still one message
        raise CheckpointError(
            f"{path}: cannot unpickle the trusted checkpoint ({type(exc).__name__}: {exc})"
        ) from None


def load_state_dict(
    path: PathLike, safe_globals: Sequence[Any] = (), trust: bool = False
) -> Dict[str, torch.Tensor]:
    """A state dict file (name -> tensor), checked as ``load_checkpoint`` does; ESPnet's DeepSpeed layout
    (``{"module": state}``) is unwrapped."""
    state = load_checkpoint(path, safe_globals, trust)
    if isinstance(state, dict) and isinstance(state.get("module"), dict):
        state = state["module"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path}: not a model state dict (parameter name -> tensor), got {type(state).__name__}"
        )
    return state


def check_keys(
    expected: Dict[str, torch.Tensor], given: Dict[str, torch.Tensor], source: str, what: str = "the model"
) -> None:
    """Raise CheckpointError naming ``source`` and the keys when ``given`` does not fit ``expected`` exactly."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(k for k in set(expected) & set(given) if expected[k].shape != given[k].shape)
    if not (missing or unexpected or shapes):
        return

    def show(keys: Iterable[str]) -> str:
        keys = list(keys)
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    problems = []
    if missing:
        problems.append(f"{len(missing)} missing from the weights: {show(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} not in {what}: {show(unexpected)}")
    if shapes:
        problems.append(
            f"{len(shapes)} with other shapes: "
            + show(f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}" for k in shapes)
        )
    raise CheckpointError(f"{source} does not match {what}: " + "; ".join(problems))
