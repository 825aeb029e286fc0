"""Tokenizer rules, vocabulary, UTF-8 and OOV errors."""

from pathlib import Path

import numpy as np
import pytest

from src.data import corpus
from src.data.corpus import EOS, UNK, Vocab, build_vocab, encode_file, tokenize


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def tokens(path: Path, tokenizer: str) -> list[str]:
    return [t for line in tokenize(path, tokenizer) for t in line.tokens]


def test_word_tokenizer_is_split_plus_eos_per_line(tmp_path):
    f = write(tmp_path / "a.txt", " the cat \n\n sat\ton  the\u3000mat \nlast")
    assert tokens(f, "word") == ["the", "cat", EOS, EOS, "sat", "on", "the", "mat", EOS] + [
        "last",
        EOS,
    ]
    assert [line.lineno for line in tokenize(f, "word")] == [1, 2, 3, 4]


def test_whitespace_after_last_newline_adds_nothing(tmp_path):
    """PTB-char files end with "\\n "; the README counts one <eos> per newline."""
    f = write(tmp_path / "a.txt", "a b _ c \n ")
    assert tokens(f, "word") == ["a", "b", "_", "c", EOS]


def test_char_tokenizer_keeps_every_character_but_the_newline(tmp_path):
    f = write(tmp_path / "a.txt", "ab c\n\né\r\nxy")
    assert tokens(f, "char") == ["a", "b", " ", "c", EOS, EOS, "é", "\r", EOS, "x", "y", EOS]


@pytest.mark.parametrize("tokenizer", ["word", "char"])
def test_long_lines_read_in_pieces_tokenize_the_same(tmp_path, monkeypatch, tokenizer):
    text = " héllo wörld  ab\n" + "x" * 11 + " déjà vu ünïcode€€ \nend  of  file\n \n  tail"
    f = write(tmp_path / "a.txt", text)
    whole = tokens(f, tokenizer)
    for piece in (1, 2, 3, 5, 7):
        monkeypatch.setattr(corpus, "_PIECE_BYTES", piece)
        assert tokens(f, tokenizer) == whole, piece


def test_unknown_tokenizer_is_rejected(tmp_path):
    f = write(tmp_path / "a.txt", "a\n")
    with pytest.raises(ValueError, match="data.tokenizer"):
        list(tokenize(f, "bpe"))


@pytest.mark.parametrize("piece", [1 << 20, 3])
def test_non_utf8_names_file_and_byte_offset(tmp_path, monkeypatch, piece):
    monkeypatch.setattr(corpus, "_PIECE_BYTES", piece)
    f = write(tmp_path / "latin1.txt", b"ok line\nna" + "ïve\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt.*byte offset 10.*must be UTF-8"):
        list(tokenize(f, "word"))


def test_truncated_utf8_at_end_of_file_is_reported(tmp_path):
    f = write(tmp_path / "cut.txt", b"ab\n" + "é".encode()[:1])
    with pytest.raises(ValueError, match="byte offset 3"):
        list(tokenize(f, "char"))


def test_vocab_is_first_seen_order_of_train(tmp_path):
    f = write(tmp_path / "train.txt", "b a b\nc a\n")
    assert build_vocab(f, "word").itos == ["b", "a", EOS, "c"]


def test_vocab_encode_decode_json_equality_fingerprint():
    v = Vocab(["x", "y", EOS])
    ids = v.encode(["y", "x", EOS])
    assert ids.dtype == np.int32 and ids.tolist() == [1, 0, 2]
    assert v.decode(ids) == ["y", "x", EOS]
    w = Vocab.from_json(v.to_json())
    assert w == v and w.stoi == v.stoi and w.fingerprint() == v.fingerprint()
    assert Vocab(["y", "x", EOS]) != v
    assert Vocab(["y", "x", EOS]).fingerprint() != v.fingerprint()
    assert len(v) == 3 and "x" in v and v.unk_id is None
    with pytest.raises(ValueError, match="'zz'"):
        v.encode(["zz"])
    with pytest.raises(ValueError, match="duplicate"):
        Vocab(["a", "a"])


def test_vocab_maps_unknown_to_unk_when_it_has_one():
    v = Vocab(["a", UNK, EOS])
    assert v.encode(["a", "new", EOS]).tolist() == [0, 1, 2]


def test_oov_without_unk_names_token_file_line_and_fix(tmp_path):
    vocab = build_vocab(write(tmp_path / "train.txt", "a b\n"), "word")
    valid = write(tmp_path / "valid.txt", "a\nb zebra\n")
    with pytest.raises(ValueError, match=r"valid\.txt:2: token 'zebra'.*Fix: replace") as err:
        list(encode_file(valid, "word", vocab))
    assert "<unk>" in str(err.value)


def test_oov_maps_to_unk_when_train_has_it(tmp_path):
    vocab = build_vocab(write(tmp_path / "train.txt", "a <unk>\n"), "word")
    valid = write(tmp_path / "valid.txt", "a zebra\n")
    ids = np.concatenate(list(encode_file(valid, "word", vocab)))
    assert vocab.decode(ids) == ["a", UNK, EOS]


def test_encode_file_streams_bounded_chunks(tmp_path):
    f = write(tmp_path / "train.txt", "a b c d\n" * 50)
    vocab = build_vocab(f, "word")
    chunks = list(encode_file(f, "word", vocab, chunk_tokens=16))
    assert all(len(c) < 16 + 5 for c in chunks) and len(chunks) > 10
    assert vocab.decode(np.concatenate(chunks)) == tokens(f, "word")
