"""Every tokenizer of ``data.tokenizer``, behind one entry point for documents and corpora.

* ``word``: ``line.split()`` (pre-tokenized corpora: PTB, WikiText, the PTB-char files);
* ``char``: every character of the line;
* ``wikitext``: raw text onto the WikiText convention (``src/data/wikitext_rules.py``: Moses
  splitting, ``@-@``, ``@,@``, ``@.@``; WikiText's own lines come back as ``line.split()``);
* ``fastai``: fastai's rules and spaCy's tokenizer (``src/data/fastai_rules.py``; the ``text``
  extra).

Every line ends with ``<eos>``. :func:`tokenize_document` gives a document's tokens (CSV texts,
prediction input): the tokens of every non-blank line, each followed by ``<eos>``, with
``xxbos`` first for ``fastai``. :func:`get_stream` gives the streaming tokenizer of a corpus
file (``TokenLine`` per line, as ``src/data/corpus.py`` streams ``word`` and ``char``), which the
token cache uses; for ``fastai`` a file is one document (``xxbos`` first). A language-model
stream of documents (``task=lm data=csv``) starts each document with :func:`document_start`:
``xxbos`` for ``fastai``, ``<eos>`` for the others (as a blank line separates WikiText's
paragraphs, so a WikiText model knows it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from src.data.corpus import EOS, TokenLine, read_pieces, tokenize_char, tokenize_word
from src.data.fastai_rules import BOS, EXTRA_HINT, fastai_words, fix_html, spacy_available
from src.data.wikitext_rules import wikitext_words

Stream = Callable[[Path], Iterator[TokenLine]]

#: the tokens of one line, without ``<eos>``
LINE_RULES: dict[str, Callable[[str], list[str]]] = {
    "word": str.split,
    "char": list,
    "wikitext": wikitext_words,
    "fastai": fastai_words,
}
#: rules on a whole text before it is cut into lines
TEXT_RULES: dict[str, Callable[[str], str]] = {"fastai": fix_html}
#: the first token of every document, where the rules put one
DOCUMENT_TOKENS: dict[str, str] = {"fastai": BOS}
NAMES = tuple(LINE_RULES)
#: versions of the raw-text rules, in the token caches' keys: a change of rules gets new caches
#: (``word`` and ``char`` keep their name alone, so their caches never move)
RULES_VERSIONS: dict[str, int] = {"wikitext": 1, "fastai": 1}


def check_tokenizer(name: str) -> None:
    """Refuse an unknown name, or ``fastai`` without spaCy (one line naming the extra)."""
    if name not in LINE_RULES:
        raise ValueError(f"data.tokenizer must be one of [{', '.join(NAMES)}], got {name!r}")
    if name == "fastai" and not spacy_available():
        raise ValueError(EXTRA_HINT)


def cache_name(tokenizer: str) -> str:
    """The tokenizer as token caches key it: ``word``, ``char``, ``wikitext@1``, ``fastai@1``."""
    version = RULES_VERSIONS.get(tokenizer)
    return tokenizer if version is None else f"{tokenizer}@{version}"


def document_start(tokenizer: str) -> str:
    """The token that starts each document of a language-model stream."""
    return DOCUMENT_TOKENS.get(tokenizer, EOS)


def tokenize_document(text: str, tokenizer: str = "word") -> list[str]:
    """A document's tokens: each non-blank line's tokens then ``<eos>`` (``xxbos`` first for
    ``fastai``); ``[]`` for a blank document. ``word`` is ``line.split()`` per line."""
    check_tokenizer(tokenizer)
    split = LINE_RULES[tokenizer]
    text = TEXT_RULES.get(tokenizer, str)(text)
    tokens: list[str] = []
    for line in text.splitlines():
        words = split(line) if line.strip() else []
        if words:
            tokens.extend(words)
            tokens.append(EOS)
    if tokens and tokenizer in DOCUMENT_TOKENS:
        tokens.insert(0, DOCUMENT_TOKENS[tokenizer])
    return tokens


def _line_stream(tokenizer: str) -> Stream:
    """A corpus-file stream: ``LINE_RULES[tokenizer](line) + ["<eos>"]`` per line (a blank line
    gives ``<eos>``, as ``word``); a line longer than the read size is cut after its last
    whitespace, so memory stays bounded."""
    split, prepare = LINE_RULES[tokenizer], TEXT_RULES.get(tokenizer, str)
    start = DOCUMENT_TOKENS.get(tokenizer)

    def stream(path: Path) -> Iterator[TokenLine]:
        carry, open_line, started, lineno = "", False, start is None, 0
        for lineno, piece, ends in read_pieces(Path(path)):
            text = carry + piece
            carry = ""
            if not ends:
                cut = max((i + 1 for i, c in enumerate(text) if c.isspace()), default=0)
                text, carry = text[:cut], text[cut:]
            text = prepare(text)
            words = split(text) if text.strip() else []
            if ends:
                words.append(EOS)
            if words and not started:
                words.insert(0, start)  # type: ignore[arg-type]
                started = True
            open_line = not ends and (open_line or bool(words))
            if words:
                yield TokenLine(lineno, words)
        if carry.strip() or open_line:
            yield TokenLine(lineno, (split(prepare(carry)) if carry.strip() else []) + [EOS])

    return stream


STREAMS: dict[str, Stream] = {
    "word": tokenize_word,
    "char": tokenize_char,
    "wikitext": _line_stream("wikitext"),
    "fastai": _line_stream("fastai"),
}


def get_stream(tokenizer: str) -> Stream:
    """The streaming tokenizer of a corpus file (``word`` and ``char``: ``src/data/corpus.py``)."""
    check_tokenizer(tokenizer)
    return STREAMS[tokenizer]
