"""A reviewer's CSV of the filtered work list: the admin's corrected export restricted to the filter."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from tests.api.conftest import Api

KS = "000001_01_01_108.png"
ADDED_RECIST = [30.0, 60.0, 70.0, 60.0, 50.0, 50.0, 50.0, 70.0]


def rows(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV text."""
    table = list(csv.reader(io.StringIO(text)))
    return table[0], table[1:]


def worklist_names(api: Api, params: dict[str, Any]) -> set[str]:
    """Every key slice the work list shows for the filter (all pages)."""
    body = api.client.get("/api/key-slices", params={**params, "page_size": 500}).json()
    assert body["total"] == len(body["items"])
    return {item["file_name"] for item in body["items"]}


def review_some(api: Api) -> None:
    """A flag, an added lesion and a done status by the reviewer on one key slice."""
    lesions = api.client.get(f"/api/key-slices/{KS}").json()["lesions"]
    clean = next(le for le in lesions if le["flag"] is None)
    flagged = api.write(
        "POST",
        f"/api/lesions/{clean['id']}/flag",
        json={"version": clean["version"], "reason": "not_a_lesion", "note": "calcified node"},
    )
    assert flagged.status_code == 200, flagged.text  # type: ignore[attr-defined]
    added = api.write(
        "POST", f"/api/key-slices/{KS}/lesions", json={"recist": ADDED_RECIST, "lesion_type": 7}
    )
    assert added.status_code == 201, added.text  # type: ignore[attr-defined]
    version = added.json()["key_slice"]["status_version"]  # type: ignore[attr-defined]
    done = api.write("PUT", f"/api/key-slices/{KS}/status", json={"status": "done", "version": version})
    assert done.status_code == 200, done.text  # type: ignore[attr-defined]


FILTERS: list[dict[str, Any]] = [
    {},
    {"status": "done"},
    {"status": "unreviewed"},
    {"patient": 1},
    {"lesion_type": [7]},
    {"noisy": "true", "split": "test"},
    {"min_size_mm": 20, "sort": "size", "order": "desc"},
]


@pytest.mark.parametrize("params", FILTERS, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()) or "all")
def test_worklist_csv_is_the_corrected_export_restricted_to_the_filter(
    api: Api, second_api: Api, params: dict[str, Any]
) -> None:
    api.login("rev1")
    review_some(api)
    second_api.login("boss", "admin")
    full = second_api.client.get("/api/exports/dl_info.csv", params={"state": "corrected", "extras": "true"})
    assert full.status_code == 200, full.text
    header, all_rows = rows(full.text)
    # Every row here lies on its key slice, so File_name says which key slice a row belongs to.
    every_key_slice = worklist_names(api, {})
    assert {r[0] for r in all_rows} <= every_key_slice
    wanted = worklist_names(api, params)
    assert wanted, "each filter should match some key slices"

    r = api.client.get("/api/exports/worklist.csv", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    got_header, got = rows(r.text)
    assert got_header == header and "Review_state" in header and "Flag_reason" in header
    assert got == [row for row in all_rows if row[0] in wanted]
    if params != {}:
        assert len(got) < len(all_rows), "a filter that keeps everything proves nothing"
    if "status" in params and params["status"] == "done":
        assert {row[0] for row in got} == {KS}
        state, origin = header.index("Review_state"), header.index("Origin")
        assert "flagged" in {row[state] for row in got} and "drawn" in {row[origin] for row in got}


def test_worklist_csv_status_follows_the_signed_in_reviewer(api: Api, second_api: Api) -> None:
    api.login("rev1")
    review_some(api)
    second_api.login("rev2")
    mine = api.client.get("/api/exports/worklist.csv", params={"status": "done"})
    theirs = second_api.client.get("/api/exports/worklist.csv", params={"status": "done"})
    assert len(rows(mine.text)[1]) > 0
    assert rows(theirs.text)[1] == []
    assert rows(theirs.text)[0] == rows(mine.text)[0]
    named = second_api.client.get("/api/exports/worklist.csv", params={"status": "done", "reviewer": "rev1"})
    assert named.text == mine.text


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"split": "nope"}, 422),
        ({"lesion_type": 42}, 422),
        ({"reviewer": "nobody"}, 404),
        ({"page_size": 0}, 200),
    ],
)
def test_worklist_csv_bad_filters_are_4xx_and_anonymous_is_401(
    api: Api, params: dict[str, Any], status: int
) -> None:
    assert api.client.get("/api/exports/worklist.csv").status_code == 401
    api.login("rev1")
    assert api.client.get("/api/exports/worklist.csv", params=params).status_code == status
