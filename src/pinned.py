"""Run an entry point with the CPU settings that give the same bits on every x86-64 machine.

    python -m src.pinned src.train experiment=smoke quant=qat
    python -m src.pinned src.eval ckpt_path=...

Sets :data:`src.utils.cpu.PINNED_ENV` (ATen's scalar kernels, MKL's compatible branch, oneDNN
capped at SSE4.1, one thread) and replaces this process with ``python -m <module> <args>``:
the variables must be in place before torch loads. Slower than the native paths; use it to
reproduce a number, not to train for speed.
"""

from __future__ import annotations

import os
import sys

from src.utils.cpu import PINNED_ENV, pinned_env


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        pins = " ".join(f"{k}={v}" for k, v in PINNED_ENV.items())
        print(f"usage: python -m src.pinned <module> [args...]  (runs it under {pins})")
        sys.exit(0 if args else 2)
    module, rest = args[0], args[1:]
    os.execve(sys.executable, [sys.executable, "-m", module, *rest], pinned_env())


if __name__ == "__main__":
    main()
