"""`lesion-review serve` and `demo` pre-flight: refusals naming the fixing command, and demo data prep."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from app.cli import main
from app.config import Settings
from app.db.session import assert_schema_current, make_engine, make_session_factory, upgrade_database
from app.serving import ServeRefusedError, check_can_serve, demo_banner, is_loopback, prepare_demo


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts_are_recognised(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.org", "::", ""])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def migrated(tmp_path: Path, host: str) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", host=host, model_path=None)
    upgrade_database(settings.resolved_database_url())
    return settings


def test_unmigrated_database_is_refused_naming_migrate(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", model_path=None)
    with pytest.raises(ServeRefusedError, match="lesion-review migrate"):
        check_can_serve(settings)


def test_public_host_without_users_is_refused_naming_user_add(tmp_path: Path) -> None:
    with pytest.raises(ServeRefusedError, match="lesion-review user add NAME --role admin"):
        check_can_serve(migrated(tmp_path, "0.0.0.0"))


def test_loopback_without_users_may_serve(tmp_path: Path) -> None:
    assert check_can_serve(migrated(tmp_path, "127.0.0.1")) == 0


def test_public_host_with_a_user_may_serve(tmp_path: Path) -> None:
    from app.review.users import create_user

    settings = migrated(tmp_path, "0.0.0.0")
    engine = make_engine(settings.resolved_database_url())
    with make_session_factory(engine)() as session, session.begin():
        create_user(session=session, name="ada", password="correct horse battery", role="admin")
    engine.dispose()
    assert check_can_serve(settings) == 1


def test_serve_command_refuses_public_host_without_users(tmp_path: Path) -> None:
    settings = migrated(tmp_path, "127.0.0.1")
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(settings.data_dir), "--host", "0.0.0.0"])
    assert result.exit_code != 0
    assert "lesion-review user add NAME --role admin" in result.output


def test_serve_command_refuses_unmigrated_database(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "empty")])
    assert result.exit_code != 0
    assert "lesion-review migrate" in result.output


def count_rows(settings: Settings) -> tuple[int, int]:
    from app.db.models import KeySlice, Lesion

    engine = make_engine(settings.resolved_database_url())
    try:
        assert_schema_current(engine)
        with make_session_factory(engine)() as session:
            key_slices = session.scalar(select(func.count()).select_from(KeySlice)) or 0
            lesions = session.scalar(select(func.count()).select_from(Lesion)) or 0
    finally:
        engine.dispose()
    return key_slices, lesions


def test_demo_no_serve_generates_migrates_and_imports_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    args = ["demo", "--data-dir", str(data_dir), "--patients", "2", "--max-studies", "1", "--no-serve"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    steps = [line for line in first.output.splitlines() if line.startswith("==> ")]
    assert [s.split()[1] for s in steps] == ["generating", "migrating", "importing"], first.output
    # Each step's result is said once (the app's own INFO log lines would repeat them).
    assert first.output.count("new key slices") == 1, first.output
    assert (data_dir / "DL_info.csv").is_file() and (data_dir / "synth_truth.json").is_file()
    settings = Settings(data_dir=data_dir)
    key_slices, lesions = count_rows(settings)
    csv_rows = len((data_dir / "DL_info.csv").read_text().strip().splitlines()) - 1
    assert key_slices > 0 and lesions == csv_rows
    # A second run reuses the data and imports nothing new.
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert "==> using the existing demo data" in second.output
    assert count_rows(settings) == (key_slices, lesions)


def test_demo_banner_says_what_to_open_and_that_data_is_synthetic(tmp_path: Path) -> None:
    from app.serving import DemoData

    settings = Settings(data_dir=tmp_path, port=8123, model_path=None)
    text = demo_banner(DemoData(tmp_path, True, 3, "3 rows", False), settings)
    assert "http://127.0.0.1:8123" in text
    assert "SYNTHETIC" in text and "no detector model" in text


def test_demo_banner_names_the_automatic_user_as_the_page_header_shows_it(tmp_path: Path) -> None:
    from app.review.users import ensure_local_user
    from app.serving import DemoData

    settings = migrated(tmp_path, "127.0.0.1")
    engine = make_engine(settings.resolved_database_url())
    with make_session_factory(engine)() as session, session.begin():
        local = ensure_local_user(session=session)
    engine.dispose()
    text = demo_banner(DemoData(tmp_path, True, 3, "3 rows", False), settings)
    header = Path(__file__).resolve().parents[2] / "static" / "js" / "api.js"
    assert "`${me.user.name} (${me.user.role})`" in header.read_text(encoding="utf-8")
    assert f"as {local.name} ({local.role})" in text


def test_prepare_demo_on_existing_data_does_not_regenerate(tmp_path: Path) -> None:
    from app.deeplesion.csvio import write_dl_info
    from tests.api.slice_data import key_record

    data_dir = tmp_path / "d"
    data_dir.mkdir()
    write_dl_info(data_dir / "DL_info.csv", [key_record()])
    settings = Settings(data_dir=data_dir, model_path=None)
    first = prepare_demo(settings, patients=1)
    assert not first.generated and first.key_slices_added == 1
    assert prepare_demo(settings, patients=1).key_slices_added == 0


def test_demo_stopped_while_generating_generates_again_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.deeplesion.synth as synth

    real = synth.generate_dataset

    def interrupted(out_dir: Path, **kwargs: object) -> None:
        real(out_dir, **kwargs)  # type: ignore[arg-type]
        (out_dir / "Images_png" / "000001_01_01").mkdir(parents=True, exist_ok=True)
        raise KeyboardInterrupt  # Ctrl+C while the slices are still being written

    settings = Settings(data_dir=tmp_path / "demo", model_path=None)
    monkeypatch.setattr(synth, "generate_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_demo(settings, patients=1, max_studies=1)
    assert not (settings.data_dir / "DL_info.csv").exists()
    monkeypatch.setattr(synth, "generate_dataset", real)
    again = prepare_demo(settings, patients=1, max_studies=1)
    assert again.generated and again.key_slices_added > 0
    assert not settings.data_dir.with_name("demo.partial").exists()


def test_busy_port_is_refused_with_a_hint() -> None:
    import socket

    from app.serving import check_port_free

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeRefusedError, match="--port"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again once closed
