"""Corrections through the API: versions and 409s, audit trail, undo/redo, geometry validation."""

from __future__ import annotations

from typing import Any

import pytest

from app.deeplesion.geometry import box_from_recist
from tests.api.conftest import Api

KS = "000001_01_01_108.png"
GOOD_RECIST = [30.0, 60.0, 70.0, 60.0, 50.0, 50.0, 50.0, 70.0]


def detail(api: Api, ks: str = KS) -> dict[str, Any]:
    r = api.client.get(f"/api/key-slices/{ks}")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()  # type: ignore[no-any-return]


def lesion_by_id(api: Api, lesion_id: int, ks: str = KS) -> dict[str, Any]:
    return next(le for le in detail(api, ks)["lesions"] if le["id"] == lesion_id)


def in_result(result: dict[str, Any], lesion_id: int) -> dict[str, Any]:
    """The lesion as a write's ReviewResult shows it."""
    return next(le for le in result["key_slice"]["lesions"] if le["id"] == lesion_id)


def history(api: Api, ks: str = KS) -> list[dict[str, Any]]:
    r = api.client.get(f"/api/key-slices/{ks}/history")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def test_stale_version_from_second_reviewer_is_409_with_current_state(api: Api, second_api: Api) -> None:
    api.login("anna")
    second_api.login("ben")
    lesion = detail(api)["lesions"][0]
    first = api.write(
        "POST",
        f"/api/lesions/{lesion['id']}/flag",
        json={"version": lesion["version"], "reason": "wrong_measurement", "note": "too long"},
    )
    assert first.status_code == 200  # type: ignore[attr-defined]
    flagged = in_result(first.json(), lesion["id"])  # type: ignore[attr-defined]
    stale = second_api.write(
        "POST", f"/api/lesions/{lesion['id']}/confirm", json={"version": lesion["version"]}
    )
    assert stale.status_code == 409  # type: ignore[attr-defined]
    body = stale.json()  # type: ignore[attr-defined]
    assert body["code"] == "edit_conflict"
    assert body["changed_by"] == "anna"
    assert body["changed_at"]
    assert body["current"]["review"] == "flagged"
    assert body["current"]["version"] == flagged["version"] > lesion["version"]
    # The 409 carries the key slice as it is now, so the viewer can show the other reviewer's change.
    assert in_result(body, lesion["id"]) == body["current"]
    # Nothing was overwritten: the flag stands, and the confirmation was not written.
    now = lesion_by_id(api, lesion["id"])
    assert now["review"] == "flagged" and now["confirmed"] is None
    assert {k: now["flag"][k] for k in ("reason", "note", "by")} == {
        "reason": "wrong_measurement",
        "note": "too long",
        "by": "anna",
    }
    assert now["flag"]["at"]


def test_flag_then_unflag_with_fresh_versions_and_audit_trail(api: Api) -> None:
    api.login("carl")
    lesion = detail(api)["lesions"][0]
    assert lesion["flag"] is None and lesion["review"] == "unreviewed"
    result = api.write(
        "POST",
        f"/api/lesions/{lesion['id']}/flag",
        json={"version": lesion["version"], "reason": "duplicate", "note": ""},
    ).json()  # type: ignore[attr-defined]
    assert result["lesion_id"] == lesion["id"] and result["entry"]["action"] == "flag"
    flagged = in_result(result, lesion["id"])
    assert flagged["review"] == "flagged" and flagged["flag"]["reason"] == "duplicate"
    assert flagged["flag"]["by"] == "carl" and flagged["version"] > lesion["version"]
    # A flag changes nothing else: geometry and layer stay.
    assert flagged["current"] == lesion["current"] and flagged["layer"] == "original"
    result = api.write(
        "POST", f"/api/lesions/{lesion['id']}/unflag", json={"version": flagged["version"]}
    ).json()  # type: ignore[attr-defined]
    unflagged = in_result(result, lesion["id"])
    assert unflagged["flag"] is None and unflagged["review"] == "unreviewed"
    assert unflagged["version"] > flagged["version"]
    trail = api.client.get(f"/api/lesions/{lesion['id']}/history").json()
    assert [e["action"] for e in trail] == ["flag", "unflag"]
    assert trail[1] == result["entry"]
    assert trail[0]["user"] == "carl"
    assert trail[0]["before"]["flag_reason"] is None and trail[0]["after"]["flag_reason"] == "duplicate"
    assert trail[1]["before"]["flag_reason"] == "duplicate" and trail[1]["after"]["flag_reason"] is None
    # The original geometry never changes.
    assert unflagged["original"] == lesion["original"]


