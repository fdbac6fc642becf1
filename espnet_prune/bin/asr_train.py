"""ESPnet's ASR training (a thin alias of ``espnet2.bin.asr_train``) with one-line errors.

    python -m espnet_prune.bin.asr_train --config conf/train.yaml --token_list ... --output_dir exp/asr ...

The same as stock ``python -m espnet2.bin.asr_train`` (which knows the plugin once it is installed), except
that a configuration or checkpoint error is reported as one line and exit status 1, not a traceback.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from espnet_prune.checkpoints import CheckpointError
from espnet_prune.espnet import ConfigError, PrunedASRTask


def get_parser():
    """ESPnet's ASR training parser, with the plugin's names among the choices."""
    return PrunedASRTask.get_parser()


def main(cmd: Optional[Sequence[str]] = None) -> None:
    try:
        PrunedASRTask.main(cmd=cmd)
    except (ConfigError, CheckpointError) as exc:
        sys.exit(f"asr_train: error: {exc}")


if __name__ == "__main__":
    main()
