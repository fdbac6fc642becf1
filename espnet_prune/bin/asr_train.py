"""ESPnet's ASR training with the espnet_prune plugin registered.

    python -m espnet_prune.bin.asr_train --config conf/train.yaml --token_list ... --output_dir exp/asr ...

Same options as ``python -m espnet2.bin.asr_train`` plus the encoder/frontend ``pruned_wav2vec2`` and the
model ``pruned_espnet``. A configuration error is reported as one line and exit status 1.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from espnet_prune.espnet import ConfigError, PrunedASRTask


def get_parser():
    """ESPnet's ASR training parser, with the plugin's names among the choices."""
    return PrunedASRTask.get_parser()


def main(cmd: Optional[Sequence[str]] = None) -> None:
    try:
        PrunedASRTask.main(cmd=cmd)
    except ConfigError as exc:
        sys.exit(f"asr_train: error: {exc}")


if __name__ == "__main__":
    main()
