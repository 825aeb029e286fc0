"""The standalone C runtime (``python -m src.export format=c``): built from the exported folder,
it computes the engine's h and c codes at every step (LSTM, and an mLSTM with peepholes, cell
clip and projection; both builds), scores a text file like ``src.eval engine=int8``, samples
the engine's text, and refuses broken model files with one line."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from src.checks import problems
from src.data.corpus import Vocab, tokenize
from src.eval import load_integer_model
from src.quant.integer import kernel, model_bin, runtime_export
from src.quant.integer.runtime_export import SOURCES
from tests.conftest import CONF_DIR, write_tiny_corpus
from tests.deploy.runtime_helpers import (
    build,
    export_cli,
    last_json,
    needs_cc,
    python_generate,
    python_trace,
    run,
    trace_codes,
)

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
MODELS = ["lstm_qat", "mlstm_qat"]  # the mLSTM has peepholes, cell_clip and a projection


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy")
    write_tiny_corpus(root / "corpora")
    return root


@pytest.fixture(scope="module")
def exported(tiny: Path) -> dict[str, dict]:
    """Each fixture checkpoint exported with format=c, and its engine; the runtime built from
    the first folder, native (``make``), AVX2 and generic (the sources are the same in every
    one)."""
    out, builds = {}, {}
    for name in MODELS:
        folder = tiny / name
        report = export_cli(f"ckpt_path={LEGACY / name}.ckpt", "format=c", f"out={folder}")
        lm, meta = load_integer_model(LEGACY / f"{name}.ckpt")  # what engine=int8 runs
        if kernel.compiler() is not None and not builds:
            builds = {"native": build(folder), "generic": build(folder, generic=True)}
            avx2 = folder / "awd_int8_avx2"  # an AVX2-only CPU's code (make avx2)
            builds["avx2"] = runtime_export.build(folder, avx2, isa="avx2")
        out[name] = {"folder": folder, "report": report, "lm": lm, "meta": meta, **builds}
    return out


def test_export_writes_model_bin_and_the_sources(exported: dict[str, dict]) -> None:
    report = exported["lstm_qat"]["report"]
    folder = exported["lstm_qat"]["folder"]
    assert report["format"] == "c" and set(report["files"]) == set(SOURCES)
    assert report["bytes"] == (folder / "model.bin").stat().st_size
    assert all((folder / name).is_file() for name in SOURCES)
    header = model_bin.read_header(folder / "model.bin")
    assert header["version"] == model_bin.VERSION
    # the kernel's own source is what the runtime compiles: one copy of the recurrence
    assert (folder / "int_lstm.c").read_bytes() == kernel.SOURCE.read_bytes()


def test_an_exported_int8_file_gives_the_same_model_bin(exported: dict, tmp_path: Path) -> None:
    export_cli(f"ckpt_path={LEGACY / 'lstm_qat.int8.pt'}", "format=c", f"out={tmp_path}")
    want = (exported["lstm_qat"]["folder"] / "model.bin").read_bytes()
    assert (tmp_path / "model.bin").read_bytes() == want


@needs_cc
@pytest.mark.parametrize("build_kind", ["native", "avx2", "generic"])
@pytest.mark.parametrize("name", MODELS)
def test_the_same_h_and_c_codes_at_every_step(
    name: str, build_kind: str, exported: dict, tiny: Path
) -> None:
    """Every layer's h and c codes after every token of the test file: the runtime against the
    engine, with its C kernel and with the torch step loop (AWD_INT_KERNEL=0)."""
    entry = exported[name]
    text = tiny / "corpora" / "tiny" / "test.txt"
    got = trace_codes(run(entry[build_kind], entry["folder"] / "model.bin", "trace", text).stdout)
    vocab = Vocab(entry["meta"]["vocab"])
    ids = [vocab.stoi[t] for line in tokenize(text, "word") for t in line.tokens]
    assert len(got) == 2 * len(ids) * len(entry["lm"].layers)
    assert got == python_trace(entry["lm"], ids)
    kernel.set_enabled(False)
    try:
        assert got == python_trace(entry["lm"], ids)
    finally:
        kernel.set_enabled(None)


def evaluate_int8(ckpt: Path, tiny: Path) -> dict:
    from src.eval import evaluate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=[
                f"ckpt_path={ckpt}",
                "engine=int8",
                "split=test",
                "batch_size=1",
                f"paths.data_dir={tiny / 'corpora'}",
                f"paths.cache_dir={tiny / 'cache'}",
                f"out={tiny / 'eval.json'}",
            ],
        )
    return evaluate(cfg)


@needs_cc
@pytest.mark.parametrize("name", MODELS)
def test_score_agrees_with_engine_int8(name: str, exported: dict, tiny: Path) -> None:
    entry = exported[name]
    text = tiny / "corpora" / "tiny" / "test.txt"
    proc = run(entry["native"], entry["folder"] / "model.bin", "score", text)
    result = last_json(proc.stdout)
    assert set(result) == {"tokens", "loss", "ppl", "tokens_per_s"}
    n_tokens = sum(len(line.tokens) for line in tokenize(text, "word"))
    assert result["tokens"] == n_tokens - 1  # every token after the first is predicted
    want = evaluate_int8(LEGACY / f"{name}.ckpt", tiny)
    assert math.isclose(result["loss"], want["loss"], rel_tol=1e-6)
    assert math.isclose(result["ppl"], math.exp(result["loss"]), rel_tol=1e-12)
    generic = last_json(run(entry["generic"], entry["folder"] / "model.bin", "score", text).stdout)
    assert generic["loss"] == result["loss"]


@needs_cc
@pytest.mark.parametrize("name", MODELS)
def test_generate_prints_the_engines_text(name: str, exported: dict) -> None:
    """T = 0: the integer argmax; T > 0: splitmix64 draws from the dequantized softmax; the same
    seed prints the same text, another seed another."""
    entry = exported[name]
    binary, model = entry["native"], entry["folder"] / "model.bin"
    lm, meta = entry["lm"], entry["meta"]

    def gen(*args: str) -> str:
        return run(binary, model, "generate", *args).stdout

    assert gen("--tokens", "40", "--temperature", "0") == python_generate(lm, meta, 40, 0.0, 141)
    prompt = "the big dog"
    want = python_generate(lm, meta, 25, 0.0, 1, prompt=prompt)
    assert gen("--tokens", "25", "--temperature", "0", "--prompt", prompt) == want
    sampled = gen("--tokens", "60", "--temperature", "0.8", "--seed", "7")
    assert sampled == python_generate(lm, meta, 60, 0.8, 7)
    assert sampled == gen("--tokens", "60", "--temperature", "0.8", "--seed", "7")
    assert sampled != gen("--tokens", "60", "--temperature", "0.8", "--seed", "8")


def one_error_line(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("awd_int8: error: "), proc.stderr
    assert re.search(pattern, lines[0]), lines[0]


@needs_cc
def test_a_broken_model_bin_is_refused_with_one_line(exported: dict, tmp_path: Path) -> None:
    entry = exported["lstm_qat"]
    blob = (entry["folder"] / "model.bin").read_bytes()
    text = tmp_path / "t.txt"
    text.write_text("the cat sat\n")
    cases = {
        "magic": (b"XWD" + blob[3:], "bad magic"),
        "truncated": (blob[: len(blob) // 2], "truncated"),
        "header only": (blob[:20], "truncated"),
        "payload byte": (blob[:5000] + bytes([blob[5000] ^ 1]) + blob[5001:], "CRC-32"),
        "trailing": (blob + b"\0", "trailing"),
        "version": (blob[:8] + b"\x07" + blob[9:], "version 7"),
    }
    for name, (data, pattern) in cases.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        one_error_line(run(entry["native"], path, "score", text, check=False), pattern)
    one_error_line(run(entry["native"], tmp_path / "missing.bin", "info", check=False), "open")
    with pytest.raises(ValueError, match="bad magic"):
        model_bin.read_header(tmp_path / "magic.bin")
    with pytest.raises(ValueError, match="CRC-32"):
        model_bin.read_header(tmp_path / "payload byte.bin")


@needs_cc
def test_bad_input_text_and_command_lines(exported: dict, tmp_path: Path) -> None:
    entry = exported["lstm_qat"]
    binary, model = entry["native"], entry["folder"] / "model.bin"
    bad = tmp_path / "bad.txt"
    bad.write_text("the zebra sat\n")  # no <unk> in this vocabulary
    one_error_line(run(binary, model, "score", bad, check=False), "line 1: token 'zebra'")
    bad.write_bytes(b"the \xff cat\n")
    one_error_line(run(binary, model, "score", bad, check=False), "invalid UTF-8")
    one_error_line(run(binary, model, "score", tmp_path / "none.txt", check=False), "open")
    assert run(binary, model, "fly", check=False).returncode == 2
    assert run(binary, model, "generate", "--tokens", "-3", check=False).returncode == 2
    info = last_json(run(binary, model, "info").stdout)
    assert info["vocab_size"] == len(entry["meta"]["vocab"]) and len(info["layers"]) == 2


def test_the_shared_kernel_sources_are_integer_only() -> None:
    for path in (kernel.SOURCE, kernel.HEADER):
        code = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
        assert not re.search(r"\b(float|double|_Float\d*|__m512[dh]?\b|_ps\b|_pd\b)", code)


def compose_problems(name: str, *overrides: str) -> list[str]:
    from tests.test_config_checks import compose_any

    return [e.line() for e in problems(compose_any(name, overrides, Path.cwd()))]


def test_the_new_keys_are_checked_up_front(tmp_path: Path) -> None:
    ckpt = LEGACY / "lstm_qat.ckpt"
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"")
    (tmp_path / "file").write_text("")
    assert compose_problems("export", f"ckpt_path={ckpt}", "format=c") == []
    assert compose_problems("export", f"ckpt_path={ckpt}", "format=c", f"out={tmp_path}/file") == [
        f"config error: out={tmp_path}/file: expected a folder for format=c (model.bin and the "
        "runtime's sources)"
    ]
    (line,) = compose_problems("export", f"ckpt_path={ckpt}", "format=onnx", "out=m.pt")
    assert "ending in .onnx" in line
    (line,) = compose_problems("eval", f"ckpt_path={onnx}")
    assert line == "config error: engine=float: expected onnxruntime for an .onnx file"
    (line,) = compose_problems("eval", f"ckpt_path={ckpt}", "engine=onnxruntime")
    assert "expected an .onnx file" in line
    assert compose_problems("eval", f"ckpt_path={onnx}", "engine=onnxruntime") == []


def test_model_bin_round_trips_the_engine_constants(exported: dict) -> None:
    """The records hold the engine's integers as they are (spot checks in Python)."""
    blob = (exported["mlstm_qat"]["folder"] / "model.bin").read_bytes()
    lm = exported["mlstm_qat"]["lm"]
    weight = lm.embedding.weight
    at = blob.index(b"EMBW")
    assert int.from_bytes(blob[at + 8 : at + 12], "little") == weight.numel()
    got = torch.frombuffer(bytearray(blob[at + 12 : at + 12 + weight.numel()]), dtype=torch.int8)
    assert torch.equal(got.view_as(weight), weight)


