"""ESPnet's ASR decoding for gated and mask-removed models.

    python -m espnet_prune.bin.asr_inference --asr_train_config exp/asr/config.yaml \\
        --asr_model_file exp/asr/latest.pth --data_path_and_name_and_type dump/test/wav.scp,speech,sound \\
        --output_dir exp/asr/decode_test

Same options as ``python -m espnet2.bin.asr_inference``, plus ``--ctc_greedy true``: batched best-path CTC
decoding (``espnet_prune.espnet.greedy``; on the GPU with ``--ngpu 1``), the fast equivalent of beam size 1
for CTC-only models. Before decoding, the weights are checked against
the model the config describes (ESPnet itself loads them with ``strict=False``, which silently leaves
layers random); a mismatch is reported as one line and exit status 1.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from espnet2.bin import asr_inference as espnet_inference
from espnet2.utils.types import str2bool
from espnet.utils.cli_utils import get_commandline_args

from espnet_prune.espnet import ConfigError, PrunedASRTask


def get_parser():
    """ESPnet's ASR inference parser with the ``--ctc_greedy`` switch."""
    parser = espnet_inference.get_parser()
    parser.add_argument(
        "--ctc_greedy", type=str2bool, default=False,
        help="batched best-path CTC decoding instead of ESPnet's beam search (CTC-only models)",
    )
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    print(get_commandline_args(), file=sys.stderr)
    kwargs = vars(get_parser().parse_args(cmd))
    kwargs.pop("config", None)
    ctc_greedy = kwargs.pop("ctc_greedy")
    if kwargs["asr_train_config"] is not None or kwargs["asr_model_file"] is not None:
        try:
            PrunedASRTask.build_model_from_file(kwargs["asr_train_config"], kwargs["asr_model_file"])
        except ConfigError as exc:
            sys.exit(f"asr_inference: error: {exc}")
    if ctc_greedy:
        from espnet_prune.espnet.greedy import greedy_ctc_inference

        greedy_ctc_inference(
            kwargs["output_dir"], kwargs["data_path_and_name_and_type"], kwargs["asr_train_config"],
            kwargs["asr_model_file"], kwargs["key_file"], kwargs["batch_size"], kwargs["num_workers"],
            "cuda" if kwargs["ngpu"] > 0 else "cpu",
        )
        return
    espnet_inference.inference(**kwargs)


if __name__ == "__main__":
    main()
