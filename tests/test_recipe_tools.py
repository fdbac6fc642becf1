"""The recipe's python stages: formatting, token lists and scoring."""

import numpy as np
import pytest
import soundfile as sf

from espnet_prune.bin import format_data, make_tokens
from espnet_prune.data.errors import DataPrepError
from espnet_prune.data.kaldi import Utterance, write_data_dir
from espnet_prune.eval.scoring import read_text_table, score


def _write(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def test_wer_cer_and_intent_accuracy_match_hand_counts(tmp_path):
    ref = _write(tmp_path / "ref", ["u1 alarm_set WAKE ME UP AT SEVEN", "u2 weather_query IS IT RAINING", "u3 music_play PLAY JAZZ"])
    hyp = _write(tmp_path / "hyp", ["u3 music_play PLAY JAZZ", "u1 alarm_set WAKE ME UP AT ELEVEN", "u2 alarm_query IS IT"])
    result = score(ref, hyp, intent_first=True)
    assert result.utterances == 3 and result.words == 10
    assert result.intent_accuracy == pytest.approx(2 / 3)
    # transcripts: 1 substitution (SEVEN/ELEVEN) + 1 deletion (RAINING) over 10 words
    assert result.wer == pytest.approx(2 / 10)
    plain = score(ref, hyp)
    # with the intent as a word: u2's intent is also substituted, over 13 words
    assert plain.words == 13 and plain.wer == pytest.approx(3 / 13)


def test_missing_hypothesis_and_duplicate_ids_name_the_file(tmp_path):
    ref = _write(tmp_path / "ref", ["u1 A B", "u2 C"])
    with pytest.raises(ValueError, match=r"hyp: no hypothesis for 1 reference utterance\(s\), e.g. 'u2'"):
        score(ref, _write(tmp_path / "hyp", ["u1 A B"]))
    with pytest.raises(ValueError, match=r"dup:2: duplicate utterance id 'u1'"):
        read_text_table(_write(tmp_path / "dup", ["u1 A", "u1 B"]))
    assert read_text_table(_write(tmp_path / "empty_hyp", ["u1", "u2 C"])) == {"u1": "", "u2": "C"}


def test_char_and_bpe_token_lists_follow_espnet_layout(tmp_path):
    text = _write(tmp_path / "text", ["a HELLO WORLD", "b HELLO THERE", "c A WORLD OF WORDS"])
    chars = make_tokens.make_tokens(text, "char", 0, tmp_path / "char").read_text().split()
    assert chars[:2] == ["<blank>", "<unk>"] and chars[-1] == "<sos/eos>"
    # by descending count (ties by name): L 6, O 6, <space> 5, E 4, R 4
    assert chars[2:7] == ["L", "O", "<space>", "E", "R"]
    assert set(chars[2:-1]) == set("HELOWRDTAFS") | {"<space>"}
    bpe_dir = tmp_path / "bpe"
    tokens = make_tokens.make_tokens(text, "bpe", 15, bpe_dir).read_text().split()
    assert (bpe_dir / "bpe.model").is_file() and tokens[0] == "<blank>" and tokens[-1] == "<sos/eos>"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_bpe_keeps_intent_labels_whole_with_intent_first(tmp_path):
    import sentencepiece as spm

    words = "WAKE ME UP AT SEVEN ANY ALARMS FOR TOMORROW IS IT RAINING IN LONDON TODAY PLEASE SET AN ALARM".split()
    intents = ["alarm_set", "alarm_query", "weather_query"]
    text = _write(tmp_path / "text", [
        f"u{i:02d} {intents[i % 3]} " + " ".join(words[(i * 7 + k) % len(words)] for k in range(5)) for i in range(30)
    ])
    pieces = {}
    for intent_first in (False, True):
        out_dir = tmp_path / f"bpe_{intent_first}"
        tokens = make_tokens.make_tokens(text, "bpe", 45, out_dir, intent_first=intent_first).read_text().split()
        model = spm.SentencePieceProcessor(model_file=str(out_dir / "bpe.model"))
        pieces[intent_first] = model.encode("alarm_query ANY", out_type=str)
        assert model.decode(model.encode("alarm_query ANY")) == "alarm_query ANY"
        assert (set(intents) <= set(tokens)) == intent_first
    assert "alarm_query" not in pieces[False]  # spelled in pieces without the option
    assert pieces[True][:2] == ["▁", "alarm_query"]


def test_char_intents_are_whole_tokens_that_espnets_char_tokenizer_reproduces(tmp_path):
    from espnet2.text.char_tokenizer import CharTokenizer

    text = _write(tmp_path / "text", ["u1 alarm_set WAKE ME UP", "u2 weather_query IS IT RAINING", "u3 alarm_query"])
    tokens = make_tokens.make_tokens(text, "char", 0, tmp_path / "char", intent_first=True).read_text().split()
    nlsyms = tmp_path / "char" / "nlsyms.txt"
    assert nlsyms.read_text().split() == ["alarm_query", "alarm_set", "weather_query"]
    assert {"alarm_set", "alarm_query", "weather_query"} <= set(tokens) and "_" not in tokens and "q" not in tokens
    tokenizer = CharTokenizer(non_linguistic_symbols=nlsyms)
    for line in text.read_text().splitlines():
        pieces = tokenizer.text2tokens(line.split(maxsplit=1)[1])
        assert pieces[0] == line.split()[1] and set(pieces) <= set(tokens), pieces
        assert tokenizer.tokens2text(pieces) == line.split(maxsplit=1)[1]


def test_format_drops_out_of_range_audio_and_writes_all_sets_or_none(tmp_path):
    utts = []
    for i, seconds in enumerate([0.2, 1.0, 3.0]):
        path = tmp_path / f"spk-{i}.wav"
        sf.write(path, np.zeros(int(seconds * 16000), dtype=np.float32), 16000)
        utts.append(Utterance(f"spk-{i}", "spk", str(path), f"TEXT {i}"))
    write_data_dir(tmp_path / "data" / "train", utts)
    counts = format_data.format_sets(tmp_path / "data", tmp_path / "dump", ["train"], 0.5, 2.0)
    assert counts == {"train": (1, 0)}
    assert (tmp_path / "dump" / "train" / "utt2num_samples").read_text() == "spk-1 16000\n"
    with pytest.raises(DataPrepError, match="no utterance between 5.0 and 9.0 s"):
        format_data.format_sets(tmp_path / "data", tmp_path / "dump2", ["train"], 5.0, 9.0)
    assert not (tmp_path / "dump2" / "train").exists()
    with pytest.raises(DataPrepError, match="missing"):
        format_data.format_sets(tmp_path / "data", tmp_path / "dump3", ["train", "absent"], 0.5, 2.0)
    assert not (tmp_path / "dump3").exists() or not any((tmp_path / "dump3").iterdir())


def test_entity_mode_markup_is_whole_tokens_for_char_and_bpe(tmp_path, capsys):
    """SLURP entity mode: the intent, sep, fill and each [type] are single tokens that ESPnet's tokenizers
    reproduce; bracketed types are prefix-free, and a symbol that is a prefix of another is warned about."""
    import sentencepiece as spm
    from espnet2.text.char_tokenizer import CharTokenizer

    text = _write(tmp_path / "text", [
        "u1 alarm_set sep [time] fill SEVEN AM sep [timeofday] fill TONIGHT sep WAKE ME TONIGHT AT SEVEN AM",
        "u2 datetime_query sep [date] fill TODAY sep WHAT IS THE DATE TODAY",
        "u3 alarm_query sep ANY ALARMS",
    ])
    tokens = make_tokens.make_tokens(text, "char", 0, tmp_path / "char", intent_first=True).read_text().split()
    symbols = ["[date]", "[time]", "[timeofday]", "alarm_query", "alarm_set", "datetime_query", "fill", "sep"]
    assert (tmp_path / "char" / "nlsyms.txt").read_text().split() == symbols
    assert set(symbols) <= set(tokens) and not {"[", "]", "_", "s", "f"} & set(tokens)
    assert "warning" not in capsys.readouterr().err  # no symbol is a prefix of another
    tokenizer = CharTokenizer(non_linguistic_symbols=tmp_path / "char" / "nlsyms.txt")
    line = text.read_text().splitlines()[0].split(maxsplit=1)[1]
    assert tokenizer.text2tokens(line)[:12] == ["alarm_set", "<space>", "sep", "<space>", "[time]", "<space>",
                                                "fill", "<space>", "S", "E", "V", "E"]
    assert tokenizer.text2tokens(line).count("[timeofday]") == 1

    bpe = tmp_path / "bpe"
    tokens = make_tokens.make_tokens(text, "bpe", 36, bpe, intent_first=True).read_text().split()
    assert set(symbols) <= set(tokens)
    pieces = spm.SentencePieceProcessor(model_file=str(bpe / "bpe.model")).encode(line, out_type=str)
    assert {"sep", "fill", "[time]", "[timeofday]"} <= set(pieces)

    # bare types would be prefixes of one another: ESPnet's CharTokenizer could split them either way
    bare = _write(tmp_path / "bare", ["u1 time_set A", "u2 timeofday_set B"])
    make_tokens.make_tokens(bare, "char", 0, tmp_path / "bare_char", intent_first=True)
    assert "symbol 'time_set' is a prefix" not in capsys.readouterr().err
    bare = _write(tmp_path / "bare", ["u1 time A", "u2 timeofday B"])
    make_tokens.make_tokens(bare, "char", 0, tmp_path / "bare_char", intent_first=True)
    assert "non-linguistic symbol 'time' is a prefix of 'timeofday'" in capsys.readouterr().err