CHAR_MODELS = {  # 17 tokens each, for the 17-row fixture model
    "char": (["<eos>", *"abcdefghijklmn ", "é"], "char"),  # every character, UTF-8
    "ptb-char": (["<eos>", "<unk>", *"abcdefghijklmn", "_"], "word"),  # spaced, "_" a space
}


@needs_cc
@pytest.mark.parametrize("kind", list(CHAR_MODELS))
def test_character_level_models(kind: str, exported: dict, tmp_path: Path) -> None:
    """Character tokenization (multi-byte UTF-8 included), PTB-char's spaced symbols with "_"
    as the space, and <unk> for an unknown symbol: scores and text as the Python side's."""
    entry = exported["lstm_qat"]
    itos, tokenizer = CHAR_MODELS[kind]
    meta = {"vocab": itos, "data": {"tokenizer": tokenizer, "char_level": True}}
    model = tmp_path / "model.bin"
    model_bin.write(model, entry["lm"], meta, "interpolated")
    text = tmp_path / "t.txt"
    if tokenizer == "char":
        text.write_text("abc éd ma\nnaé\n\nlmk", encoding="utf-8")
    else:
        text.write_text("a b _ c z d\n n _ m\n\nl m k", encoding="utf-8")
    got = last_json(run(entry["native"], model, "score", text).stdout)
    ids = Vocab(itos).encode(t for line in tokenize(text, tokenizer) for t in line.tokens)
    ids = torch.from_numpy(ids).long().unsqueeze(1)
    nll, _ = entry["lm"].score(ids[:-1], ids[1:])
    assert got["tokens"] == len(ids) - 1
    assert math.isclose(got["loss"], float(nll) / (len(ids) - 1), rel_tol=1e-6)
    for temperature in ("0", "0.9"):
        printed = run(
            entry["native"],
            model,
            "generate",
            "--tokens",
            "30",
            "--temperature",
            temperature,
            "--seed",
            "3",
            "--prompt",
            "ab c",
        ).stdout
        assert printed == python_generate(entry["lm"], meta, 30, float(temperature), 3, "ab c")
