"""`python -m bench`: names, then one benchmark's options; bad command lines get a clear error."""

from __future__ import annotations

import sys
import types

import pytest


def _fake(monkeypatch: pytest.MonkeyPatch, name: str, seen: list[list[str]]) -> None:
    module = types.ModuleType(f"bench.{name}")

    def main(argv: list[str]) -> int:
        seen.append(list(argv))
        return 0

    module.main = main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, f"bench.{name}", module)


def test_options_after_a_name_go_to_that_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.__main__ import main

    seen: list[list[str]] = []
    _fake(monkeypatch, "bench_fake_a", seen)
    assert main(["bench_fake_a", "--no-record", "--patients", "6"]) == 0
    assert seen == [["--no-record", "--patients", "6"]]


def test_options_with_several_names_or_none_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.__main__ import main

    seen: list[list[str]] = []
    _fake(monkeypatch, "bench_fake_a", seen)
    _fake(monkeypatch, "bench_fake_b", seen)
    assert main(["bench_fake_a", "bench_fake_b", "--no-record"]) == 2
    assert main(["--no-record"]) == 2
    assert seen == [] and "exactly one named benchmark" in capsys.readouterr().err


def test_an_unknown_benchmark_is_named_with_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.__main__ import available, main

    assert main(["bench_nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "no benchmark bench_nonexistent" in err and "bench_volume" in available() and "bench_volume" in err
