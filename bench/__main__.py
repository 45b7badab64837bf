"""Run every benchmark in `bench/` (each module with a `main()`), or the ones named.

.venv/bin/python -m bench [fanout api ...]
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    """The benchmark modules in this package, by name."""
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not m.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    """Import `bench.<name>` for each benchmark and call its `main()` with no arguments."""
    names = (argv if argv is not None else sys.argv[1:]) or available()
    status = 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== bench.{name}", flush=True)
        # An earlier benchmark may have built the app, which logs every request and send at INFO.
        logging.getLogger().setLevel(logging.WARNING)
        status = status or int(module.main([]) or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
