"""What our entry points read, read safely: an ESPnet ASR model from its config.yaml and weights, and the
audio to decode.

The config must be a readable YAML mapping of an ASR training run; the weights are read by
``espnet_prune.checkpoints.load_state_dict`` (``weights_only=True`` unless the user trusts the file) and
must fit the config's model exactly; every audio file must pass ``espnet_prune.data.audio.check_audio``.
Every problem is one ValueError naming the file (and line).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import yaml
from espnet2.train.abs_espnet_model import AbsESPnetModel

from espnet_prune.cli import one_line
from espnet_prune.data.audio import check_scp_audio
from espnet_prune.espnet.ssl import ConfigError
from espnet_prune.espnet.task import PrunedASRTask, load_weights

PathLike = Union[str, Path]

# Keys every ESPnet ASR training config.yaml has; a mapping without them is another kind of file.
ASR_CONFIG_KEYS = ("token_list", "encoder", "model_conf")


def _yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML parse error on one line, with where it is."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where} ({getattr(error, 'problem', None) or ' '.join(str(error).split())})"


def read_yaml_mapping(
    path: PathLike, what: str = "an ESPnet training config.yaml (a YAML mapping)"
) -> Dict[str, Any]:
    """The mapping a YAML config file holds; ConfigError naming the file when it is missing, empty, not
    YAML or not a mapping (``what`` says what was expected)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; expected {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_problem(exc)}; expected {what}") from None
    if data is None:
        raise ConfigError(f"{path}: empty file; expected {what}")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {what}, got {type(data).__name__}")
    return data


def read_train_config(path: PathLike) -> Dict[str, Any]:
    """The mapping of an ESPnet ASR training config.yaml (``read_yaml_mapping``); ConfigError naming the
    file when it lacks the keys every such file has."""
    data = read_yaml_mapping(path)
    missing = [key for key in ASR_CONFIG_KEYS if key not in data]
    if missing:
        raise ConfigError(f"{path}: not an ESPnet ASR training config (no {', '.join(missing)})")
    return data


def load_asr_model(
    config_file: PathLike, model_file: Optional[PathLike] = None, trust_checkpoint: bool = False
) -> Tuple[AbsESPnetModel, argparse.Namespace]:
    """The model that ``config_file`` describes (on CPU), with the weights of ``model_file`` when given.

    ``trust_checkpoint`` lets a weights file that pickles more than tensors be unpickled (it can run code).
    """
    read_train_config(config_file)
    try:
        model, args = PrunedASRTask.build_model_from_file(config_file, None)
    except ValueError as exc:  # our config errors name the key; this names the file too
        raise ConfigError(f"{config_file}: {one_line(exc)}") from None
    except (
        TypeError,
        AttributeError,
        KeyError,
        RuntimeError,
    ) as exc:  # ESPnet's, for values of the wrong kind
        raise ConfigError(
            f"{config_file}: ESPnet cannot build the model it describes "
            f"({type(exc).__name__}: {one_line(exc)})"
        ) from None
    if model_file is not None:
        load_weights(model, model_file, config_file, trust_checkpoint)
    return model, args


def check_sound_inputs(
    data_path_and_name_and_type: Sequence[Tuple[str, str, str]], key_file: Optional[str]
) -> None:
    """Check the audio of every ``sound`` input (a wav.scp) that decoding will read, only the keys of
    ``key_file`` when given; DataPrepError naming the wav.scp line and the file."""
    keys = None
    if key_file is not None:
        keys = {
            line.split(maxsplit=1)[0]
            for line in Path(key_file).read_text(encoding="utf-8").splitlines()
            if line.strip()
        }
    for path, _, kind in data_path_and_name_and_type:
        if kind == "sound":
            check_scp_audio(Path(path), keys)
