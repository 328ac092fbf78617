"""Who may call what: an endpoint x role matrix over every operation in the OpenAPI schema and every page."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.routing import APIRoute

from tests.api.conftest import PASSWORD, Api, add_user
from tests.api.test_security import KS, KS_STEM, api_routes

ANYONE, REVIEWER, ADJUDICATOR, ADMIN = "anyone", "reviewer", "adjudicator", "admin"
# Each role reaches what the roles below it reach: an adjudicator is a reviewer who also adjudicates.
RANK = {ANYONE: 0, REVIEWER: 1, ADJUDICATOR: 2, ADMIN: 3}

# The least role each operation needs. A route missing here (or a rule for a route that is gone) fails
# test_every_operation_has_exactly_one_rule: a new route must say who may call it.
ACCESS: dict[tuple[str, str], str] = {
    ("GET", "/api/health"): ANYONE,
    ("POST", "/api/auth/login"): ANYONE,
    ("GET", "/login"): ANYONE,
    ("GET", "/docs"): ANYONE,  # the API description, served offline
    ("GET", "/api/auth/me"): REVIEWER,
    ("POST", "/api/auth/logout"): REVIEWER,
    ("GET", "/"): REVIEWER,
    ("GET", "/viewer/{file_name}"): REVIEWER,
    ("GET", "/overview"): REVIEWER,
    ("GET", "/evaluation"): REVIEWER,
    ("GET", "/screening"): REVIEWER,
    ("GET", "/api/key-slices"): REVIEWER,
    ("GET", "/api/key-slices/{file_name}"): REVIEWER,
    ("GET", "/api/key-slices/{file_name}/history"): REVIEWER,
    ("GET", "/api/key-slices/{file_name}/neighbours"): REVIEWER,
    ("GET", "/api/key-slices/{file_name}/predictions"): REVIEWER,
    ("GET", "/api/lesions/{lesion_id}/history"): REVIEWER,
    ("GET", "/api/slices/{name}.raw"): REVIEWER,
    ("GET", "/api/slices/{name}.{fmt}"): REVIEWER,
    ("GET", "/api/stats"): REVIEWER,
    ("GET", "/api/evaluation"): REVIEWER,
    ("GET", "/api/evaluation/jobs"): REVIEWER,
    ("GET", "/api/evaluation/jobs/{job_id}"): REVIEWER,
    ("GET", "/api/evaluation/jobs/{job_id}/result"): REVIEWER,
    ("GET", "/api/screen"): REVIEWER,
    ("GET", "/api/screen/jobs"): REVIEWER,
    ("GET", "/api/screen/jobs/{job_id}"): REVIEWER,
    ("GET", "/api/jobs"): REVIEWER,
    ("GET", "/api/jobs/{job_id}"): REVIEWER,
    ("POST", "/api/key-slices/{file_name}/lesions"): REVIEWER,
    ("POST", "/api/key-slices/{file_name}/predict"): REVIEWER,
    ("POST", "/api/key-slices/{file_name}/redo"): REVIEWER,
    ("POST", "/api/key-slices/{file_name}/undo"): REVIEWER,
    ("PUT", "/api/key-slices/{file_name}/status"): REVIEWER,
    ("DELETE", "/api/lesions/{lesion_id}"): REVIEWER,
    ("POST", "/api/lesions/{lesion_id}/confirm"): REVIEWER,
    ("POST", "/api/lesions/{lesion_id}/flag"): REVIEWER,
    ("POST", "/api/lesions/{lesion_id}/unflag"): REVIEWER,
    ("PUT", "/api/lesions/{lesion_id}/geometry"): REVIEWER,
    ("POST", "/api/predictions/{prediction_id}/accept"): REVIEWER,
    ("POST", "/api/predictions/{prediction_id}/reject"): REVIEWER,
    ("GET", "/api/exports/coco.json"): ADMIN,
    ("GET", "/api/exports/dl_info.csv"): ADMIN,
    ("GET", "/api/exports/worklist.csv"): REVIEWER,  # the corrected rows of the reviewer's filtered work list
    ("GET", "/api/exports/nifti/{series_folder}.zip"): ADMIN,
    ("POST", "/api/evaluation"): ADMIN,
    ("POST", "/api/screen"): ADMIN,
    # Follow-up (#14): reading and correcting links is review work; matching and the graph export are admin.
    ("GET", "/followup/{file_name}"): REVIEWER,
    ("GET", "/api/followup/patients/{patient_index}"): REVIEWER,
    ("POST", "/api/followup/links"): REVIEWER,
    ("POST", "/api/followup/links/{link_id}/confirm"): REVIEWER,
    ("POST", "/api/followup/links/{link_id}/break"): REVIEWER,
    ("POST", "/api/followup/match"): ADMIN,
    ("GET", "/api/followup/graph.json"): ADMIN,
    ("GET", "/api/followup/graph.csv"): ADMIN,
    # Team review (#13): readers work their queue; adjudicators see disagreements and the report.
    ("GET", "/team"): REVIEWER,
    ("GET", "/team/reads/{read_id}"): REVIEWER,
    ("GET", "/team/adjudications"): REVIEWER,
    ("GET", "/team/report"): REVIEWER,
    ("GET", "/api/team/assignments"): REVIEWER,
    ("POST", "/api/team/assignments"): ADMIN,
    ("POST", "/api/team/assignments/{assignment_id}/next"): REVIEWER,
    ("GET", "/api/team/queue"): REVIEWER,
    ("GET", "/api/team/reads/{read_id}"): REVIEWER,
    ("PUT", "/api/team/reads/{read_id}"): REVIEWER,
    ("POST", "/api/team/reads/{read_id}/undo"): REVIEWER,
    ("POST", "/api/team/reads/{read_id}/redo"): REVIEWER,
    ("POST", "/api/team/reads/{read_id}/finish"): REVIEWER,
    ("POST", "/api/team/reads/{read_id}/reassign"): ADMIN,
    ("GET", "/api/team/adjudications"): ADJUDICATOR,
    ("GET", "/api/team/adjudications/{adjudication_id}"): ADJUDICATOR,
    ("POST", "/api/team/adjudications/apply-agreed"): ADJUDICATOR,
    ("POST", "/api/team/adjudications/{adjudication_id}/resolve"): ADJUDICATOR,
    ("POST", "/api/team/adjudications/{adjudication_id}/unresolve"): ADJUDICATOR,
    ("GET", "/api/team/report"): ADJUDICATOR,
    ("GET", "/api/team/report.csv"): ADJUDICATOR,
    # Volume screening (#16): an admin starts it; every reviewer reviews its candidates.
    ("GET", "/volume"): REVIEWER,
    ("POST", "/api/volume/screen"): ADMIN,
    ("GET", "/api/volume/screen"): REVIEWER,
    ("GET", "/api/volume/screen/jobs"): REVIEWER,
    ("GET", "/api/volume/screen/jobs/{job_id}"): REVIEWER,
    ("GET", "/api/volume/candidates"): REVIEWER,
    ("GET", "/api/volume/candidates/{candidate_id}"): REVIEWER,
    ("POST", "/api/volume/candidates/{candidate_id}/add"): REVIEWER,
    ("POST", "/api/volume/candidates/{candidate_id}/dismiss"): REVIEWER,
}


def _operations(api: Api) -> set[tuple[str, str]]:
    """Every (method, path) in the app's OpenAPI schema, plus the HTML pages it leaves out."""
    schema = api.client.app.openapi()  # type: ignore[attr-defined]
    found = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    for route in api_routes():
        if isinstance(route, APIRoute) and not route.include_in_schema:
            found |= {(method, route.path) for method in route.methods if method != "HEAD"}
    return found


