"""Starting the server and the demo: pre-flight checks, demo data preparation, the console banner."""

from __future__ import annotations

import json
import logging
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from app.config import Settings
from app.config import is_loopback_name as is_loopback

log = logging.getLogger(__name__)

DEMO_SEED = 20180705  # fixed: everyone who runs the demo sees the same synthetic patients


class ServeRefusedError(RuntimeError):
    """The server must not start as configured; the message says which command fixes it."""


def settings_with(**overrides: object) -> Settings:
    """Settings from the environment with the given non-None values on top (command-line options)."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


def check_can_serve(settings: Settings) -> int:
    """Refuse an unmigrated database, or a non-loopback host while no user exists; returns the user count."""
    from app.db.session import SchemaOutdatedError, assert_schema_current, make_engine, make_session_factory
    from app.review.users import count_users

    engine = make_engine(settings.resolved_database_url())
    try:
        try:
            assert_schema_current(engine)
        except SchemaOutdatedError as exc:
            raise ServeRefusedError(str(exc)) from exc
        with make_session_factory(engine)() as session:
            users = count_users(session=session)
    finally:
        engine.dispose()
    if users == 0 and not is_loopback(settings.host):
        raise ServeRefusedError(
            f"refusing to serve on {settings.host}: the database has no users, and anyone who can reach this "
            "address would be signed in as the automatic local admin. Add one first: "
            "`lesion-review user add NAME --role admin`, or serve on 127.0.0.1"
        )
    return users


def serve_warnings(settings: Settings, *, workers: int = 1) -> list[str]:
    """Warnings `serve` prints about settings that weaken the security defaults (docs/reliability.md)."""
    warnings: list[str] = []
    if workers > 1 and settings.resolved_database_url().startswith("sqlite"):
        warnings.append(
            f"{workers} worker processes on SQLite: they share one database file and take turns writing; "
            "for a team use PostgreSQL (docs/deployment.md)"
        )
    if not settings.on_loopback():
        if settings.cookie_secure is False:
            warnings.append(
                f"serving on {settings.host} with LESION_REVIEW_COOKIE_SECURE=false: session cookies travel "
                "in clear text and anyone on the network path can take over a session; serve behind HTTPS "
                "and unset it"
            )
        elif settings.secure_cookies():
            warnings.append(
                f"serving on {settings.host}: session cookies are Secure, so browsers sign in only over "
                "HTTPS; put a TLS proxy in front (docs/deployment.md)"
            )
        if not settings.extra_allowed_hosts():
            warnings.append(
                f"serving on {settings.host} answers any Host name; set LESION_REVIEW_ALLOWED_HOSTS to the "
                "name(s) users type, e.g. review.example.org"
            )
    if settings.public_images:
        warnings.append("LESION_REVIEW_PUBLIC_IMAGES=true: plain slice images are served without sign-in")
    return warnings


def check_port_free(host: str, port: int) -> None:
    """Refuse early, with a clear message, when another program already listens on host:port."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Same option as uvicorn's own socket, so a port in TIME_WAIT is not reported as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise ServeRefusedError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another server running? "
                "Choose another port with --port"
            ) from exc


