"""fastai's text rules (``data.tokenizer=fastai``), for models pretrained with fastai.

The splitting is spaCy's blank English tokenizer (``spacy.blank("en")``, the ``text`` extra);
the rules are those of fastai's ``text_proc_rules``, with the same semantics:

* ``fix_html``: HTML entities and escapes (``&amp;`` -> ``&``, ``<br />`` and a literal
  ``\\n`` -> a line break, ``<unk>`` -> ``xxunk``, `` @-@ `` -> ``-``, ``...`` -> `` …``), then
  ``html.unescape``;
* ``replace_rep``: a character repeated 3+ times -> ``xxrep n c`` (``cccc`` -> ``xxrep 4 c``);
* ``replace_wrep``: a word repeated 3+ times -> ``xxwrep n w``;
* spaces around ``/``, ``#`` and ``\\``, runs of spaces collapsed;
* ``replace_all_caps``: an all-caps word of 2+ letters -> ``xxup`` then the word lowercased;
* ``replace_maj``: a capitalized word of 2+ characters -> ``xxmaj`` then the word lowercased;
* everything lowercased; ``xxbos`` starts each document (``src/data/tokenizers.py``).

fastai applies the rules to a whole document; here ``fix_html`` does (its line breaks cut the
lines) and the others apply to each line, which ends with ``<eos>``. Whitespace tokens are
dropped (fastai keeps spaCy's ``\\n`` tokens; ``<eos>`` takes their place).
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from typing import Any

BOS, UNK, PAD, EOS_FASTAI, FLD = "xxbos", "xxunk", "xxpad", "xxeos", "xxfld"
REP, WREP, UP, MAJ = "xxrep", "xxwrep", "xxup", "xxmaj"
SPECIALS = (UNK, PAD, BOS, EOS_FASTAI, FLD, REP, WREP, UP, MAJ)
EXTRA_HINT = (
    "data.tokenizer fastai needs spaCy, in the `text` extra: pip install -e '.[text]' "
    "(or use data.tokenizer=wikitext)"
)

#: fix_html's replacements, applied in this order before html.unescape
_HTML = (
    ("#39;", "'"),
    ("amp;", "&"),
    ("#146;", "'"),
    ("nbsp;", " "),
    ("#36;", "$"),
    ("\\n", "\n"),
    ("quot;", "'"),
    ("<br />", "\n"),
    ('\\"', '"'),
    ("<unk>", UNK),
    (" @.@ ", "."),
    (" @-@ ", "-"),
    ("...", " …"),
)
_CHAR_REP = re.compile(r"(\S)(\1{2,})")
_WORD_REP = re.compile(r"(?:\s|^)(\w+)\s+((?:\1\s+)+)\1(\s|\W|$)")
_SPECIAL_CHARS = re.compile(r"([/#\\])")
_SPACES = re.compile(" {2,}")
_ALL_CAPS = re.compile(r"(\s|^)([A-Z]+[^a-z\s]*)(?=(\s|$))")
_CAPITALIZED = re.compile(r"(\s|^)([A-Z][^A-Z\s]*)(?=(\s|$))")


def fix_html(text: str) -> str:
    """Entities and escapes seen in web text, then ``html.unescape``."""
    for old, new in _HTML:
        text = text.replace(old, new)
    return html.unescape(text)


def replace_rep(text: str) -> str:
    """``cccc`` -> `` xxrep 4 c `` (a non-space character 3+ times in a row)."""
    return _CHAR_REP.sub(lambda m: f" {REP} {len(m.group(2)) + 1} {m.group(1)} ", text)


def replace_wrep(text: str) -> str:
    """``w w w w`` -> `` xxwrep 4 w `` (a word 3+ times in a row), keeping what follows."""

    def count(m: re.Match[str]) -> str:
        return f" {WREP} {len(m.group(2).split()) + 2} {m.group(1)} {m.group(3)}"

    return _WORD_REP.sub(count, text)


def spec_add_spaces(text: str) -> str:
    """Spaces around ``/``, ``#`` and ``\\``."""
    return _SPECIAL_CHARS.sub(r" \1 ", text)


def rm_useless_spaces(text: str) -> str:
    """Runs of spaces -> one space."""
    return _SPACES.sub(" ", text)


def _marked(mark: str) -> Any:
    def lower(m: re.Match[str]) -> str:
        word = m.group(2)
        return f"{m.group(1)}{mark + ' ' if len(word) > 1 else ''}{word.lower()}"

    return lower


def replace_all_caps(text: str) -> str:
    """``GREAT`` -> ``xxup great`` (one capital alone, ``I``, is just lowercased)."""
    return _ALL_CAPS.sub(_marked(UP), text)


def replace_maj(text: str) -> str:
    """``Great`` -> ``xxmaj great`` (a single capital letter is just lowercased)."""
    return _CAPITALIZED.sub(_marked(MAJ), text)


LINE_RULES = (
    replace_rep,
    replace_wrep,
    spec_add_spaces,
    rm_useless_spaces,
    replace_all_caps,
    replace_maj,
    str.lower,
    str.strip,
)


@lru_cache(maxsize=1)
def spacy_tokenizer() -> Any:
    """spaCy's blank English tokenizer, fastai's special tokens kept whole."""
    try:
        import spacy
        from spacy.symbols import ORTH
    except ImportError:
        raise ImportError(EXTRA_HINT) from None
    nlp = spacy.blank("en")
    for token in SPECIALS:
        nlp.tokenizer.add_special_case(token, [{ORTH: token}])
    return nlp.tokenizer


def spacy_available() -> bool:
    """Whether spaCy can be imported (the ``text`` extra is installed)."""
    try:
        spacy_tokenizer()
    except ImportError:
        return False
    return True


def fastai_words(line: str) -> list[str]:
    """The tokens of one line after the line rules (no ``xxbos``, no ``<eos>``)."""
    for rule in LINE_RULES:
        line = rule(line)
    return [piece for token in spacy_tokenizer()(line) for piece in token.text.split()]
