"""Vocabulary and streaming tokenizers (text file -> tokens -> int32 ids).

Rules follow salesforce/pytorch-examples: `word` splits each line on whitespace and appends
`<eos>`; `char` keeps every character of the line except the newline and appends `<eos>`. The
vocabulary comes from the train split alone, in the order tokens first appear there.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")
ID_DTYPE = np.dtype("<i4")  # int32 little-endian, the on-disk and in-memory id type
CHUNK_TOKENS = 1 << 20  # ids per encoded chunk (4 MiB): bounds memory while encoding
_PIECE_BYTES = 1 << 20  # longer lines are read in pieces, so one huge line cannot fill memory


class TokenLine(NamedTuple):
    """Tokens of one line (or of one piece of a very long line), with its 1-based number."""

    lineno: int
    tokens: list[str]


class Vocab:
    """Bidirectional token <-> id map; ids are positions in `itos`."""

    def __init__(self, itos: Iterable[str] = ()) -> None:
        self.itos: list[str] = list(itos)
        self.stoi: dict[str, int] = {tok: i for i, tok in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("Vocab: itos contains duplicate tokens")

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    __hash__ = None  # mutable, like a list

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, fingerprint={self.fingerprint()[:12]})"

    @property
    def unk_id(self) -> int | None:
        """Id of `<unk>`, or None when the vocabulary has no `<unk>` (then OOV is an error)."""
        return self.stoi.get(UNK)

    def add(self, token: str) -> int:
        """Append `token` if new; return its id."""
        idx = self.stoi.get(token)
        if idx is None:
            idx = self.stoi[token] = len(self.itos)
            self.itos.append(token)
        return idx

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Ids (int32) of `tokens`; unknown tokens map to `<unk>`, or raise if there is none."""
        return np.array(self._ids(list(tokens)), dtype=ID_DTYPE)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]

    def fingerprint(self) -> str:
        """sha256 of the ordered token list: equal fingerprints mean identical id assignments."""
        blob = json.dumps(self.itos, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def to_json(self) -> str:
        return json.dumps({"itos": self.itos}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        return cls(json.loads(text)["itos"])

    def _ids(self, tokens: list[str]) -> list[int]:
        try:
            return list(map(self.stoi.__getitem__, tokens))
        except KeyError:
            pass
        unk = self.unk_id
        if unk is None:
            missing = next(t for t in tokens if t not in self.stoi)
            raise ValueError(f"token {missing!r} is not in the vocabulary (which has no {UNK})")
        return [self.stoi.get(t, unk) for t in tokens]


def read_pieces(path: Path) -> Iterator[tuple[int, str, bool]]:
    """Yield (line number, text without the newline, ends_line), decoding UTF-8 strictly.

    Lines are split on b"\\n" only; a line longer than _PIECE_BYTES arrives in several pieces
    (ends_line False for all but the last), so memory stays bounded for any file.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    lineno, offset = 1, 0
    with open(path, "rb") as f:
        while True:
            raw = f.readline(_PIECE_BYTES)
            ends = raw.endswith(b"\n")
            pending = len(decoder.getstate()[0])  # bytes of a character split across pieces
            try:
                text = decoder.decode(raw, final=ends or not raw)
            except UnicodeDecodeError as err:
                at = offset - pending + err.start
                raise ValueError(
                    f"{path}: invalid UTF-8 at byte offset {at} ({err.reason}); "
                    "the file must be UTF-8 encoded (convert it, e.g. with iconv)"
                ) from None
            if not raw:
                return
            offset += len(raw)
            yield lineno, (text[:-1] if ends else text), ends
            lineno += ends


def tokenize_word(path: Path) -> Iterator[TokenLine]:
    """`line.split() + ["<eos>"]` per line (salesforce rule; also for pre-spaced PTB-char).

    A last line without a newline gets `<eos>` only if it has tokens, so trailing whitespace
    at the end of a file (PTB-char ends with "\\n ") adds nothing.
    """
    carry, open_line, lineno = "", False, 0
    for lineno, text, ends in read_pieces(path):
        text = carry + text
        words, carry = text.split(), ""
        if ends:
            words.append(EOS)
            open_line = False
        elif words and not text[-1].isspace():
            carry = words.pop()  # may continue in the next piece
        if words:
            open_line = open_line or not ends
            yield TokenLine(lineno, words)
    if carry or open_line:
        yield TokenLine(lineno, ([carry] if carry else []) + [EOS])


def tokenize_char(path: Path) -> Iterator[TokenLine]:
    """Every character of the line except the newline, then `<eos>`."""
    open_line, lineno = False, 0
    for lineno, text, ends in read_pieces(path):
        chars = list(text)
        if ends:
            chars.append(EOS)
        open_line = not ends and (open_line or bool(chars))
        if chars:
            yield TokenLine(lineno, chars)
    if open_line:
        yield TokenLine(lineno, [EOS])


TOKENIZERS: dict[str, Callable[[Path], Iterator[TokenLine]]] = {
    "word": tokenize_word,
    "char": tokenize_char,
}


Stream = Callable[[Path], Iterator[TokenLine]]


def tokenize(path: Path, tokenizer: str | Stream) -> Iterator[TokenLine]:
    """Stream the lines of `path` through the named tokenizer (or a stream function, e.g.
    one of `src/data/tokenizers.py`'s raw-text tokenizers)."""
    stream = tokenizer if callable(tokenizer) else get_tokenizer(tokenizer)
    return stream(Path(path))


def get_tokenizer(name: str) -> Callable[[Path], Iterator[TokenLine]]:
    try:
        return TOKENIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown tokenizer {name!r}; known: {sorted(TOKENIZERS)} (config key data.tokenizer)"
        ) from None


def build_vocab(train_path: Path, tokenizer: str | Stream) -> Vocab:
    """Vocabulary of the train split in first-seen order (salesforce's id assignment)."""
    first_seen: dict[str, None] = {}
    for line in tokenize(train_path, tokenizer):
        first_seen.update(dict.fromkeys(line.tokens))
    return Vocab(first_seen)


def encode_file(
    path: Path, tokenizer: str | Stream, vocab: Vocab, chunk_tokens: int = CHUNK_TOKENS
) -> Iterator[np.ndarray]:
    """Stream the ids of `path` as int32 chunks of about `chunk_tokens` ids.

    A token missing from the vocabulary maps to `<unk>` when the vocabulary has one; otherwise
    it is an error naming the token, file and line.
    """
    stoi, unk = vocab.stoi, vocab.unk_id
    lookup = stoi.__getitem__
    buf: list[int] = []
    for lineno, tokens in tokenize(path, tokenizer):
        try:
            buf.extend(list(map(lookup, tokens)))
        except KeyError:
            if unk is None:
                missing = next(t for t in tokens if t not in stoi)
                raise ValueError(
                    f"{path}:{lineno}: token {missing!r} is not in the vocabulary built from "
                    f"the train split, and the vocabulary has no {UNK} to map it to. Fix: "
                    f"replace rare or unseen words with {UNK} in the corpus files (so train "
                    f"contains {UNK}), or make sure valid/test only use tokens seen in train."
                ) from None
            buf.extend([stoi.get(t, unk) for t in tokens])
        if len(buf) >= chunk_tokens:
            yield np.array(buf, dtype=ID_DTYPE)
            buf = []
    if buf:
        yield np.array(buf, dtype=ID_DTYPE)
