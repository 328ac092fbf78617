"""A plain `pip install .` (what `make demo` does) carries every package the app imports at module level."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Modules that belong to an extra and are imported only when it is used (their tests say so).
EXTRA_MODULES = {"app/detection/train": "train", "app/detection/cluster.py": "cluster"}


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]).lower()


def _installed_closure(names: set[str]) -> set[str]:
    """The distributions and everything they require (their extras' requirements left out)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:  # a platform's alternative (onnxruntime vs onnxruntime-gpu)
            continue
        todo.extend(_name(r) for r in reqs if "extra ==" not in r)
    return seen


def _module_level_imports(path: Path) -> set[str]:
    """Top-level package names a module imports when it is imported (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_module_level_import_of_the_app_is_a_core_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # What a core install brings: the listed packages and what they require in turn (pydantic via fastapi).
    core = _installed_closure({_name(r) for r in project["dependencies"]})
    dists = packages_distributions()
    missing: dict[str, list[str]] = {}
    for path in sorted((ROOT / "app").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if any(rel.startswith(prefix) for prefix in EXTRA_MODULES):
            continue
        for name in _module_level_imports(path):
            if name in sys.stdlib_module_names or name in ("app", "__future__"):
                continue
            provided = {_name(d) for d in dists.get(name, [name])}
            if not provided & core:
                missing.setdefault(name, []).append(rel)
    assert not missing, f"imported by the app but not in [project] dependencies: {missing}"
