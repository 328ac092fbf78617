"""Run benchmarks: `python -m bench [name ...]`, or one with its options: `python -m bench name --opt ...`."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import bench

USAGE = "usage: python -m bench [bench_name ...] | python -m bench bench_name [--option ...]"


def available() -> list[str]:
    """The benchmark modules in bench/."""
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))


def main(argv: list[str]) -> int:
    """Run the named benchmarks (default: all) and return a process exit code; 2 for a bad command line."""
    # Names come first; everything from the first option on belongs to the one benchmark named.
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:split] or available(), argv[split:]
    if options and len(argv[:split]) != 1:
        print(f"options ({' '.join(options)}) go to exactly one named benchmark\n{USAGE}", file=sys.stderr)
        return 2
    unknown = [n for n in names if n not in available() and f"bench.{n}" not in sys.modules]
    if unknown:
        print(f"no benchmark {', '.join(unknown)}; there are: {', '.join(available())}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        code = module.main(options)
        print(f"=== {name}: exit {code} in {time.perf_counter() - started:.1f} s ===", flush=True)
        if code:
            failed.append(name)
    if failed:
        print("benchmarks below target or failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
