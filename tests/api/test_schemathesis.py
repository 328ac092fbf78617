"""A short schemathesis pass over the app's own OpenAPI schema: every answer is one the schema declares."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import get_client
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.db.session import make_engine, make_session_factory
from app.detection.decode import Detection
from app.main import create_app
from app.review.predictions import store_predictions
from app.review.users import create_user
from app.review.vocabulary import FLAG_REASONS
from tests.api.slice_data import KEY_SLICE, SliceDataset, build_slice_dataset

EXAMPLES_PER_OPERATION = 15
# The status code, content type and body of every answer must be ones the operation declares; never a 5xx.
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
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
# The scripted review session gets a dataset of its own: the generated requests change the first one.
SESSION_DATA, SESSION_APP = _build()
session_schema = schemathesis.openapi.from_asgi("/openapi.json", SESSION_APP)


@cache
def signed_in(app: FastAPI = APP) -> tuple[dict[str, str], dict[str, str]]:
    """Session cookie and CSRF header of a signed-in admin, so that write handlers are reached too."""
    with get_client(app) as client:  # type: ignore[arg-type]  # FastAPI is an ASGI app; stub too narrow
        r = client.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
        assert r.status_code == 200, r.text
        cookies = {k: str(v) for k, v in client.cookies.items()}
    return cookies, {"X-CSRF-Token": r.json()["csrf_token"]}


def checks_for(response: Any) -> list[Any]:
    """Every conformance check; a 503 no_model is the declared answer while no detector is loaded."""
    if response.status_code == 503:
        assert response.json()["code"] == "no_model", response.text[:500]
        return [c for c in CONFORMANCE if c is not not_a_server_error]
    return CONFORMANCE


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_answer_conforms_to_the_schema(case: schemathesis.Case) -> None:
    cookies, headers = signed_in()
    if case.path == "/api/auth/logout":
        # Signing the shared session out would leave every later operation at 401.
        cookies, headers = {}, {}
    response = case.call(cookies=cookies, headers=headers)
    case.validate_response(response, checks=checks_for(response))


def test_the_fuzzer_is_signed_in() -> None:
    cookies, headers = signed_in()
    with get_client(APP) as client:  # type: ignore[arg-type]
        me = client.get("/api/auth/me", cookies=cookies)
    assert me.status_code == 200 and me.json()["user"]["name"] == ADMIN


def _call(method: str, path: str, expect: int, **parts: Any) -> Any:
    """One request of a scripted session, checked by the same conformance checks as the generated ones."""
    cookies, headers = signed_in(SESSION_APP)
    case = session_schema[path][method].Case(**parts)
    response = case.call(cookies=cookies, headers=headers)
    case.validate_response(response, checks=checks_for(response))
    assert response.status_code == expect, f"{method} {path} -> {response.status_code}: {response.text[:500]}"
    return response.json() if "json" in str(response.headers.get("content-type")) else response


def _version(result: dict[str, Any], lesion_id: int) -> int:
    return next(int(le["version"]) for le in result["key_slice"]["lesions"] if le["id"] == lesion_id)


def test_a_review_session_conforms_to_the_schema() -> None:
    # Generated requests rarely name a real lesion with its current version, so the answers that carry
    # the review JSON (ReviewResult, KeySlice, Lesion, the 409 bodies) are walked through on purpose.
    fn = {"file_name": KEY_SLICE}
    with make_session_factory(make_engine(SESSION_DATA.settings.resolved_database_url()))() as session:
        found = [Detection((14.0, 14.0, 44.0, 44.0), 0.9), Detection((2.0, 2.0, 10.0, 10.0), 0.4)]
        store_predictions(session=session, file_name=KEY_SLICE, model_version="fake-1", detections=found)
    ks = _call("GET", "/api/key-slices/{file_name}", 200, path_parameters=fn)
    lesion_id = ks["lesions"][0]["id"]
    one = "/api/lesions/{lesion_id}"
    lid = {"lesion_id": lesion_id}
    stale = {"version": ks["lesions"][0]["version"]}
    result = _call("POST", one + "/confirm", 200, path_parameters=lid, body=stale)
    assert _call("POST", one + "/unflag", 409, path_parameters=lid, body=stale)["code"] == "edit_conflict"
    flag = {"version": _version(result, lesion_id), "reason": next(iter(FLAG_REASONS)), "note": "checked"}
    result = _call("POST", one + "/flag", 200, path_parameters=lid, body=flag)
    current = {"version": _version(result, lesion_id)}
    _call("POST", one + "/confirm", 422, path_parameters=lid, body=current)
    result = _call("POST", one + "/unflag", 200, path_parameters=lid, body=current)
    edit = {"version": _version(result, lesion_id), "lesion_type": 5}
    _call("PUT", one + "/geometry", 200, path_parameters=lid, body=edit)
    drawn = {"box": [2.0, 30.0, 12.0, 40.0], "lesion_type": 2, "slice_index": 107}
    added = _call("POST", "/api/key-slices/{file_name}/lesions", 201, path_parameters=fn, body=drawn)
    new = {"lesion_id": added["lesion_id"]}
    _call("DELETE", one, 200, path_parameters=new, query={"version": _version(added, added["lesion_id"])})
    preds = {p["score"]: p for p in added["key_slice"]["predictions"]}
    hit, miss = {"prediction_id": preds[0.9]["id"]}, {"prediction_id": preds[0.4]["id"]}
    accept = {"version": preds[0.9]["version"]}
    duplicate = _call(
        "POST", "/api/predictions/{prediction_id}/accept", 409, path_parameters=hit, body=accept
    )
    assert duplicate["code"] == "duplicate_lesion"
    accept["allow_duplicate"] = True
    _call("POST", "/api/predictions/{prediction_id}/accept", 200, path_parameters=hit, body=accept)
    reject = {"version": preds[0.4]["version"]}
    _call("POST", "/api/predictions/{prediction_id}/reject", 200, path_parameters=miss, body=reject)
    ks = _call("GET", "/api/key-slices/{file_name}", 200, path_parameters=fn)
    status = {"status": "done", "version": ks["status_version"]}
    _call("PUT", "/api/key-slices/{file_name}/status", 200, path_parameters=fn, body=status)
    _call("POST", "/api/key-slices/{file_name}/undo", 200, path_parameters=fn)
    _call("POST", "/api/key-slices/{file_name}/redo", 200, path_parameters=fn)
    assert _call("GET", "/api/key-slices/{file_name}/history", 200, path_parameters=fn)
    assert _call("GET", one + "/history", 200, path_parameters=lid)
    assert _call("GET", "/api/key-slices/{file_name}/predictions", 200, path_parameters=fn)["predictions"]
    _call("POST", "/api/key-slices/{file_name}/predict", 503, path_parameters=fn)
    assert _call("GET", "/api/key-slices", 200, query={"page_size": 500})["items"]
    _call("GET", "/api/key-slices/{file_name}/neighbours", 200, path_parameters=fn)
    _call("GET", "/api/stats", 200)
    _call("GET", "/api/exports/dl_info.csv", 200, query={"extras": True, "box_only": "omit"})
    _call("GET", "/api/exports/coco.json", 200)
    folder = {"series_folder": ks["series_folder"]}
    # The test series holds a corrupt PNG: the volume cannot be built, and the answer names the file.
    corrupt = _call("GET", "/api/exports/nifti/{series_folder}.zip", 422, path_parameters=folder)
    assert corrupt["code"] == "corrupt_slice" and corrupt["file"].startswith("Images_png/")
