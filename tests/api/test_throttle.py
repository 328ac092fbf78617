"""Sign-in throttling in the database: atomic under parallel attempts, per name and client, per client."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.db.models import LoginAttempt
from app.db.session import make_engine, make_session_factory
from app.review.errors import TooManyAttemptsError
from app.review.throttle import CLIENT, NAME, PAIR, WINDOW, reserve_attempt


@pytest.fixture
def factory(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url, pool_size=20, max_overflow=40)
    yield make_session_factory(engine)
    engine.dispose()


def _try(factory, name: str, client: str) -> bool:  # type: ignore[no-untyped-def]
    with factory() as session:
        try:
            reserve_attempt(session=session, name=name, client=client)
        except TooManyAttemptsError:
            return False
        return True


def test_parallel_attempts_for_one_name_from_one_client_let_exactly_the_limit_through(factory) -> None:  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(max_workers=30) as pool:
        allowed = list(pool.map(lambda _: _try(factory, "gina", "10.0.0.9"), range(60)))
    assert allowed.count(True) == PAIR.attempts


def test_a_guesser_does_not_lock_the_name_out_for_another_client(factory) -> None:  # type: ignore[no-untyped-def]
    for _ in range(PAIR.attempts):
        assert _try(factory, "gina", "10.0.0.9")
    assert not _try(factory, "gina", "10.0.0.9")
    assert _try(factory, "gina", "10.0.0.10")


def test_spraying_many_names_from_one_client_is_stopped(factory) -> None:  # type: ignore[no-untyped-def]
    results = [_try(factory, f"user{i}", "10.0.0.7") for i in range(CLIENT.attempts + 3)]
    assert results.count(True) == CLIENT.attempts and not any(results[CLIENT.attempts :])


def test_one_name_from_many_clients_is_capped_and_the_window_passes(factory) -> None:  # type: ignore[no-untyped-def]
    results = [_try(factory, "hana", f"10.1.{i // 200}.{i % 200}") for i in range(NAME.attempts + 2)]
    assert results.count(True) == NAME.attempts
    with factory() as session:  # the window passes
        session.execute(
            update(LoginAttempt).values(
                window_start=LoginAttempt.window_start - WINDOW - timedelta(seconds=1)
            )
        )
        session.commit()
    assert _try(factory, "hana", "10.2.0.1")


def test_sign_in_counts_attempts_across_server_processes(app_settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.api.conftest import add_user

    add_user(database_url, "ivan")
    bad = {"username": "ivan", "password": "not-his-password"}
    # Two apps on one database stand for two worker processes: an in-memory counter would give 2 x 5 tries.
    with (
        TestClient(create_app(app_settings, detector=None)) as a,
        TestClient(create_app(app_settings, detector=None)) as b,
    ):
        codes = [
            (a if i % 2 else b).post("/api/auth/login", json=bad).status_code
            for i in range(PAIR.attempts + 2)
        ]
    assert codes == [401] * PAIR.attempts + [429, 429]


def test_good_sign_ins_from_one_address_never_count_against_it(app_settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.api.conftest import PASSWORD, add_user

    add_user(database_url, "jo")
    # A team behind one address signs in far more often than the spraying limit allows failures.
    with TestClient(create_app(app_settings, detector=None)) as c:
        codes = {
            c.post("/api/auth/login", json={"username": "jo", "password": PASSWORD}).status_code
            for _ in range(CLIENT.attempts + 5)
        }
    assert codes == {200}
