"""Recipe scoring stage: WER (and intent accuracy, or SLURP's SLU metrics) per test set, written like
ESPnet's RESULTS.md.

    python -m espnet_prune.bin.score --dump_dir dump/raw --decode_dir exp/asr/pruned/decode_ctc \
        --sets test_clean test_other --asr_train_config exp/asr/pruned/config.yaml \
        --asr_model_file exp/asr/pruned/model.pth [--intent_first | --entity] --out exp/asr/pruned/RESULTS.md

Hypotheses are read from <decode_dir>/<set>/1best_recog/text (ESPnet's inference output), references
from <dump_dir>/<set>/text. The table also gives the model's parameters and MACs at --seconds of audio.
With --entity (SLURP entity mode) the table adds scenario and action accuracy and SLU-F1 with the span
F1s, and a second table gives their precision, recall and counts (espnet_prune/eval/slu_f1.py).
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Optional, Sequence, Tuple

from espnet_prune.cli import add_trust_checkpoint, exit_on_error
from espnet_prune.eval.scoring import SetScore, score
from espnet_prune.models import Wav2Vec2Config
from espnet_prune.pruning.cost import exact_cost


def model_geometry(
    asr_train_config: Path, asr_model_file: Optional[Path], trust_checkpoint: bool = False
) -> Tuple[Wav2Vec2Config, int]:
    """Geometry of the SSL model (after mask removal for a gated run) and the ESPnet model's params."""
    from espnet_prune.espnet.loading import load_asr_model
    from espnet_prune.espnet.ssl import find_ssl
    from espnet_prune.pruning.removal import pruned_config

    model, _ = load_asr_model(asr_train_config, asr_model_file, trust_checkpoint)
    name, ssl = find_ssl(model, str(asr_train_config))
    ssl.eval()
    config = pruned_config(ssl.model) if ssl.controller is not None else ssl.model.config
    head_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(name + "."))
    return config, exact_cost(config).params + head_params


def results_markdown(
    title: str, scores: Sequence[Tuple[str, SetScore]], config: Wav2Vec2Config, total_params: int, seconds: float
) -> str:
    """An ESPnet-style RESULTS.md section."""
    cost = exact_cost(config, seconds)
    lines = [
        f"## {title}",
        f"- date: {datetime.date.today().isoformat()}",
        f"- SSL model: {cost.params / 1e6:.2f} M params, {cost.macs / 1e9:.3f} GMACs per {seconds:g} s "
        f"(CNN {cost.cnn_macs / 1e9:.3f} G); whole ASR model {total_params / 1e6:.2f} M params",
        "",
    ]
    intent = any(s.intent_accuracy is not None for _, s in scores)
    entity = any(s.slu is not None for _, s in scores)
    header = "|dataset|#utts|#words|WER (%)|CER (%)|" + ("intent acc (%)|" if intent else "")
    if entity:
        header += "scenario acc (%)|action acc (%)|SLU-F1 (%)|span F1 (%)|word-distance F1 (%)|char-distance F1 (%)|"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for name, s in scores:
        row = f"|{name}|{s.utterances}|{s.words}|{100 * s.wer:.1f}|{100 * s.cer:.1f}|"
        if intent:
            row += f"{100 * s.intent_accuracy:.1f}|"
        if s.slu is not None:
            row += f"{100 * s.slu.scenario_accuracy:.1f}|{100 * s.slu.action_accuracy:.1f}|"
            row += "".join(f"{100 * counts.f1:.1f}|" for _, counts in s.slu.metrics())
        lines.append(row)
    if entity:
        lines += ["", "|dataset|entity metric|precision (%)|recall (%)|F1 (%)|TP|FP|FN|", "|---|---|---|---|---|---|---|---|"]
        for name, s in scores:
            for metric, c in s.slu.metrics() if s.slu is not None else []:
                lines.append(f"|{name}|{metric}|{100 * c.precision:.1f}|{100 * c.recall:.1f}|{100 * c.f1:.1f}|"
                             f"{c.tp:g}|{c.fp:.3f}|{c.fn:.3f}|")
    return "\n".join(lines) + "\n"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dump_dir", type=Path, required=True, help="folder of the reference data dirs")
    parser.add_argument("--decode_dir", type=Path, required=True, help="folder with one decoding dir per set")
    parser.add_argument("--sets", nargs="+", required=True, help="test sets to score")
    parser.add_argument("--asr_train_config", type=Path, required=True, help="config.yaml of the decoded model")
    parser.add_argument("--asr_model_file", type=Path, default=None, help="its weights")
    parser.add_argument("--intent_first", action="store_true", help="first token is an intent (SLU)")
    parser.add_argument("--entity", action="store_true",
                        help="SLURP entity mode ('<intent> sep [type] fill WORDS ... sep TRANSCRIPT'): intent, "
                             "scenario and action accuracy, SLU-F1, span F1 and its word/char-distance "
                             "variants; WER/CER of the transcript part")
    parser.add_argument("--seconds", type=float, default=10.0, help="reference duration for MACs")
    parser.add_argument("--out", type=Path, required=True, help="RESULTS.md to write")
    add_trust_checkpoint(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    with exit_on_error("score"):
        scores = [
            (name, score(args.dump_dir / name / "text", args.decode_dir / name / "1best_recog" / "text",
                         args.intent_first, args.entity))
            for name in args.sets
        ]
        config, total_params = model_geometry(args.asr_train_config, args.asr_model_file, args.trust_checkpoint)
    text = "# RESULTS\n" + results_markdown(str(args.decode_dir), scores, config, total_params, args.seconds)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(text)


if __name__ == "__main__":
    main()
