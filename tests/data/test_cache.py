"""Token-id cache: real corpus counts, layout, reuse, atomicity, locking, memory."""

import json
import multiprocessing
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from src.data import cache, corpus
from src.data.cache import load_corpus
from src.data.corpus import EOS

CORPORA = Path("/work/shared/corpora")
REPO = Path(__file__).resolve().parents[2]
TINY = {
    "train": "the cat sat\non the mat\n",
    "valid": "the mat sat\n",
    "test": "on the cat\n",
}


def make_corpus(root: Path, name: str = "tiny", texts: dict[str, str] = TINY) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in texts.items():
        (folder / f"{split}.txt").write_text(text, encoding="utf-8")
    return folder


def salesforce_ids(paths: list[Path]) -> list[np.ndarray]:
    """Reference: pytorch-examples/salesforce `Corpus` (dictionary grows over train only)."""
    stoi: dict[str, int] = {}
    out = []
    for k, path in enumerate(paths):
        ids = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                for w in line.split() + ["<eos>"]:
                    if k == 0:
                        stoi.setdefault(w, len(stoi))
                    ids.append(stoi[w])
        out.append(np.array(ids))
    return out


@pytest.mark.parametrize(
    "name, counts, vocab_size",
    [
        ("ptb", (929_589, 73_760, 82_430), 10_000),
        ("wikitext-2", (2_088_628, 217_646, 245_569), 33_278),
        ("ptb-char", (5_017_482, 393_042, 442_423), 50),
    ],
)
def test_real_corpus_counts(tmp_path, name, counts, vocab_size):
    arrays = load_corpus(CORPORA / name, "word", tmp_path)
    assert (len(arrays.train), len(arrays.valid), len(arrays.test)) == counts
    assert len(arrays.vocab) == vocab_size
    if name == "ptb":  # identical ids to the reference implementation
        ref = salesforce_ids([CORPORA / name / f"{s}.txt" for s in ("train", "valid", "test")])
        for ours, theirs in zip((arrays.train, arrays.valid, arrays.test), ref, strict=True):
            np.testing.assert_array_equal(ours, theirs)


def test_cache_layout_and_memmaps(tmp_path):
    src = make_corpus(tmp_path / "data")
    arrays = load_corpus(src, "word", tmp_path / "cache")
    key = cache.cache_key("word", {s: cache.file_sha256(src / f"{s}.txt") for s in TINY})
    assert arrays.cache_path == tmp_path / "cache" / f"tiny-{key[:16]}"
    assert sorted(p.name for p in arrays.cache_path.iterdir()) == [
        "meta.json",
        "test.bin",
        "train.bin",
        "valid.bin",
        "vocab.json",
    ]
    for split in ("train", "valid", "test"):
        ids = arrays.split(split)
        assert isinstance(ids, np.memmap) and ids.mode == "r" and ids.dtype == np.dtype("<i4")
    assert arrays.vocab.decode(arrays.valid) == ["the", "mat", "sat", EOS]
    raw = (arrays.cache_path / "train.bin").read_bytes()
    assert np.frombuffer(raw, "<i4").tolist() == [0, 1, 2, 3, 4, 0, 5, 3]
    meta = json.loads((arrays.cache_path / "meta.json").read_text())
    assert meta["tokens"] == {"train": 8, "valid": 4, "test": 4}
    assert meta["tokenizer"] == "word" and meta["key"] == key
    assert meta["sources"]["train"]["sha256"] == cache.file_sha256(src / "train.txt")
    assert meta["vocab_fingerprint"] == arrays.vocab.fingerprint()


def test_reuse_does_not_tokenize_again(tmp_path, monkeypatch):
    src = make_corpus(tmp_path / "data")
    first = load_corpus(src, "word", tmp_path / "cache")

    def fail(path):
        raise AssertionError("tokenized again")

    monkeypatch.setitem(corpus.TOKENIZERS, "word", fail)
    second = load_corpus(src, "word", tmp_path / "cache")
    assert second.vocab == first.vocab and second.cache_path == first.cache_path
    np.testing.assert_array_equal(second.train, first.train)


