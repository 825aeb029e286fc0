"""The tokenizers of `data.tokenizer`: one test per rule of `wikitext` and `fastai`, `word` and
`char` as before, documents and corpus streams, and WikiText's own lines left unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from src.data import corpus, fastai_rules, tokenizers
from src.data.cache import load_corpus
from src.data.corpus import EOS, tokenize
from src.data.documents import tokenize_text
from src.data.tokenizers import check_tokenizer, get_stream, tokenize_document
from src.data.wikitext_rules import wikitext_words

# ------------------------------------------------------------------------------ wikitext


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("It's great, isn't it?", "It 's great , isn 't it ?"),  # punctuation and clitics
        ('He said "no" (twice); ok.', 'He said " no " ( twice ) ; ok .'),
        ("a well-known long-term plan", "a well @-@ known long @-@ term plan"),  # @-@
        ("it cost 1,250,000 dollars", "it cost 1 @,@ 250 @,@ 000 dollars"),  # @,@
        ("a 3.5 km road", "a 3 @.@ 5 km road"),  # @.@
        ("his 1,000th game, a 3-2 win.", "his 1,000th game , a 3 @-@ 2 win ."),  # numbers only
        ("the <unk>-like <unk>, ok.", "the <unk> @-@ like <unk> , ok ."),  # <unk> stays whole
        ("The U.S. team won.", "The U.S. team won ."),  # Moses's abbreviations
    ],
)
def test_wikitext_rules_on_raw_text(raw: str, expected: str) -> None:
    assert wikitext_words(raw) == expected.split()


@pytest.mark.parametrize(
    "line",
    [
        " The game 's 1 @,@ 000th sale , c. <unk> . \n",  # a WikiText line: nothing moves
        " O 'Brien , a well @-@ known Media.Vision <unk> , won 3 @.@ 5 % . \n",
        " = Valkyria Chronicles III = \n",
        " \n",
    ],
)
def test_wikitext_form_lines_come_back_as_split(line: str) -> None:
    assert wikitext_words(line) == line.split()


def test_wikitext_real_lines_are_unchanged(corpora_dir: Path) -> None:
    """Every 7th line of WikiText-2's train text (5,246 lines): exactly `line.split()`."""
    lines = (corpora_dir / "wikitext-2" / "train.txt").read_text(encoding="utf-8").splitlines()
    sample = lines[::7]
    changed = [line for line in sample if wikitext_words(line) != line.split()]
    assert len(sample) > 5000 and changed == []


@pytest.mark.slow
def test_wikitext2_ids_with_wikitext_equal_word(corpora_dir: Path, cache_dir: Path) -> None:
    """The whole of WikiText-2 (44,836 lines): `wikitext` gives `word`'s vocabulary and ids."""
    word = load_corpus(corpora_dir / "wikitext-2", "word", cache_dir)
    raw = load_corpus(corpora_dir / "wikitext-2", "wikitext", cache_dir)
    assert word.vocab == raw.vocab
    for split in ("train", "valid", "test"):
        assert np.array_equal(word.split(split), raw.split(split))


# -------------------------------------------------------------------------------- fastai


def test_fastai_fix_html() -> None:
    assert fastai_rules.fix_html("a #39;b#39; quot;c&lt;d<br />e\\nf <unk> 1 @-@ 2") == (
        "a 'b' 'c<d\ne\nf xxunk 1-2"
    )


def test_fastai_replace_rep_and_wrep() -> None:
    assert fastai_rules.replace_rep("sooooo good") == "s xxrep 5 o  good"
    assert fastai_rules.replace_rep("too good") == "too good"  # twice is no repetition
    assert fastai_rules.replace_wrep("it is very very very very good") == (
        "it is xxwrep 4 very  good"
    )


def test_fastai_caps_and_maj() -> None:
    assert fastai_rules.replace_all_caps("I saw GREAT films") == "i saw xxup great films"
    assert fastai_rules.replace_maj("Paris is Big") == "xxmaj paris is xxmaj big"
    assert fastai_rules.replace_maj("I go") == "i go"  # one capital letter: just lowercased


def test_fastai_spaces_around_specials() -> None:
    assert fastai_rules.rm_useless_spaces(fastai_rules.spec_add_spaces("a/b #1")) == "a / b # 1"


@pytest.mark.skipif(not fastai_rules.spacy_available(), reason="spaCy (the text extra)")
def test_fastai_document_tokens() -> None:
    tokens = tokenize_document("Hello WORLD, it's sooo good!\n\nBye &amp; <br />thanks", "fastai")
    assert tokens == [
        "xxbos", "xxmaj", "hello", "xxup", "world", ",", "it", "'s", "s", "xxrep", "3", "o",
        "good", "!", EOS, "xxmaj", "bye", "&", "&", EOS, "thanks", EOS,
    ]  # fmt: skip


def test_fastai_without_spacy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenizers, "spacy_available", lambda: False)
    with pytest.raises(ValueError, match=r"^data\.tokenizer fastai needs spaCy.*\[text\]"):
        check_tokenizer("fastai")


