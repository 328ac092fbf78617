"""Schemathesis over the review routes while signed in (with CSRF): no generated request may get a 5xx."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from app.config import Settings
from app.db.session import make_engine, upgrade_database
from app.main import create_app
from app.review.importer import import_dataset
from tests.api.conftest import PASSWORD, add_user
from tests.api.review_data import build_review_dataset

EXAMPLES_PER_OPERATION = 10
REVIEW_PREFIXES = (
    "/api/key-slices",
    "/api/lesions",
    "/api/predictions",
    "/api/stats",
    "/api/exports",
    "/api/auth",
)

# Schemathesis reads the schema at collection time, so the dataset and the session exist before tests run.
_TMP = Path(tempfile.mkdtemp(prefix="lesion_review_fuzz_"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
_DATA = _TMP / "data"
build_review_dataset(_DATA)
_URL = f"sqlite:///{_TMP / 'fuzz.sqlite'}"
upgrade_database(_URL)
_engine = make_engine(_URL)
import_dataset(engine=_engine, data_dir=_DATA)
_engine.dispose()
add_user(_URL, "fuzzer", "admin")
_APP = create_app(Settings(data_dir=_DATA, database_url=_URL, model_path=None), detector=None)
with TestClient(_APP) as _client:
    _login = _client.post("/api/auth/login", json={"username": "fuzzer", "password": PASSWORD})
    _HEADERS = {
        "Cookie": f"lesion_review_session={_login.cookies['lesion_review_session']}",
        "X-CSRF-Token": _login.json()["csrf_token"],
    }

schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@schema.include(path_regex="^(" + "|".join(REVIEW_PREFIXES) + ")").exclude(path_regex="logout").parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_signed_in_generated_requests_never_get_a_server_error(case: schemathesis.Case) -> None:
    response = case.call(headers=_HEADERS)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if case.formatted_path != "/api/auth/login":
        # The fuzzing really is signed in: otherwise it would only ever test the 401 path.
        assert response.status_code not in (401, 403), response.text[:300]
