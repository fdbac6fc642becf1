"""ESPnet's ASR decoding for gated and mask-removed models.

    python -m espnet_prune.bin.asr_inference --asr_train_config exp/asr/config.yaml \\
        --asr_model_file exp/asr/latest.pth --data_path_and_name_and_type dump/test/wav.scp,speech,sound \\
        --output_dir exp/asr/decode_test

Same options as ``python -m espnet2.bin.asr_inference``, plus ``--ctc_greedy true``: batched best-path CTC
decoding (``espnet_prune.espnet.greedy``; on the GPU with ``--ngpu 1``), the fast equivalent of beam size 1
for CTC-only models, and
``--trust_checkpoint``. Before decoding, the config and weights are read safely (``weights_only=True``)
and checked against each other (ESPnet itself loads them with ``strict=False``, which silently leaves
layers random), and every audio file to decode must be readable, mono, 16 kHz and not empty. A problem
is reported as one line naming the file (and line of wav.scp) with exit status 1. OUTPUT_DIR is written
in a temporary folder next to it and renamed into place once decoding is complete.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet.utils.cli_utils import get_commandline_args
from espnet2.bin import asr_inference as espnet_inference
from espnet2.utils.types import str2bool

from espnet_prune.cli import add_trust_checkpoint, exit_on_error
from espnet_prune.espnet.greedy import greedy_ctc_decode
from espnet_prune.espnet.loading import check_sound_inputs, load_asr_model
from espnet_prune.io import atomic_dir


def get_parser():
    """ESPnet's ASR inference parser with the ``--ctc_greedy`` and ``--trust_checkpoint`` switches."""
    parser = espnet_inference.get_parser()
    parser.add_argument(
        "--ctc_greedy",
        type=str2bool,
        default=False,
        help="batched best-path CTC decoding instead of ESPnet's beam search (CTC-only models)",
    )
    add_trust_checkpoint(parser)
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    print(get_commandline_args(), file=sys.stderr)
    kwargs = vars(get_parser().parse_args(cmd))
    kwargs.pop("config", None)
    ctc_greedy = kwargs.pop("ctc_greedy")
    trust_checkpoint = kwargs.pop("trust_checkpoint")
    output_dir = Path(kwargs.pop("output_dir"))
    with exit_on_error("asr_inference"):
        if kwargs["asr_train_config"] is not None or kwargs["asr_model_file"] is not None:
            config = kwargs["asr_train_config"] or Path(kwargs["asr_model_file"]).parent / "config.yaml"
            model, args = load_asr_model(config, kwargs["asr_model_file"], trust_checkpoint)
        elif ctc_greedy:
            raise ValueError("--ctc_greedy: give --asr_train_config and --asr_model_file")
        with atomic_dir(output_dir) as staging:
            if ctc_greedy:
                greedy_ctc_decode(
                    model,
                    args,
                    staging,
                    kwargs["data_path_and_name_and_type"],
                    kwargs["key_file"],
                    kwargs["batch_size"],
                    kwargs["num_workers"],
                    "cuda" if kwargs["ngpu"] > 0 else "cpu",
                )
            else:
                check_sound_inputs(kwargs["data_path_and_name_and_type"], kwargs["key_file"])
                espnet_inference.inference(output_dir=str(staging), **kwargs)


if __name__ == "__main__":
    main()
