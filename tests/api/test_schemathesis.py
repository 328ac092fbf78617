"""A short schemathesis pass over the app's own OpenAPI schema: no generated request may get a 5xx."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.python.asgi import get_client

from app.db.session import make_engine, make_session_factory
from app.main import create_app
from app.review.users import create_user
from tests.api.slice_data import SliceDataset, build_slice_dataset

EXAMPLES_PER_OPERATION = 15
ADMIN, PASSWORD = "fuzz-admin", "fuzz-password-123"


def _build() -> tuple[SliceDataset, FastAPI]:
    # Schemathesis reads the schema at collection time and keeps the app's lifespan open for the
    # process, so the (tiny) dataset must exist before collection ends.
    tmp = Path(tempfile.mkdtemp(prefix="lesion_review_schemathesis_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    data = build_slice_dataset(tmp / "data")
    engine = make_engine(data.settings.resolved_database_url())
    with make_session_factory(engine)() as session, session.begin():
        create_user(session=session, name=ADMIN, password=PASSWORD, role="admin")
    engine.dispose()
    return data, create_app(data.settings, detector=None)


DATA, APP = _build()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@cache
def signed_in() -> tuple[dict[str, str], dict[str, str]]:
    """Session cookie and CSRF header of a signed-in admin, so that write handlers are reached too."""
    with get_client(APP) as client:  # type: ignore[arg-type]  # FastAPI is an ASGI app; stub too narrow
        r = client.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
        assert r.status_code == 200, r.text
        cookies = {k: str(v) for k, v in client.cookies.items()}
    return cookies, {"X-CSRF-Token": r.json()["csrf_token"]}


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case) -> None:
    cookies, headers = signed_in()
    if case.path == "/api/auth/logout":
        # Signing the shared session out would leave every later operation at 401.
        cookies, headers = {}, {}
    response = case.call(cookies=cookies, headers=headers)
    if response.status_code == 503:
        # The documented answer of model-backed operations while no detector is loaded.
        assert response.json()["code"] == "no_model", response.text[:500]
        return
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )


def test_the_fuzzer_is_signed_in() -> None:
    cookies, headers = signed_in()
    with get_client(APP) as client:  # type: ignore[arg-type]
        me = client.get("/api/auth/me", cookies=cookies)
    assert me.status_code == 200 and me.json()["user"]["name"] == ADMIN
