"""Token-id cache: each corpus is tokenized once, then memory-mapped.

One folder per (corpus, tokenizer, file contents): `<cache_dir>/<corpus>-<key[:16]>` with
`{train,valid,test}.bin` (raw int32 little-endian ids), `vocab.json` and `meta.json`. The build
streams (peak memory = vocabulary + one chunk of ids, whatever the corpus size), happens in a
temp folder that is renamed into place when complete, and is guarded by a file lock so that
concurrent processes build once. A folder without a valid `meta.json` is never trusted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from src.data import corpus
from src.data.corpus import ID_DTYPE, SPLITS, Stream, Vocab
from src.data.tokenizers import cache_name, get_stream

FORMAT_VERSION = 1
DATA_DIR_HINT = (
    "Set paths.data_dir (or the AWD_DATA_DIR environment variable) to the folder that holds "
    "the corpus folders, or enable download (data.download=true) for a known corpus."
)


@dataclass(frozen=True, eq=False)
class CorpusArrays:
    """A tokenized corpus: the vocabulary and one read-only int32 memmap per split."""

    vocab: Vocab
    train: np.memmap
    valid: np.memmap
    test: np.memmap
    cache_path: Path

    def split(self, name: str) -> np.memmap:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; known: {list(SPLITS)}")
        return getattr(self, name)


def split_paths(corpus_dir: Path) -> dict[str, Path]:
    """The three split files of a corpus folder; missing ones are an error with the fix."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus folder {corpus_dir} does not exist. {DATA_DIR_HINT}")
    paths = {split: corpus_dir / f"{split}.txt" for split in SPLITS}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"corpus file {path} does not exist. {DATA_DIR_HINT}")
        if path.stat().st_size == 0:
            raise ValueError(f"corpus file {path} is empty")
    return paths


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def cache_key(tokenizer: str, sources: dict[str, str]) -> str:
    """sha256 over the format version, the tokenizer (with its rules' version) and each split
    file's sha256."""
    parts = [f"format={FORMAT_VERSION}", f"tokenizer={cache_name(tokenizer)}"]
    parts += [f"{split}={sources[split]}" for split in SPLITS]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def load_corpus(corpus_dir: Path, tokenizer: str, cache_dir: Path) -> CorpusArrays:
    """Memory-map the cached ids of `corpus_dir`, building the cache first if needed.

    The key hashes the split files' bytes (so edited files get a new cache), but a valid cache
    is never re-tokenized.
    """
    stream = get_stream(tokenizer)  # fails fast on an unknown name
    corpus_dir, cache_dir = Path(corpus_dir), Path(cache_dir)
    paths = split_paths(corpus_dir)
    sources = {split: file_sha256(path) for split, path in paths.items()}
    key = cache_key(tokenizer, sources)
    folder = cache_dir / f"{corpus_dir.name}-{key[:16]}"
    arrays = _open(folder, key)
    if arrays is not None:
        return arrays
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        arrays = _open(folder, key)  # another process may have built it meanwhile
        if arrays is None:
            _build(paths, tokenizer, stream, folder, key, sources)
            arrays = _open(folder, key)
    if arrays is None:
        raise RuntimeError(f"cache {folder} was built but cannot be read back")
    return arrays


def _open(folder: Path, key: str) -> CorpusArrays | None:
    """The cache in `folder` if it is complete and matches `key`, else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION or meta.get("key") != key:
            return None
        vocab = Vocab.from_json((folder / "vocab.json").read_text(encoding="utf-8"))
        ids = {}
        for split in SPLITS:
            path = folder / f"{split}.bin"
            if path.stat().st_size != meta["tokens"][split] * ID_DTYPE.itemsize:
                return None
            ids[split] = np.memmap(path, dtype=ID_DTYPE, mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(vocab) != meta.get("vocab_size"):
        return None
    return CorpusArrays(vocab=vocab, cache_path=folder, **ids)


def _build(
    paths: dict[str, Path],
    tokenizer: str,
    stream: Stream,
    folder: Path,
    key: str,
    sources: dict[str, str],
) -> None:
    """Tokenize into a temp folder and rename it to `folder`; call with the lock held."""
    _remove_leftovers(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        vocab = corpus.build_vocab(paths["train"], stream)
        counts = {
            split: _write_ids(paths[split], stream, vocab, tmp / f"{split}.bin") for split in SPLITS
        }
        _write_text(tmp / "vocab.json", vocab.to_json())
        meta = {
            "format_version": FORMAT_VERSION,
            "key": key,
            "tokenizer": tokenizer,
            "tokens": counts,
            "vocab_size": len(vocab),
            "vocab_fingerprint": vocab.fingerprint(),
            "sources": {
                split: {"file": str(paths[split]), "sha256": sources[split]} for split in SPLITS
            },
        }
        _write_text(tmp / "meta.json", json.dumps(meta, indent=2))  # last: marks completeness
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        os.replace(tmp, folder)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise OSError(
                errno.ENOSPC,
                f"no space left on the device while writing the token cache {folder} (about "
                f"{_estimated_bytes(paths) / 2**20:.0f} MiB needed); nothing was left behind. "
                "Free disk space or point paths.cache_dir (or AWD_CACHE_DIR) at a larger disk.",
            ) from exc
        raise


def _estimated_bytes(paths: dict[str, Path]) -> int:
    """Upper bound of the cache size: one int32 per byte of text is never exceeded."""
    return sum(4 * p.stat().st_size for p in paths.values())


def _write_ids(path: Path, tokenizer: Stream, vocab: Vocab, out_path: Path) -> int:
    """Stream the ids of one split file into `out_path`; return the token count."""
    count = 0
    with open(out_path, "wb") as out:
        for chunk in corpus.encode_file(path, tokenizer, vocab):
            out.write(chunk.astype(ID_DTYPE, copy=False).tobytes())
            count += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    if count == 0:
        raise ValueError(f"corpus file {path} contains no tokens")
    return count


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _remove_leftovers(folder: Path) -> None:
    """Delete an untrusted `folder` and temp folders of killed builds (the lock is held)."""
    if folder.exists():
        shutil.rmtree(folder)
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
