"""Team review over the API on SQLite and PostgreSQL: assignments, blind double reads, adjudication."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.config import Settings
from app.review.team.agreement import cohen_kappa
from tests.api.lesion_api import KS_A, body, history, key_slice
from tests.api.team_api import assign, browsers, finish, marks_with, next_read, save

RETYPED = 6
ADDED = {"recist": None, "box": [10.0, 10.0, 30.0, 30.0], "lesion_type": 3}


@pytest.fixture
def team(app_settings: Settings, database_url: str) -> Any:
    with browsers(
        app_settings, database_url, boss="admin", ann="reviewer", bob="reviewer", judy="adjudicator"
    ) as people:
        yield people


def _read_of(people: Any, name: str, assignment_id: int) -> dict[str, Any]:
    read = next_read(people[name], assignment_id)
    assert read is not None
    return read


def test_only_admins_assign_and_bad_assignments_are_422(team: Any) -> None:
    assert (
        team["ann"]
        .write("POST", "/api/team/assignments", json={"name": "x", "mode": "single", "readers": ["ann"]})
        .status_code
        == 403
    )
    assert assign(team["boss"], ["ann", "nobody"], status=422)["code"] == "unknown_reviewer"
    assert "at least 2" in assign(team["boss"], ["ann"], status=422)["detail"]
    assert assign(team["boss"], ["ann", "bob"], patient=999999, status=422)["code"] == "empty_assignment"
    assert assign(team["boss"], ["ann", "bob"], mode="triple", status=422)["code"] == "invalid_input"


def test_an_assignment_takes_the_filtered_key_slices_and_counts_progress(team: Any) -> None:
    a = assign(team["boss"], ["ann", "bob"], split="test")
    # The test split has two key slices; a double read makes two reads of each.
    assert a["progress"]["reads"] == {"total": 4, "open": 4, "claimed": 0, "done": 0}
    assert a["readers"] == ["ann", "bob"] and a["filter"] == {"split": "test"}
    read = _read_of(team, "ann", a["id"])
    assert read["file_name"] == KS_A and read["status"] == "claimed"
    listed = body(team["ann"].client.get("/api/team/assignments"))["assignments"]
    assert listed[0]["progress"]["reads"]["claimed"] == 1
    assert listed[0]["progress"]["readers"] == [{"reader": "ann", "claimed": 1, "done": 0}]
    queue = body(team["ann"].client.get("/api/team/queue"))
    assert [r["id"] for r in queue["reads"]] == [read["id"]]
    assert body(team["judy"].client.get("/api/team/queue"))["reads"] == []


def test_next_resumes_the_unfinished_read_and_single_read_never_hands_a_key_slice_twice(team: Any) -> None:
    a = assign(team["boss"], ["ann", "bob"], mode="single", split="test")
    first = _read_of(team, "ann", a["id"])
    assert _read_of(team, "ann", a["id"])["id"] == first["id"]  # resumed, not a second one
    other = _read_of(team, "bob", a["id"])
    assert other["file_name"] != first["file_name"]
    finish(team["ann"], first)
    assert next_read(team["ann"], a["id"]) is None  # the only other key slice is bob's
    assert (
        body(team["judy"].write("POST", f"/api/team/assignments/{a['id']}/next"), 403)["code"] == "forbidden"
    )


def test_double_read_is_blind_until_both_are_done_then_disagreements_are_queued(team: Any) -> None:
    a = assign(team["boss"], ["ann", "bob"], split="test")
    ra, rb = _read_of(team, "ann", a["id"]), _read_of(team, "bob", a["id"])
    assert ra["file_name"] == rb["file_name"] == KS_A and ra["slot"] != rb["slot"]
    lesion_ids = [m["id"] for m in ra["marks"]["lesions"]]
    first = lesion_ids[0]
    saved = save(team["ann"], ra, marks_with(ra, **{f"l{first}": {"flag_reason": "not_a_lesion"}}))
    assert saved["read"]["marks"]["lesions"][0]["flag_reason"] == "not_a_lesion"
    assert saved["entry"]["action"] == "team_read"
    # The lesions themselves are untouched by a read, so bob sees the original state, and not ann's read.
    assert key_slice(team["bob"], KS_A)["lesions"][0]["flag"] is None
    for who in ("bob", "judy", "boss"):
        assert team[who].client.get(f"/api/team/reads/{ra['id']}").status_code == 403
    # Nor does the key slice's history give ann's marks away.
    assert "not_a_lesion" not in json.dumps(history(team["bob"], KS_A))
    marks_b = marks_with(rb)
    marks_b["added"] = [ADDED]
    rb = save(team["bob"], rb, marks_b)["read"]
    ra = finish(team["ann"], saved["read"])["read"]
    assert team["judy"].client.get(f"/api/team/reads/{ra['id']}").status_code == 403  # bob is not done
    assert body(team["judy"].client.get("/api/team/adjudications"))["adjudications"] == []
    finish(team["bob"], rb)
    assert body(team["judy"].client.get(f"/api/team/reads/{ra['id']}"))["reader"] == "ann"
    queue = body(team["judy"].client.get("/api/team/adjudications?status=open"))["adjudications"]
    assert len(queue) == 1 and queue[0]["file_name"] == KS_A
    kinds = sorted((d["kind"], d["lesion_id"]) for d in queue[0]["disagreements"])
    assert kinds == [("added", None), ("noisy", first)]
    assert team["ann"].client.get("/api/team/adjudications").status_code == 403
    full = body(team["judy"].client.get(f"/api/team/adjudications/{queue[0]['id']}"))
    assert [r["reader"] for r in full["reads"]] == full["readers"] and len(full["reads"]) == 2


def _disagreeing_case(team: Any) -> tuple[dict[str, Any], int]:
    a = assign(team["boss"], ["ann", "bob"], split="test")
    ra, rb = _read_of(team, "ann", a["id"]), _read_of(team, "bob", a["id"])
    first = ra["marks"]["lesions"][0]["id"]
    ra = save(team["ann"], ra, marks_with(ra, **{f"l{first}": {"flag_reason": "duplicate"}}))["read"]
    marks_b = marks_with(rb, **{f"l{first}": {"lesion_type": 6}})
    marks_b["added"] = [ADDED]
    rb = save(team["bob"], rb, marks_b)["read"]
    finish(team["ann"], ra)
    finish(team["bob"], rb)
    (case,) = body(team["judy"].client.get("/api/team/adjudications"))["adjudications"]
    return case, first


def test_resolving_applies_the_consensus_as_audited_corrections_and_undo_takes_it_back(team: Any) -> None:
    case, first = _disagreeing_case(team)
    before = key_slice(team["judy"], KS_A)
    picked_b = case["readers"].index("bob")
    r = team["judy"].write(
        "POST",
        f"/api/team/adjudications/{case['id']}/resolve",
        json={"version": case["version"], "pick": "ab"[picked_b]},
    )
    result = body(r)
    assert result["adjudication"]["status"] == "resolved" and result["adjudication"]["resolved_by"] == "judy"
    lesions = {le["id"]: le for le in result["key_slice"]["lesions"]}
    assert lesions[first]["current"]["lesion_type"] == 6 and lesions[first]["flag"] is None
    assert len(lesions) == len(before["lesions"]) + 1  # bob's added lesion
    actions = [e["action"] for e in history(team["judy"], KS_A)]
    assert actions[-1] == "team_resolve" and "edit" in actions and "add" in actions
    # A second resolve is refused; a stale version is a conflict.
    stale = team["judy"].write(
        "POST",
        f"/api/team/adjudications/{case['id']}/resolve",
        json={"version": case["version"], "pick": "a"},
    )
    assert stale.status_code == 409
    undone = body(
        team["judy"].write(
            "POST",
            f"/api/team/adjudications/{case['id']}/unresolve",
            json={"version": result["adjudication"]["version"]},
        )
    )
    assert undone["adjudication"]["status"] == "open" and undone["adjudication"]["consensus"] is None
    after = {le["id"]: le for le in undone["key_slice"]["lesions"]}
    assert {i: (le["current"], le["flag"]) for i, le in after.items()} == {
        le["id"]: (le["current"], le["flag"]) for le in before["lesions"]
    }
    # An edited consensus: keep ann's flag, take bob's type.
    edited = marks_with(
        full := body(team["judy"].client.get(f"/api/team/adjudications/{case['id']}"))["reads"][0],
        **{f"l{first}": {"flag_reason": "duplicate", "lesion_type": 6}},
    )
    assert full["reader"] in ("ann", "bob")
    done = body(
        team["judy"].write(
            "POST",
            f"/api/team/adjudications/{case['id']}/resolve",
            json={"version": undone["adjudication"]["version"], "consensus": edited},
        )
    )
    lesion = next(le for le in done["key_slice"]["lesions"] if le["id"] == first)
    assert lesion["flag"]["reason"] == "duplicate" and lesion["current"]["lesion_type"] == 6
    assert done["adjudication"]["consensus"]["lesions"][0]["flag_reason"] == "duplicate"


def test_only_the_resolving_adjudicator_can_undo_and_not_under_later_changes(team: Any) -> None:
    case, first = _disagreeing_case(team)
    res = body(
        team["judy"].write(
            "POST",
            f"/api/team/adjudications/{case['id']}/resolve",
            json={"version": case["version"], "pick": "a"},
        )
    )
    version = res["adjudication"]["version"]
    assert (
        team["boss"]
        .write("POST", f"/api/team/adjudications/{case['id']}/unresolve", json={"version": version})
        .status_code
        == 403
    )
    lesion = next(le for le in res["key_slice"]["lesions"] if le["id"] == first)
    team["judy"].write("POST", f"/api/lesions/{first}/unflag", json={"version": lesion["version"]})
    r = team["judy"].write(
        "POST", f"/api/team/adjudications/{case['id']}/unresolve", json={"version": version}
    )
    assert r.status_code == 409


def test_reads_are_versioned_undoable_and_validated(team: Any) -> None:
    a = assign(team["boss"], ["ann", "bob"], split="test")
    read = _read_of(team, "ann", a["id"])
    original = read["marks"]
    first = original["lesions"][0]["id"]
    saved = save(
        team["ann"], read, marks_with(read, **{f"l{first}": {"flag_reason": "other", "flag_note": "x"}})
    )["read"]
    assert save(team["ann"], read, marks_with(read), status=409)["code"] == "edit_conflict"
    assert save(team["ann"], saved, marks_with(read, **{f"l{first}": {"flag_reason": "other"}}), 422)[
        "detail"
    ].endswith("needs a note")
    assert save(team["ann"], saved, {"lesions": [], "added": []}, 422)["code"] == "invalid_input"
    bad_box = marks_with(saved)
    bad_box["added"] = [{"box": [10, 10, 500, 30], "lesion_type": 3}]
    assert save(team["ann"], saved, bad_box, 422)["code"] == "invalid_input"
    dataset = marks_with(saved, **{f"l{first}": {"flag_reason": "dataset"}})
    assert save(team["ann"], saved, dataset, 422)["code"] == "invalid_input"
    assert save(team["bob"], saved, marks_with(saved), 403)["code"] == "forbidden"
    undone = body(
        team["ann"].write("POST", f"/api/team/reads/{read['id']}/undo", json={"version": saved["version"]})
    )
    assert (
        undone["read"]["marks"] == original
        and undone["read"]["can_redo"]
        and undone["entry"]["action"] == "team_read_undo"
    )
    redone = body(
        team["ann"].write(
            "POST", f"/api/team/reads/{read['id']}/redo", json={"version": undone["read"]["version"]}
        )
    )
    assert redone["read"]["marks"] == saved["marks"] and not redone["read"]["can_redo"]
    done = finish(team["ann"], redone["read"])["read"]
    assert done["seconds"] is not None and done["seconds"] >= 0
    assert save(team["ann"], done, marks_with(done), 422)["code"] == "read_finished"


def test_admin_reassigns_unfinished_work(team: Any) -> None:
    a = assign(team["boss"], ["ann", "bob"], mode="single", split="test")
    read = _read_of(team, "ann", a["id"])
    assert (
        team["ann"].write("POST", f"/api/team/reads/{read['id']}/reassign", json={"to": None}).status_code
        == 403
    )
    moved = body(team["boss"].write("POST", f"/api/team/reads/{read['id']}/reassign", json={"to": "bob"}))
    assert moved["read"]["reader"] == "bob" and moved["entry"]["action"] == "team_reassign"
    assert _read_of(team, "bob", a["id"])["id"] == read["id"]
    back = body(team["boss"].write("POST", f"/api/team/reads/{read['id']}/reassign", json={"to": None}))
    assert back["read"]["status"] == "open" and back["read"]["reader"] is None
    finished = finish(team["bob"], _read_of(team, "bob", a["id"]))["read"]
    assert (
        body(
            team["boss"].write("POST", f"/api/team/reads/{finished['id']}/reassign", json={"to": "ann"}), 422
        )["code"]
        == "read_finished"
    )


def test_the_report_shows_the_agreement_of_the_reads(team: Any) -> None:
    a = assign(team["boss"], ["ann", "bob"])
    flags: list[tuple[bool, bool]] = []
    for i in range(4):
        ra, rb = _read_of(team, "ann", a["id"]), _read_of(team, "bob", a["id"])
        assert ra["file_name"] == rb["file_name"]
        change_a = {
            f"l{m['id']}": {"flag_reason": "not_a_lesion"} for m in ra["marks"]["lesions"][: i % 2 + 1]
        }
        change_b = {f"l{m['id']}": {"flag_reason": "not_a_lesion"} for m in rb["marks"]["lesions"][:1]}
        ma, mb = marks_with(ra, **change_a), marks_with(rb, **change_b)
        flags += [
            (x["flag_reason"] is not None, y["flag_reason"] is not None)
            for x, y in zip(ma["lesions"], mb["lesions"], strict=True)
        ]
        if i == 0:
            ma["added"], mb["added"] = [ADDED], [{**ADDED, "box": [11.0, 10.0, 31.0, 30.0]}]
        finish(team["ann"], save(team["ann"], ra, ma)["read"])
        finish(team["bob"], save(team["bob"], rb, mb)["read"])
    assert team["ann"].client.get("/api/team/report").status_code == 403
    report = body(team["judy"].client.get(f"/api/team/report?assignment={a['id']}"))
    (pair,) = report["pairs"]
    assert (pair["reader_a"], pair["reader_b"]) == ("ann", "bob")
    assert pair["key_slices"] == 4 and pair["lesions_compared"] == len(flags)
    assert pair["kappa_noisy"] == pytest.approx(cohen_kappa(flags))
    assert (pair["added_a"], pair["added_b"], pair["added_matched"], pair["f1_added"]) == (1, 1, 1, 1.0)
    assert pair["long_axis_mean_diff_mm"] == pytest.approx(0.0)
    assert [r["reader"] for r in report["readers"]] == ["ann", "bob"]
    assert report["readers"][0]["added"] == 1 and report["readers"][0]["key_slices"] == 4
    assert report["readers"][0]["flagged"] == sum(1 for x, _ in flags if x)
    only_test = body(team["judy"].client.get(f"/api/team/report?assignment={a['id']}&split=test"))
    assert only_test["pairs"][0]["key_slices"] == 2
    csv = team["judy"].client.get(f"/api/team/report.csv?assignment={a['id']}&table=readers")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0].split(",")[0] == "reader" and len(lines) == 3


def test_a_read_over_the_body_limit_is_a_declared_413(team: Any) -> None:
    a = assign(team["boss"], ["ann", "bob"], split="test")
    read = _read_of(team, "ann", a["id"])
    big = marks_with(read)
    big["added"] = [{**ADDED, "flag_note": "n" * 2000} for _ in range(50)]  # valid by the schema, > 64 KiB
    r = team["ann"].write(
        "PUT", f"/api/team/reads/{read['id']}", json={"version": read["version"], "marks": big}
    )
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"
    paths = team["ann"].client.app.openapi()["paths"]
    assert "413" in paths["/api/team/reads/{read_id}"]["put"]["responses"]
    assert "413" in paths["/api/team/adjudications/{adjudication_id}/resolve"]["post"]["responses"]


def _one_agreed_one_open(team: Any) -> dict[str, Any]:
    """Patient 1's test key slices read twice: ann flags a lesion of KS_A only; on the other both retype."""
    a = assign(team["boss"], ["ann", "bob"], patient=1, split="test")
    assert a["progress"]["reads"]["total"] == 4
    for name in ("ann", "bob"):
        while (read := next_read(team[name], a["id"])) is not None:
            first = f"l{read['marks']['lesions'][0]['id']}"
            if read["file_name"] != KS_A:
                marks = marks_with(read, **{first: {"lesion_type": RETYPED}})
            else:
                marks = marks_with(read, **({first: {"flag_reason": "duplicate"}} if name == "ann" else {}))
            finish(team[name], save(team[name], read, marks)["read"])
    return a