def test_changed_file_or_tokenizer_gets_a_new_cache(tmp_path):
    src = make_corpus(tmp_path / "data")
    a = load_corpus(src, "word", tmp_path / "cache")
    b = load_corpus(src, "char", tmp_path / "cache")
    (src / "test.txt").write_text("the cat\n")
    c = load_corpus(src, "word", tmp_path / "cache")
    assert len({a.cache_path, b.cache_path, c.cache_path}) == 3
    assert c.vocab.decode(c.test) == ["the", "cat", EOS]


def leftovers(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock"))


def test_crash_during_build_leaves_nothing_and_next_call_builds(tmp_path, monkeypatch):
    src = make_corpus(tmp_path / "data")
    real_encode = corpus.encode_file

    def crash_on_valid(path, *args, **kwargs):
        if path.name == "valid.txt":
            yield from real_encode(path, *args, **kwargs)
            raise RuntimeError("simulated crash")
        yield from real_encode(path, *args, **kwargs)

    monkeypatch.setattr(corpus, "encode_file", crash_on_valid)
    with pytest.raises(RuntimeError, match="simulated crash"):
        load_corpus(src, "word", tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == []
    monkeypatch.undo()
    arrays = load_corpus(src, "word", tmp_path / "cache")
    assert arrays.vocab.decode(arrays.test) == ["on", "the", "cat", EOS]


def test_killed_build_leftovers_are_ignored_and_removed(tmp_path):
    """A kill -9 can leave a temp folder; a folder without meta.json is never trusted."""
    src = make_corpus(tmp_path / "data")
    good = load_corpus(src, "word", tmp_path / "cache").cache_path
    (good / "meta.json").unlink()
    (good / "train.bin").write_bytes(b"\0" * 4)  # garbage that must not be read
    stale = tmp_path / "cache" / f".{good.name}.tmp-dead"
    stale.mkdir()
    arrays = load_corpus(src, "word", tmp_path / "cache")
    assert arrays.vocab.decode(arrays.train)[:3] == ["the", "cat", "sat"]
    assert leftovers(tmp_path / "cache") == [good.name]


def test_missing_folder_or_split_names_path_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.*paths\.data_dir.*AWD_DATA_DIR"):
        load_corpus(tmp_path / "nope", "word", tmp_path / "cache")
    src = make_corpus(tmp_path / "data")
    (src / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.txt.*paths\.data_dir.*download"):
        load_corpus(src, "word", tmp_path / "cache")


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_split_is_an_error(tmp_path, text):
    src = make_corpus(tmp_path / "data", texts={**TINY, "valid": text})
    with pytest.raises(ValueError, match=r"valid\.txt"):
        load_corpus(src, "word", tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or leftovers(tmp_path / "cache") == []


def _build_and_report(src: str, cache_dir: str, log: str) -> None:
    real_build = cache._build

    def logged(*args, **kwargs):
        with open(log, "a") as f:
            f.write("built\n")
        real_build(*args, **kwargs)

    cache._build = logged
    load_corpus(Path(src), "word", Path(cache_dir))


def test_concurrent_processes_build_once(tmp_path):
    src = make_corpus(tmp_path / "data", texts={**TINY, "train": "the cat sat on a mat\n" * 3000})
    log = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_build_and_report, args=(str(src), str(tmp_path / "cache"), str(log)))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert log.read_text() == "built\n"
    assert len(leftovers(tmp_path / "cache")) == 1


MEMORY_PROBE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from src.data.cache import load_corpus
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    arrays = load_corpus(Path(sys.argv[1]), "word", Path(sys.argv[2]))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(len(arrays.train), (after - before) // 1024)
    """
)


@pytest.mark.slow
def test_build_memory_does_not_grow_with_corpus_size(tmp_path):
    """~21M tokens (wikitext-2 train x10): peak RSS growth stays far below the corpus size."""
    big = tmp_path / "big"
    big.mkdir()
    train = (CORPORA / "wikitext-2" / "train.txt").read_bytes()
    with open(big / "train.txt", "wb") as f:
        for _ in range(10):
            f.write(train)
    del train
    for split in ("valid", "test"):
        (big / f"{split}.txt").write_bytes((CORPORA / "wikitext-2" / f"{split}.txt").read_bytes())
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(big), str(tmp_path / "cache")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    tokens, growth_mb = int(out[0]), int(out[1])
    assert tokens == 10 * 2_088_628
    assert growth_mb < 400, f"peak RSS grew by {growth_mb} MB"