def worker_environment(settings: Settings) -> dict[str, str]:
    """The LESION_REVIEW_* variables from which each worker process rebuilds exactly these settings."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        key = f"LESION_REVIEW_{name.upper()}"
        # None is "no model" for MODEL_PATH, "automatic" for COOKIE_SECURE, "the default" for CACHE_DIR;
        # Settings reads each from "". Dicts (STORAGE_OPTIONS) travel as JSON, as a user writes them.
        if isinstance(value, dict):
            env[key] = json.dumps(value)
        else:
            env[key] = "" if value is None else str(value)
    return env


def run_server(settings: Settings, *, workers: int = 1) -> None:
    """Run uvicorn on settings.host:settings.port until interrupted, in `workers` processes."""
    import os

    import uvicorn

    if workers == 1:
        from app.main import create_app

        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
        return
    # Worker processes import the app by name and read their settings from the environment.
    os.environ.update(worker_environment(settings))
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_level="info",
    )


@dataclass(frozen=True)
class DemoData:
    """What prepare_demo found or made."""

    data_dir: Path
    generated: bool
    key_slices_added: int
    import_summary: str
    model_present: bool


def prepare_demo(
    settings: Settings,
    *,
    patients: int,
    max_studies: int | None = None,
    say: Callable[[str], None] = log.info,
) -> DemoData:
    """Generate the synthetic demo dataset when absent, migrate the database and import it (idempotent).

    `say` gets one line per step and one per result (results are indented), for the console story.
    """
    from app.db.session import make_engine, make_session_factory, upgrade_database
    from app.review.importer import import_dataset

    if isinstance(settings.data_dir, str):
        raise ServeRefusedError("the demo makes its synthetic data in a local folder, not on object storage")
    data_dir = settings.data_dir
    generated = False
    if not (data_dir / "DL_info.csv").is_file():
        from app.deeplesion.synth import generate_dataset

        say(f"generating the synthetic demo dataset ({patients} patients) in {data_dir}; first run only")
        # Generated beside the folder and moved in at the end, DL_info.csv last: a run stopped half-way
        # (Ctrl+C) leaves no DL_info.csv, so the next run generates again instead of serving half the slices.
        partial = data_dir.with_name(data_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        made = generate_dataset(
            partial, patients=patients, seed=DEMO_SEED, progress=True, max_studies=max_studies
        )
        _move_into(partial, data_dir, last="DL_info.csv")
        say(f"    {replace(made, out_dir=str(data_dir)).describe()}")
        generated = True
    else:
        say(f"using the existing demo data in {data_dir} (delete that folder to generate it again)")
    url = settings.resolved_database_url()
    say(f"migrating the database ({_printable_url(url)})")
    upgrade_database(url)
    say("importing DL_info.csv and the list of stored slices")
    engine = make_engine(url)
    try:
        summary = import_dataset(data_dir=data_dir, session_factory=make_session_factory(engine))
        say(f"    {summary.describe()}")
        from app.deeplesion.store import SliceStore
        from app.review.followup import run_matching

        with make_session_factory(engine)() as session:
            # The demo is small: its matching also compares the lesions' appearance on their slices.
            found = run_matching(session=session, store=SliceStore(data_dir))
        say(f"    follow-up: {found['proposed']} links proposed between the patients' studies")
    finally:
        engine.dispose()
    model = settings.model_path
    return DemoData(
        data_dir=data_dir,
        generated=generated,
        key_slices_added=summary.new_key_slices,
        import_summary=summary.describe(),
        model_present=bool(model and Path(model).is_file()),
    )


def _move_into(source: Path, target: Path, *, last: str) -> None:
    """Move every entry of source into target (replacing same-named ones), `last` last; remove source."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir(), key=lambda p: p.name == last):
        dest = target / entry.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        entry.replace(dest)
    source.rmdir()


def _printable_url(url: str) -> str:
    """The database URL without its password, for the console."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def demo_banner(demo: DemoData, settings: Settings) -> str:
    """The console message that says what to open and that nothing in the demo is real patient data."""
    from app.review.users import LOCAL_ROLE, LOCAL_USER

    url = f"http://127.0.0.1:{settings.port}"
    model = (
        f"a detector trained on synthetic images only ({settings.model_path})"
        if demo.model_present
        else "no detector model (review mode; `make train` builds one)"
    )
    bar = "=" * 72
    return "\n".join(
        [
            bar,
            f"  Lesion Review demo: open {url} in your browser",
            "",
            f"  Data: SYNTHETIC CT slices in {demo.data_dir}",
            "        (generated, DeepLesion layout; not patient data, not the NIH dataset)",
            f"  Model: {model}",
            f"  Signed in automatically as {LOCAL_USER} ({LOCAL_ROLE}) while no user exists (loopback only).",
            f"  API docs: {url}/docs     Stop: Ctrl+C",
            bar,
        ]
    )
