"""Machinery shared by the checkpoint importers: key renaming, strict loading and safe unpickling.

Every importer reduces a checkpoint to (our config, its state dict, a ``KeyMap``); ``build_model`` then
renames, checks and loads, so that every format fails the same way: one ValueError that names the
file and the parameter.
"""

from __future__ import annotations

import argparse
import collections
import functools
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from torch import Tensor

from espnet_prune.checkpoints import load_checkpoint
from espnet_prune.models.config import Wav2Vec2Config
from espnet_prune.models.model import Wav2Vec2Model

PathLike = Union[str, Path]

# What the placeholders of a KeyRule template stand for.
_PLACEHOLDERS = {"i": r"\d+", "wb": "weight|bias", "proj": "q|k|v|out", "rest": ".+"}


@functools.cache
def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if n % 2 == 0 else f"(?P<{part}>{_PLACEHOLDERS[part]})"
        for n, part in enumerate(parts)
    )
    return re.compile(regex)


@dataclass(frozen=True)
class KeyRule:
    """One family of parameter names: ``source`` in the checkpoint, ``target`` in our model.

    Both are templates in which ``{i}`` stands for a layer index, ``{wb}`` for weight/bias,
    ``{proj}`` for an attention projection (q, k, v, out) and ``{rest}`` for the rest of a name (a layout
    that differs from ours only in a prefix); the rule works in both directions, so that an error about a
    missing parameter can name it the way the checkpoint would.
    """

    source: str
    target: str

    def to_target(self, key: str) -> Optional[str]:
        match = _template_regex(self.source).fullmatch(key)
        return self.target.format(**match.groupdict()) if match else None

    def to_source(self, key: str) -> Optional[str]:
        match = _template_regex(self.target).fullmatch(key)
        return self.source.format(**match.groupdict()) if match else None


# Our positional convolution: a Conv1d weight-normalised by torch's parametrization.
POS_CONV = "encoder.pos_conv_embed.conv"


def pos_conv_rules(source: str) -> Tuple[KeyRule, ...]:
    """The positional convolution's five parameters at ``source`` in a checkpoint: its bias and the weight
    norm's g and v, named by the old ``weight_g`` / ``weight_v`` hook or by torch's parametrization."""
    g, v = POS_CONV + ".parametrizations.weight.original0", POS_CONV + ".parametrizations.weight.original1"
    return (
        KeyRule(source + ".weight_g", g),
        KeyRule(source + ".weight_v", v),
        KeyRule(source + ".parametrizations.weight.original0", g),
        KeyRule(source + ".parametrizations.weight.original1", v),
        KeyRule(source + ".bias", POS_CONV + ".bias"),
    )


# For a layout whose names are ours (Hugging Face's): every name not matched by an earlier rule is kept.
SAME_NAME = KeyRule("{rest}", "{rest}")


class KeyMap:
    """Renames a checkpoint's parameters to ours.

    ``prefixes`` are stripped first (e.g. ``wav2vec2.`` of a Hugging Face ``*ForCTC`` model); keys
    matching one of the ``dropped`` regexes (heads, pretraining-only parameters) are skipped; every
    other key must match a rule, and the first rule that matches renames it.
    """

    def __init__(
        self, rules: Sequence[KeyRule], dropped: Sequence[str] = (), prefixes: Sequence[str] = ()
    ) -> None:
        self.rules = tuple(rules)
        self.prefixes = tuple(prefixes)
        self.dropped = re.compile("|".join(f"(?:{pattern})" for pattern in dropped)) if dropped else None

    def target_name(self, key: str) -> Optional[str]:
        """Our name for checkpoint ``key``, or None when the key is dropped."""
        for prefix in self.prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        if self.dropped is not None and self.dropped.match(key):
            return None
        for rule in self.rules:
            target = rule.to_target(key)
            if target is not None:
                return target
        raise KeyError(key)

    def source_names(self, target: str) -> str:
        """The checkpoint name(s) that would provide our parameter ``target``, quoted, for messages."""
        names = dict.fromkeys(rule.to_source(target) for rule in self.rules)  # unique, in rule order
        return " or ".join(repr(name) for name in names if name is not None) or repr(target)


