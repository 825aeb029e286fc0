"""Raw text onto the WikiText convention (``data.tokenizer=wikitext``), one line at a time.

WikiText-103/2 were split with Moses-style rules: punctuation and clitics stand alone
(``It 's``, ``don 't``), a hyphen between two letters or digits is ``@-@``, and the
digit-group and decimal separators are ``@,@`` and ``@.@`` (``1 @,@ 000``, ``3 @.@ 5``).
The splitting is sacremoses' Moses tokenizer; the rules here are:

* a hyphen between two alphanumerics (or ``<unk>``) -> `` @-@ ``;
* ``<unk>``, ``@-@``, ``@,@``, ``@.@`` and a word that starts with an apostrophe then a letter
  after a space (the clitics Moses splits off, ``'s``, ``'t``, ``O 'Brien``; not a quoted
  ``'word'``) are kept whole: Moses sees one capitalized placeholder word in their place;
* the separators are rewritten in numbers only (``1,000`` but not ``1,000th``, as WikiText);
* a line with no sign of raw text (no punctuation attached to a word or ``<unk>``, no
  letter-apostrophe-letter, no hyphen or separator between alphanumerics, no full stop
  attached at the line's end, before a closing mark or a capital, no attached ellipsis) is
  already tokenized: its tokens are ``line.split()``. So a line of WikiText's own files (where
  ``c. <unk>``, ``v. Paramount`` or ``Media.Vision`` stay whole, and Moses would cut them)
  comes back unchanged: all 44,836 lines of WikiText-2.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

#: tokens of the WikiText files that stay whole wherever they are
_KEEP = re.compile(r"(<unk>|@[-,.]@|(?<![^\s>@])'[^\W\d_](?:[\w']*\w)?(?=[\s,.;:!?)]|$))")
#: a hyphen between two alphanumerics (or <unk>): WikiText's @-@
_HYPHEN = re.compile(r"(?<=[^\W_]|>)-(?=[^\W_]|<)")
#: what Moses sees in place of a kept token: a plain word, capitalized (so a full stop before
#: <unk> is cut, as WikiText does after a sentence)
_PLACEHOLDER = "Wikitextkeptxq"
#: a number with digit-group or decimal separators (WikiText: 1 @,@ 000, 3 @.@ 5)
_NUMBER = re.compile(r"\d+(?:[,.]\d+)+")
_SEPARATOR = re.compile(r"(?<=\d)([,.])(?=\d)")
#: signs of raw (untokenized) text in a line
_RAW = re.compile(
    r"\w[,;:!?)\]\"]|[(\[\"]\w"  # punctuation attached to a word
    r"|[^\W\d_]'[^\W\d_]"  # a clitic still attached: don't, it's
    r"|[^\W_]-[^\W_]|\d[,.]\d+(?!\w)"  # a hyphen between alphanumerics, a separator in a number
    r"|\w\.\s*$|\w\.[\"')\]]|\w\.\.\."  # a full stop attached: at the end, before a closing
)  # mark, an ellipsis
#: a full stop attached to a word of 2+ letters before a capital (not "v. Paramount", and not
#: before <unk>: WikiText writes "c. <unk>")
_RAW_STOP = re.compile(r"[a-z]{2}\.\s+[A-Z]")


@lru_cache(maxsize=1)
def _moses() -> Any:
    from sacremoses import MosesTokenizer

    return MosesTokenizer(lang="en")


def is_tokenized(line: str) -> bool:
    """True when ``line`` shows no sign of raw text (it is kept as ``line.split()``)."""
    raw = _RAW.search(line.replace("<unk>", "U")) or _RAW_STOP.search(line)  # <unk>: a word
    return raw is None


def wikitext_words(line: str) -> list[str]:
    """The WikiText tokens of one line (no ``<eos>``); see the module docstring."""
    if is_tokenized(line):
        return line.split()
    line = _HYPHEN.sub(" @-@ ", line)
    kept = _KEEP.findall(line)
    text = _KEEP.sub(f" {_PLACEHOLDER} ", line)  # Moses sees one plain word in their place
    words: list[str] = []
    for token in _moses().tokenize(text, aggressive_dash_splits=True, escape=False):
        if token == _PLACEHOLDER:
            words.append(kept.pop(0))
        elif _NUMBER.fullmatch(token):
            words.extend(_SEPARATOR.sub(r" @\1@ ", token).split())
        else:
            words.append(token)
    return words