def test_edit_geometry_derives_box_by_the_5px_rule_and_keeps_the_original(api: Api) -> None:
    api.login("dora")
    lesion = detail(api)["lesions"][0]
    r = api.write(
        "PUT",
        f"/api/lesions/{lesion['id']}/geometry",
        json={"version": lesion["version"], "recist": GOOD_RECIST},
    )
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    edited = in_result(r.json(), lesion["id"])  # type: ignore[attr-defined]
    assert edited["review"] == "edited" and edited["edited"] is True and edited["layer"] == "corrected"
    assert edited["measured"] is True
    assert edited["current"]["long_axis_mm"] == pytest.approx(40.0 * 0.7)
    assert edited["current"]["recist"] == GOOD_RECIST
    assert edited["current"]["box"] == pytest.approx(list(box_from_recist(GOOD_RECIST)))
    assert edited["current"]["diameters_px"] == pytest.approx([40.0, 20.0])
    assert edited["current"]["diameters_mm"] == pytest.approx([40.0 * 0.7, 20.0 * 0.7])
    assert edited["original"] == lesion["original"]


@pytest.mark.parametrize(
    "payload",
    [
        {"recist": [0, 0, 0, 0, 0, 0, 0, 0]},  # degenerate: zero-length axes
        {"recist": [10, 10, 500, 10, 255, 5, 255, 15]},  # outside the 128 px image
        {"recist": [10, 10, 50, 10, 10, 12, 50, 14]},  # axes parallel, not perpendicular
        {"box": [50, 50, 40, 60]},  # x2 < x1
        {"box": [0, 0, 900, 900]},  # outside the image
        {"recist": [1, 2, 3]},  # wrong length
        {},  # nothing to change
    ],
)
def test_bad_geometry_is_422_and_changes_nothing(api: Api, payload: dict[str, Any]) -> None:
    api.login("emil")
    lesion = detail(api)["lesions"][0]
    r = api.write(
        "PUT", f"/api/lesions/{lesion['id']}/geometry", json={"version": lesion["version"], **payload}
    )
    assert r.status_code == 422, r.text  # type: ignore[attr-defined]
    assert lesion_by_id(api, lesion["id"]) == lesion


def test_add_lesion_from_recist_then_delete_it(api: Api) -> None:
    api.login("fay")
    before = detail(api)
    r = api.write("POST", f"/api/key-slices/{KS}/lesions", json={"recist": GOOD_RECIST, "lesion_type": 7})
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    result = r.json()  # type: ignore[attr-defined]
    assert result["entry"]["action"] == "add"
    added = in_result(result, result["lesion_id"])
    assert added["origin"] == "drawn" and added["layer"] == "added" and added["original"] is None
    assert added["created"]["by"] == "fay" and added["confirmed"]["by"] == "fay"
    assert added["review"] == "confirmed" and added["edited"] is False and added["prediction"] is None
    assert added["current"]["box"] == pytest.approx(list(box_from_recist(GOOD_RECIST)))
    assert added["current"]["slice_index"] == before["key_slice_index"]
    assert len(result["key_slice"]["lesions"]) == len(before["lesions"]) + 1
    assert result["key_slice"] == detail(api)
    gone = api.write("DELETE", f"/api/lesions/{added['id']}?version={added['version']}")
    assert gone.status_code == 200  # type: ignore[attr-defined]
    body = gone.json()  # type: ignore[attr-defined]
    assert body["lesion_id"] == added["id"] and body["entry"]["action"] == "delete"
    assert [le["id"] for le in body["key_slice"]["lesions"]] == [le["id"] for le in before["lesions"]]
    assert [le["id"] for le in detail(api)["lesions"]] == [le["id"] for le in before["lesions"]]


def test_deleting_an_original_lesion_is_refused(api: Api) -> None:
    api.login("gus")
    lesion = detail(api)["lesions"][0]
    r = api.write("DELETE", f"/api/lesions/{lesion['id']}?version={lesion['version']}")
    assert r.status_code == 422  # type: ignore[attr-defined]
    assert lesion_by_id(api, lesion["id"]) == lesion


def test_undo_and_redo_of_own_last_change(api: Api) -> None:
    api.login("hana")
    lesion = detail(api)["lesions"][0]
    confirmed = api.write(
        "POST", f"/api/lesions/{lesion['id']}/confirm", json={"version": lesion["version"]}
    ).json()  # type: ignore[attr-defined]
    assert in_result(confirmed, lesion["id"])["confirmed"]["by"] == "hana"
    undone = api.write("POST", f"/api/key-slices/{KS}/undo").json()  # type: ignore[attr-defined]
    assert undone["entry"]["action"] == "undo" and undone["lesion_id"] == lesion["id"]
    after_undo = in_result(undone, lesion["id"])
    assert after_undo["review"] == "unreviewed" and after_undo["confirmed"] is None
    redone = api.write("POST", f"/api/key-slices/{KS}/redo").json()  # type: ignore[attr-defined]
    assert redone["entry"]["action"] == "redo"
    after_redo = in_result(redone, lesion["id"])
    assert after_redo["review"] == "confirmed" and after_redo["confirmed"]["by"] == "hana"
    assert [e["action"] for e in history(api)] == ["confirm", "undo", "redo"]


