"""Run every benchmark module in bench/ in turn: `python -m bench [name ...]`."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import bench


def main(argv: list[str]) -> int:
    """Run the named benchmarks (default: all `bench_*` modules) and return a process exit code."""
    found = pkgutil.iter_modules(bench.__path__)
    names = argv or sorted(m.name for m in found if m.name.startswith("bench_"))
    failed = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        code = module.main([])
        print(f"=== {name}: exit {code} in {time.perf_counter() - started:.1f} s ===", flush=True)
        if code:
            failed.append(name)
    if failed:
        print("benchmarks below target or failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
