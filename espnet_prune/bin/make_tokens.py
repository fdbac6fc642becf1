"""Recipe stage 5: the token list (characters or sentencepiece units) from the training text.

    python -m espnet_prune.bin.make_tokens --text dump/raw/train_clean_100/text \
        --token_type bpe --nbpe 300 --out_dir data/token_list/bpe_unigram300

Writes <out_dir>/tokens.txt in ESPnet's layout: <blank>, <unk>, the tokens by descending frequency,
<sos/eos> last; for bpe also <out_dir>/bpe.model (sentencepiece unigram, like ESPnet's asr.sh). Character
tokens write a space as <space>, as ESPnet's CharTokenizer does. With ``--intent_first true`` (SLU) the
first word of every transcript is an intent label and becomes one token, so CTC emits it in one frame
instead of spelling it: for bpe each label is a sentencepiece user-defined symbol (ESPnet's
``--bpe_nlsyms``); for char the labels are also written to <out_dir>/nlsyms.txt, which training must
get as ``--non_linguistic_symbols`` (pruned_asr.sh passes it).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional, Sequence


def _transcripts(text_file: Path) -> List[str]:
    lines = []
    for lineno, line in enumerate(text_file.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split(maxsplit=1)
        if not parts:
            raise ValueError(f"{text_file}:{lineno}: empty line")
        lines.append(parts[1] if len(parts) > 1 else "")
    if not lines:
        raise ValueError(f"{text_file}: no transcripts")
    return lines


def _token_list(tokenised: Iterable[List[str]]) -> List[str]:
    counts = collections.Counter(token for tokens in tokenised for token in tokens)
    ordered = sorted(counts, key=lambda t: (-counts[t], t))
    return ["<blank>", "<unk>"] + [t for t in ordered if t not in ("<blank>", "<unk>", "<sos/eos>")] + ["<sos/eos>"]


def _char_tokens(transcript: str, intent_first: bool) -> List[str]:
    """ESPnet's CharTokenizer output: characters, a space as <space>; with ``intent_first`` the leading
    intent label is one token (a non-linguistic symbol), so CTC emits it in one frame, not spelt out."""
    intent, rest = "", transcript
    if intent_first and transcript.strip():
        intent, _, rest = transcript.partition(" ")
        rest = " " + rest if rest else ""
    return ([intent] if intent else []) + ["<space>" if c == " " else c for c in rest]


def make_tokens(text_file: Path, token_type: str, nbpe: int, out_dir: Path, intent_first: bool = False) -> Path:
    """Write the token list (and bpe.model); all files appear together or not at all."""
    transcripts = _transcripts(text_file)
    intents = sorted({t.split(maxsplit=1)[0] for t in transcripts if t.strip()}) if intent_first else []
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        if token_type == "char":
            tokenised = [_char_tokens(t, intent_first) for t in transcripts]
            if intent_first:  # ESPnet's CharTokenizer keeps these whole (asr_train --non_linguistic_symbols)
                (staging / "nlsyms.txt").write_text("\n".join(intents) + "\n", encoding="utf-8")
        else:
            import sentencepiece as spm

            corpus = staging / "train.txt"
            corpus.write_text("\n".join(transcripts) + "\n", encoding="utf-8")
            spm.SentencePieceTrainer.train(
                input=str(corpus), model_prefix=str(staging / "bpe"), vocab_size=nbpe, model_type="unigram",
                character_coverage=1.0, input_sentence_size=100000000, minloglevel=2,
                user_defined_symbols=intents,
            )
            corpus.unlink()
            processor = spm.SentencePieceProcessor(model_file=str(staging / "bpe.model"))
            tokenised = [processor.encode(t, out_type=str) for t in transcripts]
        (staging / "tokens.txt").write_text("\n".join(_token_list(tokenised)) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / "tokens.txt"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", type=Path, required=True, help="Kaldi text file of the training set")
    parser.add_argument("--token_type", choices=["char", "bpe"], default="char")
    parser.add_argument("--nbpe", type=int, default=300, help="sentencepiece vocabulary size (bpe only)")
    parser.add_argument("--out_dir", type=Path, required=True)
    parser.add_argument("--intent_first", type=lambda v: v.lower() in ("true", "1", "yes"), default=False,
                        help="bpe: keep each transcript's first word (the intent label) as one token")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    try:
        path = make_tokens(args.text, args.token_type, args.nbpe, args.out_dir, args.intent_first)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        sys.exit(f"make_tokens: error: {exc}")
    print(f"{path}: {len(path.read_text().splitlines())} tokens")


if __name__ == "__main__":
    main()