def test_undo_of_an_added_lesion_removes_it_and_redo_brings_it_back(api: Api) -> None:
    api.login("ivan")
    n = len(detail(api)["lesions"])
    api.write("POST", f"/api/key-slices/{KS}/lesions", json={"box": [10, 10, 30, 30], "lesion_type": 2})
    assert len(api.write("POST", f"/api/key-slices/{KS}/undo").json()["key_slice"]["lesions"]) == n  # type: ignore[attr-defined]
    assert len(api.write("POST", f"/api/key-slices/{KS}/redo").json()["key_slice"]["lesions"]) == n + 1  # type: ignore[attr-defined]


def test_undo_never_reverts_another_reviewers_later_change(api: Api, second_api: Api) -> None:
    api.login("jana")
    second_api.login("karl")
    lesion = detail(api)["lesions"][0]
    mine = api.write(
        "POST", f"/api/lesions/{lesion['id']}/confirm", json={"version": lesion["version"]}
    ).json()  # type: ignore[attr-defined]
    second_api.write(
        "POST",
        f"/api/lesions/{lesion['id']}/flag",
        json={"version": in_result(mine, lesion["id"])["version"], "reason": "not_a_lesion", "note": ""},
    )
    r = api.write("POST", f"/api/key-slices/{KS}/undo")
    assert r.status_code == 409  # type: ignore[attr-defined]
    assert lesion_by_id(api, lesion["id"])["review"] == "flagged"


def test_undo_with_nothing_to_undo_returns_null(api: Api) -> None:
    api.login("lola")
    r = api.write("POST", f"/api/key-slices/{KS}/undo")
    assert r.status_code == 200 and r.json()["entry"] is None  # type: ignore[attr-defined]
    assert r.json()["key_slice"] == detail(api)  # type: ignore[attr-defined]


def test_status_is_per_reviewer_and_versioned(api: Api, second_api: Api) -> None:
    api.login("mia")
    second_api.login("nils")
    r = api.write("PUT", f"/api/key-slices/{KS}/status", json={"status": "in_progress", "version": 0})
    set_to = r.json()["key_slice"]  # type: ignore[attr-defined]
    assert (set_to["status"], set_to["status_version"]) == ("in_progress", 1)
    assert r.json()["entry"]["action"] == "status"  # type: ignore[attr-defined]
    stale = api.write("PUT", f"/api/key-slices/{KS}/status", json={"status": "done", "version": 0})
    assert stale.status_code == 409  # type: ignore[attr-defined]
    assert detail(api)["status"] == "in_progress"
    assert detail(second_api)["status"] == "unreviewed"


def test_a_change_starts_the_key_slice_for_its_reviewer_only_and_never_moves_it_back(
    api: Api, second_api: Api
) -> None:
    api.login("rosa")
    second_api.login("sven")
    before = detail(api)
    assert (before["status"], before["status_version"]) == ("unreviewed", 0)
    lesion = before["lesions"][0]
    api.write("POST", f"/api/lesions/{lesion['id']}/confirm", json={"version": lesion["version"]})
    started = detail(api)
    assert (started["status"], started["status_version"]) == ("in_progress", 1)
    assert detail(second_api)["status"] == "unreviewed"

    done = api.write("PUT", f"/api/key-slices/{KS}/status", json={"status": "done", "version": 1})
    done_ks = done.json()["key_slice"]  # type: ignore[attr-defined]
    assert (done_ks["status"], done_ks["status_version"]) == ("done", 2)
    lesion = lesion_by_id(api, lesion["id"])
    flagged = api.write(
        "POST",
        f"/api/lesions/{lesion['id']}/flag",
        json={"version": lesion["version"], "reason": "duplicate", "note": ""},
    )
    assert flagged.status_code == 200  # type: ignore[attr-defined]
    assert (detail(api)["status"], detail(api)["status_version"]) == ("done", 2)
    # The automatic start is not an undo step: undo takes back the flag, the status stays.
    assert api.write("POST", f"/api/key-slices/{KS}/undo").status_code == 200  # type: ignore[attr-defined]
    after_undo = detail(api)
    assert after_undo["status"] == "done" and lesion_by_id(api, lesion["id"])["review"] == "confirmed"
    assert lesion_by_id(api, lesion["id"])["flag"] is None
    assert [e["action"] for e in history(api)].count("status") == 1


def test_flag_with_unknown_reason_is_422(api: Api) -> None:
    api.login("olga")
    lesion = detail(api)["lesions"][0]
    r = api.write(
        "POST",
        f"/api/lesions/{lesion['id']}/flag",
        json={"version": lesion["version"], "reason": "ugly", "note": ""},
    )
    assert r.status_code == 422  # type: ignore[attr-defined]
    assert lesion_by_id(api, lesion["id"]) == lesion


def test_key_slice_detail_lists_stored_and_missing_context_slices(api: Api) -> None:
    api.login("paul")
    d = detail(api, "000001_01_01_112.png")
    assert d["slice_range"] == [110, 114]
    assert d["stored_slices"] == [106, 107, 108, 109, 110]
    assert d["missing_slices"] == [111, 112, 113, 114]
    assert detail(api, "000001_02_01_020.png")["stored_slices"] == []
