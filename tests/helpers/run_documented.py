"""Run documented ``python -m src.<entry> ...`` commands in one interpreter, in order, so the
imports (torch, Lightning, Hydra: most of a small command's time) are paid once.

Reads a JSON list of ``[module, [arguments...], stdout file]`` from standard input; runs each as
``python -m module arguments`` would (``runpy`` with ``__main__``), writes what it printed to its
file, and stops at the first one that exits with a non-zero status, with that status.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
from pathlib import Path


def main() -> int:
    for module, args, out in json.load(sys.stdin):
        sys.argv = [module, *args]
        printed, code = io.StringIO(), 0
        with contextlib.redirect_stdout(printed):
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
        Path(out).write_text(printed.getvalue())
        if code:
            print(f"python -m {module} {' '.join(args)}: exit status {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
