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
        json={"version": lesion["version"], "reason": "wrong_measurement", "text": "too long"},
    )
    assert first.status_code == 200  # type: ignore[attr-defined]
    stale = second_api.write(
        "POST", f"/api/lesions/{lesion['id']}/confirm", json={"version": lesion["version"]}
    )
    assert stale.status_code == 409  # type: ignore[attr-defined]
    body = stale.json()  # type: ignore[attr-defined]
    assert body["code"] == "edit_conflict"
    assert body["changed_by"] == "anna"
    assert body["changed_at"]
    assert body["current"]["review"] == "flagged"
    assert body["current"]["version"] == first.json()["version"]  # type: ignore[attr-defined]
    # Nothing was overwritten: the flag stands.
    now = lesion_by_id(api, lesion["id"])
    assert now["review"] == "flagged" and now["flag"] == {"reason": "wrong_measurement", "text": "too long"}


def test_flag_then_unflag_with_fresh_versions_and_audit_trail(api: Api) -> None:
    api.login("carl")
    lesion = detail(api)["lesions"][0]
    flagged = api.write(
        "POST",
        f"/api/lesions/{lesion['id']}/flag",
        json={"version": lesion["version"], "reason": "duplicate", "text": ""},
    ).json()  # type: ignore[attr-defined]
    assert flagged["current"]["noisy"] is True and flagged["version"] > lesion["version"]
    unflagged = api.write(
        "POST", f"/api/lesions/{lesion['id']}/unflag", json={"version": flagged["version"]}
    ).json()  # type: ignore[attr-defined]
    assert unflagged["flag"] is None and unflagged["current"]["noisy"] is False
    trail = api.client.get(f"/api/lesions/{lesion['id']}/history").json()
    assert [e["action"] for e in trail] == ["flag", "unflag"]
    assert trail[0]["user"] == "carl"
    assert trail[0]["before"]["review"] == "unreviewed" and trail[0]["after"]["review"] == "flagged"
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
    edited = r.json()  # type: ignore[attr-defined]
    assert edited["review"] == "edited"
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
    added = r.json()  # type: ignore[attr-defined]
    assert added["origin"] == "added" and added["source"] == "manual" and added["original"] is None
    assert added["current"]["box"] == pytest.approx(list(box_from_recist(GOOD_RECIST)))
    assert len(detail(api)["lesions"]) == len(before["lesions"]) + 1
    gone = api.write("DELETE", f"/api/lesions/{added['id']}?version={added['version']}")
    assert gone.status_code == 204  # type: ignore[attr-defined]
    assert [le["id"] for le in detail(api)["lesions"]] == [le["id"] for le in before["lesions"]]


def test_deleting_an_original_lesion_is_refused(api: Api) -> None:
    api.login("gus")
    lesion = detail(api)["lesions"][0]
    r = api.write("DELETE", f"/api/lesions/{lesion['id']}?version={lesion['version']}")
    assert r.status_code == 422  # type: ignore[attr-defined]
    assert lesion_by_id(api, lesion["id"])["review"] == "unreviewed"


def test_undo_and_redo_of_own_last_change(api: Api) -> None:
    api.login("hana")
    lesion = detail(api)["lesions"][0]
    api.write("POST", f"/api/lesions/{lesion['id']}/confirm", json={"version": lesion["version"]})
    undone = api.write("POST", f"/api/key-slices/{KS}/undo").json()  # type: ignore[attr-defined]
    assert undone["undone"]["action"] == "undo"
    assert (
        next(le for le in undone["key_slice"]["lesions"] if le["id"] == lesion["id"])["review"]
        == "unreviewed"
    )
    redone = api.write("POST", f"/api/key-slices/{KS}/redo").json()  # type: ignore[attr-defined]
    assert (
        next(le for le in redone["key_slice"]["lesions"] if le["id"] == lesion["id"])["review"] == "confirmed"
    )
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
        json={"version": mine["version"], "reason": "not_a_lesion", "text": ""},
    )
    r = api.write("POST", f"/api/key-slices/{KS}/undo")
    assert r.status_code == 409  # type: ignore[attr-defined]
    assert lesion_by_id(api, lesion["id"])["review"] == "flagged"


def test_undo_with_nothing_to_undo_returns_null(api: Api) -> None:
    api.login("lola")
    r = api.write("POST", f"/api/key-slices/{KS}/undo")
    assert r.status_code == 200 and r.json()["undone"] is None  # type: ignore[attr-defined]


def test_status_is_per_reviewer_and_versioned(api: Api, second_api: Api) -> None:
    api.login("mia")
    second_api.login("nils")
    r = api.write("PUT", f"/api/key-slices/{KS}/status", json={"status": "in_progress", "version": 0})
    assert r.json() == {"status": "in_progress", "status_version": 1}  # type: ignore[attr-defined]
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
    assert done.json() == {"status": "done", "status_version": 2}  # type: ignore[attr-defined]
    lesion = lesion_by_id(api, lesion["id"])
    flagged = api.write(
        "POST",
        f"/api/lesions/{lesion['id']}/flag",
        json={"version": lesion["version"], "reason": "duplicate", "text": ""},
    )
    assert flagged.status_code == 200  # type: ignore[attr-defined]
    assert (detail(api)["status"], detail(api)["status_version"]) == ("done", 2)
    # The automatic start is not an undo step: undo takes back the flag, the status stays.
    assert api.write("POST", f"/api/key-slices/{KS}/undo").status_code == 200  # type: ignore[attr-defined]
    after_undo = detail(api)
    assert after_undo["status"] == "done" and lesion_by_id(api, lesion["id"])["review"] == "confirmed"
    assert [e["action"] for e in history(api)].count("status") == 1


def test_flag_with_unknown_reason_is_422(api: Api) -> None:
    api.login("olga")
    lesion = detail(api)["lesions"][0]
    r = api.write(
        "POST",
        f"/api/lesions/{lesion['id']}/flag",
        json={"version": lesion["version"], "reason": "ugly", "text": ""},
    )
    assert r.status_code == 422  # type: ignore[attr-defined]


def test_key_slice_detail_lists_stored_and_missing_context_slices(api: Api) -> None:
    api.login("paul")
    d = detail(api, "000001_01_01_112.png")
    assert d["slice_range"] == [110, 114]
    assert d["stored_slices"] == [106, 107, 108, 109, 110]
    assert d["missing_slices"] == [111, 112, 113, 114]
    assert detail(api, "000001_02_01_020.png")["stored_slices"] == []
