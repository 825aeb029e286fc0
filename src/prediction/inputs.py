"""The documents to predict on: a ``.csv`` with a ``text`` column, a ``.txt`` with one document
per line, or standard input (``input=-``, read as lines).

Every problem is an :class:`InputError` whose message is one line naming the file and the row
and saying what to do. Bytes that are not UTF-8 are found row by row: the file is decoded with
``surrogateescape``, so a bad byte becomes a lone surrogate in its row's text.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

TEXT = "text"
STDIN = "-"
_FIELD_LIMIT = 2**31 - 1  # the csv module's default (128 KiB) is too small for documents


class InputError(ValueError):
    """Input that cannot be predicted on; the message names the file, the row and the fix."""


@dataclass
class Documents:
    """The documents of one input, in file order, with the columns to copy to the output."""

    source: str
    texts: list[str] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)  # every input column, text too
    where: list[str] = field(default_factory=list)  # "row 3 (line 4)"
    columns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def _bad_bytes(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _add(docs: Documents, row: dict[str, str], where: str) -> None:
    text = row[TEXT]
    if _bad_bytes("".join(row.values())):
        raise InputError(
            f"{docs.source}: {where}: invalid UTF-8; save the file as UTF-8 (the other rows "
            "may be fine)"
        )
    if not text.strip():
        raise InputError(
            f"{docs.source}: {where}: empty document; give the row some text or delete it"
        )
    docs.texts.append(text)
    docs.rows.append(row)
    docs.where.append(where)


def parse_lines(data: bytes, source: str) -> Documents:
    """One document per line (a trailing newline ends the last line; no blank lines)."""
    docs = Documents(source, columns=[TEXT])
    text = data.decode("utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8",
                       errors="surrogateescape")  # fmt: skip
    for number, line in enumerate(text.splitlines(), start=1):
        _add(docs, {TEXT: line}, f"line {number}")
    return docs


def parse_csv(data: bytes, source: str) -> Documents:
    """A header naming a ``text`` column (other columns are kept), then one row per document."""
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        if TEXT not in header:
            shown = ", ".join(header) or "empty"
            raise InputError(
                f"{source}: row 0 (line 1): no {TEXT!r} column (header: {shown}); the first row "
                f"must name the columns, one of them {TEXT!r}"
            )
        docs = Documents(source, columns=header)
        row, start = 0, reader.line_num + 1
        for fields in reader:
            if fields:
                row += 1
                where = f"row {row} (line {start})"
                if len(fields) != len(header):
                    raise InputError(
                        f"{source}: {where}: {len(fields)} fields, the header has "
                        f'{len(header)}; quote a text holding commas ("...")'
                    )
                _add(docs, dict(zip(header, fields, strict=True)), where)
            start = reader.line_num + 1
    except csv.Error as err:
        raise InputError(f"{source}: line {reader.line_num}: malformed CSV ({err})") from None
    return docs


def read_documents(path: str, stdin: BinaryIO | None = None) -> Documents:
    """The documents of ``path`` (``-``: standard input as lines); at least one."""
    if path == STDIN:
        stream = stdin if stdin is not None else sys.stdin.buffer
        docs = parse_lines(stream.read(), "<stdin>")
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise InputError(
                f"{file}: file not found; input= takes a .csv (with a {TEXT!r} column), a .txt "
                "(one document per line) or - (standard input)"
            )
        data = file.read_bytes()
        docs = (
            parse_csv(data, str(file))
            if file.suffix.lower() == ".csv"
            else parse_lines(data, str(file))
        )
    if not docs.texts:
        raise InputError(f"{docs.source}: no documents; give at least one")
    return docs