def test_apply_all_agreed_makes_each_agreed_read_the_consensus_audited_and_undoable(team: Any) -> None:
    a = _one_agreed_one_open(team)
    queue = body(team["judy"].client.get("/api/team/adjudications"))["adjudications"]
    agreed = [c for c in queue if c["status"] == "agreed"]
    assert len(agreed) == 1 and [c["status"] for c in queue].count("open") == 1
    url = "/api/team/adjudications/apply-agreed"
    assert team["ann"].write("POST", url, json={}).status_code == 403
    assert team["judy"].write("POST", url, json={"limit": 0}).status_code == 422
    assert team["judy"].write("POST", url, json={"assignment": a["id"] + 99}).status_code == 404
    before = [le["current"] for le in key_slice(team["judy"], agreed[0]["file_name"])["lesions"]]
    assert [c["lesion_type"] for c in before] != [RETYPED]
    done = body(team["judy"].write("POST", url, json={"assignment": a["id"]}))
    assert done["left"] == 0 and done["skipped"] == []
    (result,) = done["results"]
    case = result["adjudication"]
    assert case["id"] == agreed[0]["id"] and case["status"] == "resolved" and case["resolved_by"] == "judy"
    file_name = result["key_slice"]["file_name"]
    assert file_name == case["file_name"] != KS_A
    # Each one an ordinary correction: the readers' common type becomes the lesion's, in judy's name.
    assert [le["current"]["lesion_type"] for le in result["key_slice"]["lesions"]] == [RETYPED]
    actions = [e["action"] for e in history(team["judy"], file_name)]
    assert actions[-1] == "team_resolve" and "edit" in actions
    statuses = {
        c["id"]: c["status"]
        for c in body(team["judy"].client.get("/api/team/adjudications"))["adjudications"]
    }
    assert sorted(statuses.values()) == ["open", "resolved"]
    assert body(team["judy"].write("POST", url, json={}))["results"] == []  # nothing agreed is left
    undone = body(
        team["judy"].write(
            "POST", f"/api/team/adjudications/{case['id']}/unresolve", json={"version": case["version"]}
        )
    )
    assert undone["adjudication"]["status"] == "agreed"
    assert [le["current"] for le in undone["key_slice"]["lesions"]] == before
