"""Recipe stage 5: the token list (characters or sentencepiece units) from the training text.

    python -m espnet_prune.bin.make_tokens --text dump/raw/train_clean_100/text \
        --token_type bpe --nbpe 300 --out_dir data/token_list/bpe

Writes <out_dir>/tokens.txt in ESPnet's layout: <blank>, <unk>, the tokens by descending frequency,
<sos/eos> last; for bpe also <out_dir>/bpe.model (sentencepiece unigram, like ESPnet's asr.sh). Character
tokens write a space as <space>, as ESPnet's CharTokenizer does. With ``--intent_first true`` (SLU) the
first word of every transcript is an intent label and becomes one token, so CTC emits it in one frame
instead of spelling it: for bpe each label is a sentencepiece user-defined symbol (ESPnet's
``--bpe_nlsyms``); for char the labels are also written to <out_dir>/nlsyms.txt, which training must
get as ``--non_linguistic_symbols`` (pruned_asr.sh passes it). The markup of SLURP's entity mode
(``sep``, ``fill``, ``[type]``; :mod:`espnet_prune.data.slurp_entity`) is kept whole the same way.
ESPnet's CharTokenizer tries its symbols in the (per-process) order of a set, so a symbol that is a
prefix of another would be split differently from run to run: such pairs are reported as a warning.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Set

from espnet_prune.cli import exit_on_error
from espnet_prune.data.kaldi import read_table
from espnet_prune.data.slurp_entity import is_markup_token
from espnet_prune.io import atomic_dir


def _transcripts(text_file: Path) -> List[str]:
    lines = [value for _, value, _ in read_table(text_file, values_required=False, c_sorted=False)]
    if not lines:
        raise ValueError(f"{text_file}: no transcripts")
    return lines


def _token_list(tokenised: Iterable[List[str]]) -> List[str]:
    counts = collections.Counter(token for tokens in tokenised for token in tokens)
    ordered = sorted(counts, key=lambda t: (-counts[t], t))
    return (
        ["<blank>", "<unk>"]
        + [t for t in ordered if t not in ("<blank>", "<unk>", "<sos/eos>")]
        + ["<sos/eos>"]
    )


def label_symbols(transcripts: Iterable[str]) -> List[str]:
    """The words that are labels, not speech: each transcript's first word (the intent) and the markup
    of SLURP's entity mode (``sep``, ``fill``, ``[type]``), sorted."""
    symbols: Set[str] = set()
    for transcript in transcripts:
        words = transcript.split()
        symbols.update(words[:1])
        symbols.update(w for w in words[1:] if is_markup_token(w))
    return sorted(symbols)


def _char_tokens(transcript: str, symbols: Set[str]) -> List[str]:
    """ESPnet's CharTokenizer output: characters, a space as <space>, each word in ``symbols`` one token
    (a non-linguistic symbol), so CTC emits a label in one frame instead of spelling it."""
    tokens: List[str] = []
    for i, word in enumerate(transcript.split(" ")):
        if i:
            tokens.append("<space>")
        tokens += [word] if word in symbols else list(word)
    return tokens


def _warn_prefix_symbols(symbols: Sequence[str]) -> None:
    """Warn about symbols that are a prefix of another (``symbols`` sorted: such pairs are neighbours
    or share a run of longer symbols after the shorter one)."""
    for i, short in enumerate(symbols):
        for longer in symbols[i + 1 :]:
            if not longer.startswith(short):
                break
            print(
                f"make_tokens: warning: non-linguistic symbol {short!r} is a prefix of {longer!r}: ESPnet's "
                f"CharTokenizer may split {longer!r} differently in each process",
                file=sys.stderr,
            )


def make_tokens(
    text_file: Path, token_type: str, nbpe: int, out_dir: Path, intent_first: bool = False
) -> Path:
    """Write the token list (and bpe.model); all files appear together or not at all."""
    transcripts = _transcripts(text_file)
    intents = label_symbols(transcripts) if intent_first else []
    with atomic_dir(out_dir) as staging:
        if token_type == "char":
            tokenised = [_char_tokens(t, set(intents)) for t in transcripts]
            if intent_first:  # ESPnet's CharTokenizer keeps these whole (asr_train --non_linguistic_symbols)
                _warn_prefix_symbols(intents)
                (staging / "nlsyms.txt").write_text("\n".join(intents) + "\n", encoding="utf-8")
        else:
            import sentencepiece as spm

            corpus = staging / "train.txt"
            corpus.write_text("\n".join(transcripts) + "\n", encoding="utf-8")
            spm.SentencePieceTrainer.train(
                input=str(corpus),
                model_prefix=str(staging / "bpe"),
                vocab_size=nbpe,
                model_type="unigram",
                character_coverage=1.0,
                input_sentence_size=100000000,
                minloglevel=2,
                user_defined_symbols=intents,
            )
            corpus.unlink()
            processor = spm.SentencePieceProcessor(model_file=str(staging / "bpe.model"))
            tokenised = [processor.encode(t, out_type=str) for t in transcripts]
        (staging / "tokens.txt").write_text("\n".join(_token_list(tokenised)) + "\n", encoding="utf-8")
    return out_dir / "tokens.txt"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--text", type=Path, required=True, help="Kaldi text file of the training set")
    parser.add_argument("--token_type", choices=["char", "bpe"], default="char")
    parser.add_argument("--nbpe", type=int, default=300, help="sentencepiece vocabulary size (bpe only)")
    parser.add_argument("--out_dir", type=Path, required=True)
    parser.add_argument(
        "--intent_first",
        type=lambda v: v.lower() in ("true", "1", "yes"),
        default=False,
        help="keep each transcript's first word (the intent label) and SLURP entity-mode "
        "markup (sep, fill, [type]) as one token each (bpe: user-defined symbols; "
        "char: also written to nlsyms.txt)",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    with exit_on_error("make_tokens", RuntimeError):
        path = make_tokens(args.text, args.token_type, args.nbpe, args.out_dir, args.intent_first)
    print(f"{path}: {len(path.read_text().splitlines())} tokens")


if __name__ == "__main__":
    main()