def _url(path: str) -> str:
    samples = {"file_name": KS, "name": KS_STEM, "series_folder": "000001_01_01", "fmt": "png"}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: samples.get(m.group(1), "1"), path)


def _call(api: Api, method: str, path: str) -> httpx.Response:
    """One request as the client's current identity: reads plainly, writes with its CSRF header."""
    url = _url(path)
    if method == "GET":
        return api.client.get(url, follow_redirects=False)
    body = (
        {"username": "matrix_signin", "password": PASSWORD} if path == "/api/auth/login" else {"version": 0}
    )
    if getattr(api, "csrf", None):
        return api.write(method, url + "?version=0", json=body)  # type: ignore[return-value]
    return api.client.request(method, url + "?version=0", json=body)


def _refused(status: int, role: str, path: str) -> bool:
    """Whether the answer says "not for you": 401 (or the sign-in redirect for a page) / 403."""
    if role == ANYONE:
        return status == 401 or (not path.startswith("/api/") and status in (302, 303, 307))
    return status == 403


def _in_order(operations: set[tuple[str, str]]) -> list[tuple[str, str]]:
    # Logout, then sign-in, last: they change the identity the other calls use.
    last = [("POST", "/api/auth/logout"), ("POST", "/api/auth/login")]
    return sorted(operations, key=lambda op: (last.index(op) if op in last else -1, op))


def test_every_operation_has_exactly_one_rule(api: Api) -> None:
    operations = _operations(api)
    assert len(operations) >= 40
    missing = sorted(operations - ACCESS.keys())
    stale = sorted(ACCESS.keys() - operations)
    assert not missing, f"routes with no access rule in ACCESS: {missing}"
    assert not stale, f"ACCESS rules for routes that no longer exist: {stale}"


@pytest.mark.parametrize("role", [ANYONE, REVIEWER, ADJUDICATOR, ADMIN])
def test_each_role_reaches_exactly_what_its_rule_allows(api: Api, role: str) -> None:
    add_user(api.database_url, "matrix_signin")
    if role != ANYONE:
        api.login(f"matrix_{role}", role)
    wrong: list[str] = []
    for method, path in _in_order(_operations(api)):
        allowed = RANK[role] >= RANK[ACCESS[(method, path)]]
        answer = _call(api, method, path)
        status = answer.status_code
        refused = _refused(status, role, path) or (role != ANYONE and status == 401)
        # The app runs without a model here: detector routes that let the caller through say so with 503.
        no_model = status == 503 and answer.json().get("code") == "no_model"
        if (status >= 500 and not no_model) or allowed == refused:
            wrong.append(
                f"{method} {path} as {role}: {status} ({'allowed' if allowed else 'refused'} by rule)"
            )
    assert not wrong, "\n".join(wrong)
