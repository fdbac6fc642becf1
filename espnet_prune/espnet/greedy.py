"""Greedy (best path) CTC decoding of an ESPnet ASR model, batched, in ESPnet's output layout.

ESPnet's ``asr_inference`` always runs its beam search, even for a CTC-only model with beam 1; the
best path of the CTC posteriors gives the same result for such a model far faster, in batches.
Data loading, token conversion and the output files (``<out>/1best_recog/{text,token,token_int,score}``)
are ESPnet's.
"""

from __future__ import annotations

import argparse
from itertools import groupby
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch
from espnet2.fileio.datadir_writer import DatadirWriter
from espnet2.tasks.asr import ASRTask
from espnet2.text.build_tokenizer import build_tokenizer
from espnet2.text.token_id_converter import TokenIDConverter
from espnet2.train.abs_espnet_model import AbsESPnetModel

from espnet_prune.espnet.loading import check_sound_inputs


@torch.no_grad()
def greedy_ctc_decode(
    model: AbsESPnetModel,
    args: argparse.Namespace,
    output_dir: Path,
    data_path_and_name_and_type: Sequence[Tuple[str, str, str]],
    key_file: Optional[str] = None,
    batch_size: int = 8,
    num_workers: int = 0,
    device: str = "cpu",
) -> None:
    """Decode every utterance of the data with the CTC best path of ``model`` (built from ``args``) on
    ``device``; write ESPnet's 1best_recog files. The audio is checked first (``check_sound_inputs``)."""
    check_sound_inputs(data_path_and_name_and_type, key_file)
    model.to(device)
    model.eval()
    converter = TokenIDConverter(token_list=model.token_list)
    tokenizer = build_tokenizer(token_type=args.token_type, bpemodel=getattr(args, "bpemodel", None))
    skip = {model.blank_id, model.sos, model.eos}
    loader = ASRTask.build_streaming_iterator(
        data_path_and_name_and_type,
        dtype="float32",
        batch_size=batch_size,
        key_file=key_file,
        num_workers=num_workers,
        preprocess_fn=ASRTask.build_preprocess_fn(args, False),
        collate_fn=ASRTask.build_collate_fn(args, False),
        inference=True,
    )
    with DatadirWriter(output_dir) as writer:
        best = writer["1best_recog"]
        for keys, batch in loader:
            encoded, lengths = model.encode(batch["speech"].to(device), batch["speech_lengths"].to(device))
            log_probs = model.ctc.log_softmax(encoded)
            scores, paths = log_probs.max(-1)
            for i, key in enumerate(keys):
                frames = int(lengths[i])
                token_int = [t for t, _ in groupby(paths[i, :frames].tolist()) if t not in skip]
                tokens = converter.ids2tokens(token_int)
                best["token"][key] = " ".join(tokens)
                best["token_int"][key] = " ".join(map(str, token_int))
                best["score"][key] = f"{float(scores[i, :frames].sum()):.4f}"
                best["text"][key] = tokenizer.tokens2text(tokens)
