"""Every JSON route declares its answers (app/api/schemas.py); the error models fit what errors.py sends."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, TypeAdapter

from app.api import schemas
from app.api.errors import deeplesion_error_response, install_error_handlers, review_error_response
from app.api.security import WRITE_METHODS, require_admin, require_user
from app.config import Settings
from app.deeplesion.errors import CorruptSliceError, InvalidWindowError, SliceNotFoundError
from app.deeplesion.schema import LESION_TYPES, SPLITS
from app.main import ROUTERS, create_app
from app.review.errors import EditConflictError, JobRunningError, NotFoundError
from app.review.jobs import JOB_STATUSES
from app.review.vocabulary import ALL_FLAG_REASONS, LAYERS, ORIGINS, REVIEW_STATES, STATUSES


def _walk(dependant: Any) -> list[Any]:
    found = [dependant]
    for sub in dependant.dependencies:
        found += _walk(sub)
    return found


def _calls(route: APIRoute) -> set[Any]:
    return {d.call for d in _walk(route.dependant)}


def _params(route: APIRoute, kind: str) -> list[Any]:
    return [p for d in _walk(route.dependant) for p in getattr(d, f"{kind}_params")]


def _has_parameters(route: APIRoute) -> bool:
    # FastAPI documents a 422 for every route with parameters: it must be this app's body, not FastAPI's.
    return any(_params(route, kind) for kind in ("path", "body", "query", "header", "cookie"))


def expected_error_statuses(route: APIRoute) -> set[int]:
    """The error statuses a route's own dependencies and parameters can answer with."""
    calls = _calls(route)
    expected: set[int] = set()
    if require_user in calls:
        expected.add(401)
        if require_admin in calls or route.methods & WRITE_METHODS:
            expected.add(403)
    if _params(route, "path"):
        expected.add(404)
    if _has_parameters(route):
        expected.add(422)
    return expected


def api_routes(routers: Iterable[APIRouter]) -> list[APIRoute]:
    """The routes of the JSON API (pages stay out of the schema; static files and docs are no APIRoute)."""
    return [r for router in routers for r in router.routes if isinstance(r, APIRoute) and r.include_in_schema]


def undeclared(routes: Iterable[APIRoute]) -> list[str]:
    """Each JSON route without a declared success body, or missing an error it can answer with."""
    problems: list[str] = []
    for route in routes:
        label = f"{sorted(route.methods)} {route.path}"
        status = route.status_code or 200
        success = route.responses.get(status, route.responses.get(str(status), {}))
        # `-> Any` makes FastAPI set response_model=Any: that declares nothing.
        if route.response_model in (None, Any) and not ({"model", "content"} & set(success)):
            problems.append(f"{label}: no model or content for {status}")
        declared = {int(code) for code in route.responses if str(code).isdigit() and int(code) >= 400}
        missing = expected_error_statuses(route) - declared
        if missing:
            problems.append(f"{label}: errors {sorted(missing)} not declared")
        for code in declared:
            if "model" not in route.responses.get(code, route.responses.get(str(code), {})):
                problems.append(f"{label}: {code} has no body model")
    return problems


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(Settings(data_dir=tmp_path_factory.mktemp("empty")), detector=None)


def test_every_json_route_declares_its_body_and_its_errors() -> None:
    assert undeclared(api_routes(ROUTERS)) == []


def test_the_checked_routes_are_every_operation_of_the_schema(app: FastAPI) -> None:
    checked = {(m, r.path) for r in api_routes(ROUTERS) for m in r.methods}
    operations = {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}
    assert checked == operations


def test_no_route_documents_fastapis_own_422_body(app: FastAPI) -> None:
    # errors.py reshapes every validation error into {detail, code, errors}: FastAPI's body never goes out.
    assert "HTTPValidationError" not in json.dumps(app.openapi()["paths"])


