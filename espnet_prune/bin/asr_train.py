"""ESPnet's ASR training (a thin alias of ``espnet2.bin.asr_train``) with one-line errors.

    python -m espnet_prune.bin.asr_train --config conf/train.yaml --token_list ... --output_dir exp/asr ...

The same as stock ``python -m espnet2.bin.asr_train`` (which knows the plugin once it is installed), except
that a configuration or checkpoint error is reported as one line and exit status 1, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from espnet_prune.checkpoints import CheckpointError
from espnet_prune.espnet import ConfigError, PrunedASRTask
from espnet_prune.espnet.loading import read_yaml_mapping


def get_parser():
    """ESPnet's ASR training parser, with the plugin's names among the choices."""
    return PrunedASRTask.get_parser()


def check_config_option(cmd: Sequence[str]) -> None:
    """ConfigError naming the --config file when it is not a YAML mapping (ESPnet's own reading of it
    gives a traceback for invalid YAML and does not name the file for other content)."""
    option = argparse.ArgumentParser(add_help=False)
    option.add_argument("--config")
    config_file = option.parse_known_args(cmd)[0].config
    if config_file is not None:
        read_yaml_mapping(config_file, "a YAML mapping of asr_train options")


def main(cmd: Optional[Sequence[str]] = None) -> None:
    try:
        check_config_option(sys.argv[1:] if cmd is None else cmd)
        PrunedASRTask.main(cmd=cmd)
    except (ConfigError, CheckpointError) as exc:
        sys.exit(f"asr_train: error: {exc}")


if __name__ == "__main__":
    main()
