"""Who may call each team route: a role matrix over every team operation (the same shape as main's ACCESS)."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute

from tests.api.conftest import Api
from tests.api.test_security import api_routes

ANYONE, REVIEWER, ADJUDICATOR, ADMIN = "anyone", "reviewer", "adjudicator", "admin"
# What each role may do, as sets: an adjudicator is a reviewer who also adjudicates and reads the report.
REACH = {
    ANYONE: {ANYONE},
    REVIEWER: {ANYONE, REVIEWER},
    ADJUDICATOR: {ANYONE, REVIEWER, ADJUDICATOR},
    ADMIN: {ANYONE, REVIEWER, ADJUDICATOR, ADMIN},
}

# The least role each team operation needs (for main's tests/api/test_role_matrix.py ACCESS, ADJUDICATOR
# rules read as ADMIN there: that matrix has no adjudicator).
TEAM_ACCESS: dict[tuple[str, str], str] = {
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
    ("POST", "/api/team/adjudications/{adjudication_id}/resolve"): ADJUDICATOR,
    ("POST", "/api/team/adjudications/{adjudication_id}/unresolve"): ADJUDICATOR,
    ("GET", "/api/team/report"): ADJUDICATOR,
    ("GET", "/api/team/report.csv"): ADJUDICATOR,
}


def _team_operations() -> set[tuple[str, str]]:
    return {
        (method, route.path)
        for route in api_routes()
        if isinstance(route, APIRoute)
        and (route.path.startswith("/api/team") or route.path.startswith("/team"))
        for method in route.methods
        if method != "HEAD"
    }


def test_every_team_operation_has_exactly_one_rule() -> None:
    operations = _team_operations()
    assert sorted(operations - TEAM_ACCESS.keys()) == []
    assert sorted(TEAM_ACCESS.keys() - operations) == []


@pytest.mark.parametrize("role", [ANYONE, REVIEWER, ADJUDICATOR, ADMIN])
def test_each_role_reaches_exactly_what_its_team_rule_allows(api: Api, role: str) -> None:
    if role != ANYONE:
        api.login(f"team_matrix_{role}", role)
    wrong = []
    for method, path in sorted(TEAM_ACCESS):
        url = re.sub(r"\{\w+\}", "1", path)
        if method == "GET":
            status = api.client.get(url, follow_redirects=False).status_code
        elif role == ANYONE:
            status = api.client.request(method, url, json={"version": 0}).status_code
        else:
            status = api.write(method, url, json={"version": 0}).status_code  # type: ignore[attr-defined]
        allowed = TEAM_ACCESS[(method, path)] in REACH[role]
        refused = status == 403 or (
            role == ANYONE and (status == 401 or (status == 303 and not url.startswith("/api/")))
        )
        if status >= 500 or allowed == refused:
            wrong.append(
                f"{method} {path} as {role}: {status} ({'allowed' if allowed else 'refused'} by rule)"
            )
    assert not wrong, "\n".join(wrong)