def test_a_route_without_declarations_is_reported() -> None:
    router = APIRouter()

    @router.post("/api/things/{thing_id}")
    def post_thing(thing_id: int, user: Any = Depends(require_user)) -> Any:
        return {}

    assert undeclared(api_routes([router])) == [
        "['POST'] /api/things/{thing_id}: no model or content for 200",
        "['POST'] /api/things/{thing_id}: errors [401, 403, 404, 422] not declared",
    ]


def _enum(model: type[BaseModel], field: str) -> list[Any]:
    prop = model.model_json_schema(mode="serialization")["properties"][field]
    for option in prop.get("anyOf", [prop]):
        if "enum" in option:
            return list(option["enum"])
    raise AssertionError(f"{model.__name__}.{field} enumerates nothing: {prop}")


@pytest.mark.parametrize(
    ("model", "field", "words"),
    [
        (schemas.Lesion, "origin", ORIGINS),
        (schemas.Lesion, "review", REVIEW_STATES),
        (schemas.Lesion, "layer", LAYERS),
        (schemas.Flag, "reason", ALL_FLAG_REASONS),
        (schemas.KeySliceSummary, "status", STATUSES),
        (schemas.KeySliceSummary, "split", SPLITS.values()),
        (schemas.Geometry, "lesion_type", LESION_TYPES),
        (schemas.DetectorJob, "status", JOB_STATUSES),
    ],
)
def test_the_schema_enumerates_the_vocabulary(model: type[BaseModel], field: str, words: Any) -> None:
    assert _enum(model, field) == list(words)


def test_the_counts_have_one_field_per_status() -> None:
    assert list(schemas.StatusCounts.model_fields) == ["total", *STATUSES]


def _body(response: Any) -> Any:
    return json.loads(bytes(response.body))


def test_the_error_models_fit_what_the_handlers_send(tmp_path: Path) -> None:
    data = tmp_path / "data"
    slice_path = data / "Images_png" / "000001_01_01" / "109.png"
    not_found = _body(deeplesion_error_response(SliceNotFoundError(str(slice_path)), data))
    assert schemas.FileError.model_validate(not_found).file == "Images_png/000001_01_01/109.png"
    corrupt = _body(deeplesion_error_response(CorruptSliceError(str(slice_path), "truncated"), data))
    schemas.FileError.model_validate(corrupt)
    invalid = TypeAdapter(schemas.DEFAULT_ERROR_BODIES[422])
    invalid.validate_python(_body(deeplesion_error_response(InvalidWindowError("width < 1"), data)))
    schemas.Error.model_validate(_body(review_error_response(NotFoundError("no lesion 9"))))
    running = _body(review_error_response(JobRunningError("busy", job=None)))
    schemas.JobRunning.model_validate(running)


def test_an_edit_conflict_carries_what_the_model_declares() -> None:
    conflict = EditConflictError("stale", current={"id": 1, "version": 3}, changed_by="ann", changed_at=None)
    body = _body(review_error_response(conflict))
    required = {n for n, f in schemas.EditConflict.model_fields.items() if f.is_required()}
    assert required <= set(body), body
    assert set(body) <= set(schemas.EditConflict.model_fields), body


def test_an_edit_conflict_says_when_in_utc() -> None:
    # SQLite hands back naive datetimes that were stored as UTC: the answer must still carry the zone.
    naive = datetime(2026, 12, 1, 22, 5, 32)
    body = _body(review_error_response(EditConflictError("stale", current={}, changed_at=naive)))
    assert datetime.fromisoformat(body["changed_at"]) == naive.replace(tzinfo=UTC)


def test_a_request_validation_error_fits_its_model() -> None:
    bare = FastAPI()
    install_error_handlers(bare)

    @bare.get("/api/n")
    def get_n(n: int) -> Any:
        return {}

    with TestClient(bare) as client:
        missing, wrong = client.get("/api/n"), client.get("/api/n", params={"n": "x"})
    for response in (missing, wrong):
        assert response.status_code == 422
        body = schemas.InvalidRequest.model_validate(response.json())
        assert body.code == "invalid_input" and body.errors