def test_fastai_without_spacy_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`src.train` reports it as one line (`config error: data.tokenizer=fastai: ...`)."""
    from src.checks import problems
    from src.utils.resolvers import register_resolvers
    from tests.conftest import compose_train

    register_resolvers()  # as src.train does on import
    monkeypatch.setattr(tokenizers, "spacy_available", lambda: False)
    for overrides in (["data.tokenizer=fastai"], ["task=classify", "data=csv", "data.path=x"]):
        cfg = compose_train([*overrides, "data.tokenizer=fastai"], tmp_path, tmp_path, tmp_path)
        lines = [e.line() for e in problems(cfg)]
        assert any(line.startswith("config error: data.tokenizer=fastai") for line in lines), lines
        assert any("pip install -e '.[text]'" in line for line in lines), lines


# ----------------------------------------------------------------------- word, documents


def _old_document_rule(text: str) -> list[str]:
    """Today's document rule (before data.tokenizer reached documents), written out."""
    return [t for line in text.splitlines() if line.split() for t in [*line.split(), EOS]]


@pytest.mark.parametrize("text", ["  A b\n\n c  \n", " \n\t", "It's great, isn't it?\r\nok", ""])
def test_word_documents_are_todays_tokens(text: str) -> None:
    assert tokenize_text(text) == tokenize_document(text, "word") == _old_document_rule(text)


def test_documents_end_lines_with_eos_and_skip_blank_ones() -> None:
    assert tokenize_document("It's ok.\n \nA-b", "wikitext") == [
        "It", "'s", "ok", ".", EOS, "A", "@-@", "b", EOS,
    ]  # fmt: skip
    assert tokenize_document("ab\n\nc", "char") == ["a", "b", EOS, "c", EOS]
    assert tokenize_document(" \n", "wikitext") == []


def test_unknown_tokenizer_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"^data\.tokenizer must be one of \[word, char"):
        tokenize_document("a", "bpe")


# -------------------------------------------------------------------------------- streams


def _tokens(path: Path, tokenizer: str) -> list[str]:
    return [t for line in tokenize(path, get_stream(tokenizer)) for t in line.tokens]


def test_wikitext_stream_of_a_wikitext_file_is_the_word_stream(tmp_path: Path) -> None:
    text = " = A = \n \n It 's a well @-@ known <unk> , c. 1 @,@ 000 . \n last line"
    path = tmp_path / "a.txt"
    path.write_text(text, encoding="utf-8")
    assert _tokens(path, "wikitext") == _tokens(path, "word")
    assert get_stream("word") is corpus.tokenize_word  # word: today's streaming rule


def test_raw_stream_splits_lines_and_reads_long_lines_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "raw.txt"
    path.write_text("It's a well-known film, isn't it?\n\nYes: 1,250 fans.", encoding="utf-8")
    whole = _tokens(path, "wikitext")
    expected = "It 's a well @-@ known film , isn 't it ? <eos> <eos> Yes : 1 @,@ 250 fans . <eos>"
    assert whole == expected.split()
    for piece in (5, 11):
        monkeypatch.setattr(corpus, "_PIECE_BYTES", piece)
        assert _tokens(path, "wikitext") == whole, piece


@pytest.mark.skipif(not fastai_rules.spacy_available(), reason="spaCy (the text extra)")
def test_fastai_stream_starts_the_file_with_xxbos(tmp_path: Path) -> None:
    path = tmp_path / "raw.txt"
    path.write_text("Hello there.\nBye\n", encoding="utf-8")
    assert _tokens(path, "fastai") == [
        "xxbos", "xxmaj", "hello", "there", ".", EOS, "xxmaj", "bye", EOS,
    ]  # fmt: skip


def test_word_cache_keys_are_todays_and_raw_rules_are_versioned() -> None:
    import hashlib

    from src.data.cache import FORMAT_VERSION, cache_key

    sources = {"train": "a" * 64, "valid": "b" * 64, "test": "c" * 64}
    for name in ("word", "char"):  # the key of today's caches, written out: they never move
        text = f"format={FORMAT_VERSION}\ntokenizer={name}\n" + "\n".join(
            f"{split}={sha}" for split, sha in sources.items()
        )
        assert cache_key(name, sources) == hashlib.sha256(text.encode()).hexdigest()
    assert tokenizers.cache_name("wikitext") == "wikitext@1"


def test_corpus_cache_with_wikitext_on_a_wikitext_corpus_equals_word(tmp_path: Path) -> None:
    folder = tmp_path / "wt"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_text(
            " \n = B = \n The 1 @,@ 000 <unk> 's well @-@ known , c. 1900 . \n", encoding="utf-8"
        )
    word = load_corpus(folder, "word", tmp_path / "cache")
    raw = load_corpus(folder, "wikitext", tmp_path / "cache")
    assert word.cache_path != raw.cache_path  # the key holds the tokenizer
    assert word.vocab == raw.vocab
    for split in ("train", "valid", "test"):
        assert np.array_equal(word.split(split), raw.split(split))