def build_model(
    config: Wav2Vec2Config, state_dict: Mapping[str, Tensor], key_map: KeyMap, source: PathLike
) -> Tuple[Wav2Vec2Model, Wav2Vec2Config]:
    """Build our model from ``config`` and load the checkpoint's ``state_dict`` into it, strictly.

    Raises ValueError naming ``source`` and the parameter for an unknown, duplicated, missing,
    superfluous or wrongly shaped parameter. The model is returned in eval mode.
    """
    renamed: Dict[str, Tensor] = {}
    origin: Dict[str, str] = {}
    for key, value in state_dict.items():
        try:
            target = key_map.target_name(key)
        except KeyError:
            raise ValueError(
                f"{source}: unknown parameter {key!r}; this checkpoint is not a supported model"
            ) from None
        if target is None:
            continue
        if target in renamed:
            raise ValueError(
                f"{source}: parameters {origin[target]!r} and {key!r} are the same weight; keep one"
            )
        renamed[target], origin[target] = value, key
    model = Wav2Vec2Model(config)
    expected = model.state_dict()
    missing = [key for key in expected if key not in renamed]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(
            f"{source}: missing parameter {key_map.source_names(missing[0])}{more}, needed for {missing[0]!r} "
            "of the model its config describes"
        )
    for key, value in renamed.items():
        if key not in expected:
            raise ValueError(
                f"{source}: parameter {origin[key]!r} has no place in the model its config describes"
            )
        if value.shape != expected[key].shape:
            raise ValueError(
                f"{source}: parameter {origin[key]!r} has shape {tuple(value.shape)}, but its config needs "
                f"{tuple(expected[key].shape)}"
            )
    model.load_state_dict(renamed)
    return model.eval(), config


def require_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    return path


def float_field(value: Any, name: str, source: PathLike) -> float:
    """A dropout probability read from a foreign config; an absent one (None) is 0."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{source}: {name} must be a number, got {value!r}")
    return float(value)


class _UnusedPickledObject:
    """Stands in for a class a checkpoint pickles but the importer never reads (e.g. fairseq's
    ``Dictionary`` in ``task_state``), so that the file loads with ``weights_only=True``
    without fairseq installed. It only receives the pickled attributes."""


# Pickled in fairseq checkpoints next to the weights and unused by the importers.
_PLACEHOLDER_CLASSES = ("fairseq.data.dictionary.Dictionary",)


def _checkpoint_safe_globals() -> List[Any]:
    """Plain-data classes fairseq and S3PRL checkpoints pickle besides tensors: ``args``
    (argparse.Namespace), ``cfg`` (omegaconf containers, whose metadata refers to typing.Any and
    builtin types) and bookkeeping in defaultdicts."""
    allowed: List[Any] = [argparse.Namespace, collections.defaultdict, typing.Any, dict, list, tuple, set]
    allowed += [int, float, str, bool, bytes]
    allowed += [(_UnusedPickledObject, name) for name in _PLACEHOLDER_CLASSES]
    try:
        import omegaconf
        import omegaconf.base
        import omegaconf.nodes
    except ImportError:  # without omegaconf a checkpoint that pickles it needs the fallback below
        return allowed
    allowed += [
        omegaconf.DictConfig,
        omegaconf.ListConfig,
        omegaconf.base.ContainerMetadata,
        omegaconf.base.Metadata,
    ]
    node_names = ("AnyNode", "BooleanNode", "BytesNode", "FloatNode", "IntegerNode", "PathNode", "StringNode")
    allowed += [getattr(omegaconf.nodes, name) for name in node_names if hasattr(omegaconf.nodes, name)]
    return allowed


def load_torch_file(path: PathLike, trust_checkpoint: bool = False) -> Any:
    """A checkpoint file read safely (``espnet_prune.checkpoints.load_checkpoint``), allow-listing the plain
    objects of fairseq and S3PRL checkpoints; other pickled classes are refused unless ``trust_checkpoint``."""
    require_file(path)
    return load_checkpoint(path, _checkpoint_safe_globals(), trust=trust_checkpoint)
