"""The integer engine gives the codes it gave before the AVX-512 work (issue 23): the int32
logits and the final h and c codes of two windows with the state carried, as
``tests/fixtures/int8_codes/record.py`` recorded them with the old code, on every path (the
native C kernel, the AVX2 and portable builds, the torch loop); the kernel's own int8 GEMM
(the AVX2 path's, where oneDNN's saturates) sums exactly; and the row-block loss is
``cross_entropy``'s, bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from src.quant.integer import export as qexport
from src.quant.integer import gemm, kernel, scoring
from tests.fixtures.int8_codes import record

EXPECTED = json.loads((record.HERE / "expected.json").read_text())
BUILDS = ["native", "avx2", "generic"]


def select(path: str, monkeypatch: pytest.MonkeyPatch) -> kernel.Kernel | None:
    """The engine's path for the test: ``AWD_INT8_ISA=path``, or the kernel off (torch)."""
    if path == "torch":
        monkeypatch.setenv(kernel.ENV_SWITCH, "0")
        return None
    monkeypatch.setenv(kernel.ISA_ENV, path)
    kern = kernel.load()
    if kern is None:
        pytest.skip("no C compiler: the engine uses the torch path")
    return kern


@pytest.mark.parametrize("path", [*BUILDS, "torch"])
@pytest.mark.parametrize("name", list(record.MODELS))
def test_the_engine_gives_the_recorded_codes(
    name: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    select(path, monkeypatch)
    lm, _ = qexport.load(record.HERE / f"{name}.int8.pt")
    for batch in record.BATCHES:
        got, want = record.outputs(lm, batch), EXPECTED[name][str(batch)]
        assert {k: got[k] for k in ("logits", "h", "c")} == {
            k: want[k] for k in ("logits", "h", "c")
        }, (path, batch)
        # the float log-softmax sums in ATen's vector width: the same bits on this CPU kind
        assert got["nll"] == pytest.approx(want["nll"], rel=1e-6, abs=0.0)


def exact(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x.to(torch.float64) @ w.to(torch.float64).t()).to(torch.int32)


@pytest.mark.parametrize("build", BUILDS)
def test_the_kernel_gemm_sums_exactly(build: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Full-range operands (where saturating int16 pair sums would be off), both signs at the
    extremes, K and G off the layouts' multiples, M off the row tiles."""
    kern = select(build, monkeypatch)
    g = torch.Generator().manual_seed(5)
    for M, K, G in [(1, 7, 5), (3, 37, 70), (10, 200, 97), (5, 256, 129)]:
        x = torch.randint(-128, 128, (M, K), generator=g, dtype=torch.int8)
        w = torch.randint(-128, 128, (G, K), generator=g, dtype=torch.int8)
        x[0], w[0], w[-1] = 127, -128, 127
        if M > 1:
            x[1] = -128
        out = torch.full((M, G + 3), -1, dtype=torch.int32)  # a strided output: row stride G + 3
        gemm.matmul(kern, x, kernel.pack_weight(w, kern.packed), out[:, :G])
        assert torch.equal(out[:, :G], exact(x, w)) and bool((out[:, G:] == -1).all())
        owner = torch.nn.Module()
        assert torch.equal(gemm.weight_gemm(kern, x, w, owner), exact(x, w))


@pytest.mark.parametrize("block_bytes", [1, 4096, 1 << 30])
def test_row_blocks_give_cross_entropys_bits(
    block_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scoring, "BLOCK_BYTES", block_bytes)
    lm, _ = qexport.load(record.HERE / "lstm.int8.pt")
    g = torch.Generator().manual_seed(1)
    h = torch.randint(-128, 128, (37, lm.decoder.weight.shape[1]), generator=g, dtype=torch.int8)
    y = torch.randint(lm.decoder.weight.shape[0], (37,), generator=g)
    want = F.cross_entropy(lm.decoder.dequantize(lm.decoder(h)), y, reduction="sum")
    assert scoring.blocked_nll(lm.decoder, h, y).item() == want.item()


def test_the_codes_hold_where_onednn_saturates() -> None:
    """An AVX2-only CPU's oneDNN (capped here with ``ONEDNN_MAX_CPU_ISA=AVX2``) sums int8 pairs
    in saturating int16: ``torch._int_mm`` is then inexact, and the engine must not use it. In a
    child process (the cap is read once), on the AVX2 build and with the kernel off."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    check = (
        "import json; from src.quant.integer import export; from tests.fixtures.int8_codes "
        "import record as r\nwant = json.loads((r.HERE / 'expected.json').read_text())\n"
        "for n in r.MODELS:\n lm, _ = export.load(r.HERE / f'{n}.int8.pt')\n for b in r.BATCHES:\n"
        "  got = r.outputs(lm, b)\n  assert all(got[k] == want[n][str(b)][k] for k in "
        "('logits', 'h', 'c')), (n, b)\nprint('ok')"
    )
    for env in ({"AWD_INT8_ISA": "avx2"}, {"AWD_INT_KERNEL": "0"}):
        full = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1", **env}
        proc = subprocess.run(
            [sys.executable, "-c", check], cwd=REPO, env=full, capture_output=True, text=True
        )
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", (env, proc.stderr[-2000:])
