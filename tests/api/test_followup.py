"""Follow-up through the API (SQLite and PostgreSQL): matching, tracks, link corrections, response, graph."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from tests.api.conftest import Api

FIRST = "000001_01_01_108.png"  # study 1: a liver lesion (type 4) and a lung one (type 5)
LATER = "000001_02_01_020.png"  # study 2: a liver lesion (type 4)


def _ok(r: Any, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


def patient(api: Api, baseline: int | None = None) -> dict[str, Any]:
    url = "/api/followup/patients/1" + (f"?baseline={baseline}" if baseline else "")
    return _ok(api.client.get(url))


def lesion_of(view: dict[str, Any], file_name: str, lesion_type: int) -> dict[str, Any]:
    return next(
        le for le in view["lesions"] if le["file_name"] == file_name and le["lesion_type"] == lesion_type
    )


def matched(api: Api) -> dict[str, Any]:
    """Sign in as an admin, run matching, answer the patient's view."""
    api.login("ada", "admin")
    run = _ok(api.write("POST", "/api/followup/match", json={}))
    assert run["proposed"] >= 1 and run["lesions"] >= 6
    return patient(api)


def the_link(view: dict[str, Any]) -> dict[str, Any]:
    a, b = lesion_of(view, FIRST, 4), lesion_of(view, LATER, 4)
    return next(
        lk
        for lk in view["links"]
        if (lk["from_lesion_id"], lk["to_lesion_id"]) == (a["lesion_id"], b["lesion_id"])
    )


def test_matching_links_the_same_lesion_across_studies_and_never_across_types(api: Api) -> None:
    view = matched(api)
    a, b = lesion_of(view, FIRST, 4), lesion_of(view, LATER, 4)
    lung = lesion_of(view, FIRST, 5)
    assert a["track_id"] == b["track_id"] != lung["track_id"]
    link = the_link(view)
    assert link["status"] == "proposed" and link["origin"] == "matched"
    assert all(lk["from_lesion_id"] != lung["lesion_id"] for lk in view["links"])
    assert view["studies"] == [1, 2]


def test_only_an_admin_runs_matching(api: Api) -> None:
    api.login("rita")
    r = api.write("POST", "/api/followup/match", json={})
    assert r.status_code == 403  # type: ignore[attr-defined]


def test_timeline_axes_agree_with_the_key_slice_api_and_percent_change_is_from_the_first_study(
    api: Api,
) -> None:
    view = matched(api)
    a, b = lesion_of(view, FIRST, 4), lesion_of(view, LATER, 4)
    for item in (a, b):
        ks = _ok(api.client.get(f"/api/key-slices/{item['file_name']}"))
        current = next(le for le in ks["lesions"] if le["id"] == item["lesion_id"])["current"]
        assert item["long_mm"] == pytest.approx(current["long_axis_mm"], abs=0.01)
    track = next(t for t in view["tracks"] if t["track_id"] == a["track_id"])
    assert [p["study_index"] for p in track["points"]] == [1, 2]
    expected = round((b["long_mm"] - a["long_mm"]) / a["long_mm"] * 100, 1)
    assert track["points"][1]["long_change_pct"] == expected
    assert track["points"][0]["long_change_pct"] == 0.0


def test_an_edit_of_the_later_lesion_changes_its_curve_and_the_response(api: Api) -> None:
    view = matched(api)
    b = lesion_of(view, LATER, 4)
    ks = _ok(api.client.get(f"/api/key-slices/{LATER}"))
    version = next(le for le in ks["lesions"] if le["id"] == b["lesion_id"])["version"]
    # Long axis 40 px -> 20 px at 0.7 mm: 28 mm -> 14 mm, -50% from the baseline: partial response.
    recist = [70.0, 60.0, 90.0, 60.0, 80.0, 55.0, 80.0, 65.0]
    _ok(
        api.write(
            "PUT", f"/api/lesions/{b['lesion_id']}/geometry", json={"version": version, "recist": recist}
        )
    )
    after = patient(api, baseline=1)
    assert lesion_of(after, LATER, 4)["long_mm"] == pytest.approx(14.0)
    row = after["response"]["studies"][1]
    assert row["category"] == "PR" and "30%" in row["rule"]
    assert row["change_from_baseline_pct"] == pytest.approx(-50.0)


def test_response_from_baseline_is_stable_disease_and_breaking_the_link_makes_a_new_lesion_progression(
    api: Api,
) -> None:
    view = matched(api)
    resp = view["response"]
    assert resp["baseline_study"] == 1 and resp["targets"] == [lesion_of(view, FIRST, 4)["track_id"]]
    assert [s["study_index"] for s in resp["studies"]] == [1, 2]
    assert resp["studies"][0]["sum_mm"] == pytest.approx(lesion_of(view, FIRST, 4)["long_mm"])
    assert resp["studies"][1]["category"] == "SD"
    link = the_link(view)
    _ok(api.write("POST", f"/api/followup/links/{link['id']}/break", json={"version": link["version"]}))
    broken = patient(api)
    assert lesion_of(broken, FIRST, 4)["track_id"] != lesion_of(broken, LATER, 4)["track_id"]
    row = broken["response"]["studies"][1]
    assert row["category"] == "PD" and "new lesion" in row["rule"]


def test_break_is_a_correction_audited_undone_and_redone(api: Api) -> None:
    view = matched(api)
    link = the_link(view)
    result = _ok(
        api.write("POST", f"/api/followup/links/{link['id']}/break", json={"version": link["version"]})
    )
    assert set(result) == {"key_slice", "lesion_id", "prediction_id", "entry"}
    assert result["key_slice"]["file_name"] == FIRST and result["entry"]["action"] == "link_break"
    assert (
        result["entry"]["before"]["status"] == "proposed" and result["entry"]["after"]["status"] == "broken"
    )
    history = _ok(api.client.get(f"/api/key-slices/{FIRST}/history"))
    assert history[-1]["action"] == "link_break"
    _ok(api.write("POST", f"/api/key-slices/{FIRST}/undo"))
    assert the_link(patient(api))["status"] == "proposed"
    assert lesion_of(patient(api), FIRST, 4)["track_id"] == lesion_of(patient(api), LATER, 4)["track_id"]
    _ok(api.write("POST", f"/api/key-slices/{FIRST}/redo"))
    assert the_link(patient(api))["status"] == "broken"


def test_confirm_then_a_stale_version_is_409_and_an_unknown_link_404(api: Api) -> None:
    view = matched(api)
    link = the_link(view)
    _ok(api.write("POST", f"/api/followup/links/{link['id']}/confirm", json={"version": link["version"]}))
    assert the_link(patient(api))["status"] == "confirmed"
    stale = api.write("POST", f"/api/followup/links/{link['id']}/break", json={"version": link["version"]})
    assert stale.status_code == 409  # type: ignore[attr-defined]
    assert stale.json()["code"] == "edit_conflict"  # type: ignore[attr-defined]
    missing = api.write("POST", "/api/followup/links/999999/confirm", json={"version": 1})
    assert missing.status_code == 404  # type: ignore[attr-defined]


def test_rerunning_matching_keeps_a_broken_link_broken(api: Api) -> None:
    view = matched(api)
    link = the_link(view)
    _ok(api.write("POST", f"/api/followup/links/{link['id']}/break", json={"version": link["version"]}))
    run = _ok(api.write("POST", "/api/followup/match", json={"patient_index": 1}))
    assert run["kept"] == 1
    again = patient(api)
    assert [lk["status"] for lk in again["links"]] == ["broken"]


def test_a_link_that_would_put_two_lesions_of_a_study_in_one_track_is_refused(api: Api) -> None:
    view = matched(api)
    lung, later = lesion_of(view, FIRST, 5), lesion_of(view, LATER, 4)
    # `later` is in the liver lesion's track, which has a lesion in study 1 already.
    body = {"from_lesion_id": lung["lesion_id"], "to_lesion_id": later["lesion_id"]}
    r = api.write("POST", "/api/followup/links", json=body)
    assert r.status_code == 422 and r.json()["code"] == "track_conflict"  # type: ignore[attr-defined]
    assert all(lk["origin"] != "reviewer" for lk in patient(api)["links"])


def test_a_reviewer_adds_a_link_and_undo_takes_it_back(api: Api) -> None:
    view = matched(api)
    link = the_link(view)
    api.login("rita")
    # The matcher's link is wrong in this story: break it, then link the lung lesion instead.
    _ok(api.write("POST", f"/api/followup/links/{link['id']}/break", json={"version": link["version"]}))
    lung, later = lesion_of(view, FIRST, 5), lesion_of(view, LATER, 4)
    # Given later study first: the link is stored earlier -> later.
    result = _ok(
        api.write(
            "POST",
            "/api/followup/links",
            json={"from_lesion_id": later["lesion_id"], "to_lesion_id": lung["lesion_id"]},
        )
    )
    assert result["entry"]["action"] == "link_add" and result["key_slice"]["file_name"] == FIRST
    added = next(lk for lk in patient(api)["links"] if lk["origin"] == "reviewer")
    assert (added["from_lesion_id"], added["to_lesion_id"], added["status"]) == (
        lung["lesion_id"],
        later["lesion_id"],
        "confirmed",
    )
    assert lesion_of(patient(api), FIRST, 5)["track_id"] == lesion_of(patient(api), LATER, 4)["track_id"]
    _ok(api.write("POST", f"/api/key-slices/{FIRST}/undo"))
    assert all(lk["origin"] != "reviewer" for lk in patient(api)["links"])


@pytest.mark.parametrize(
    ("pair", "status"),
    [
        (("FIRST4", "FIRST5"), 422),  # same study
        (("FIRST4", "FIRST4"), 422),  # itself
        (("FIRST4", "OTHER"), 422),  # another patient
        (("FIRST4", "MISSING"), 404),
    ],
)
def test_a_bad_link_is_a_clear_4xx(api: Api, pair: tuple[str, str], status: int) -> None:
    view = matched(api)
    other = _ok(api.client.get("/api/followup/patients/2"))["lesions"][0]["lesion_id"]
    ids = {
        "FIRST4": lesion_of(view, FIRST, 4)["lesion_id"],
        "FIRST5": lesion_of(view, FIRST, 5)["lesion_id"],
        "OTHER": other,
        "MISSING": 999999,
    }
    r = api.write(
        "POST", "/api/followup/links", json={"from_lesion_id": ids[pair[0]], "to_lesion_id": ids[pair[1]]}
    )
    assert r.status_code == status, r.text  # type: ignore[attr-defined]


def test_unknown_patient_is_404_and_a_baseline_outside_the_studies_422(api: Api) -> None:
    api.login("rita")
    assert api.client.get("/api/followup/patients/999").status_code == 404
    r = api.client.get("/api/followup/patients/1?baseline=7")
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"


def test_graph_json_and_csv_agree_with_the_patient_view_and_are_admin_only(api: Api, second_api: Api) -> None:
    view = matched(api)
    graph = _ok(api.client.get("/api/followup/graph.json"))
    tracks = {n["lesion_id"]: n["track_id"] for n in graph["nodes"]}
    assert all(tracks[le["lesion_id"]] == le["track_id"] for le in view["lesions"])
    rows = list(csv.DictReader(io.StringIO(api.client.get("/api/followup/graph.csv").text)))
    assert [(int(r["from_lesion_id"]), int(r["to_lesion_id"]), r["status"]) for r in rows] == [
        (e["from_lesion_id"], e["to_lesion_id"], e["status"]) for e in graph["edges"]
    ]
    second_api.login("rita")
    assert second_api.client.get("/api/followup/graph.json").status_code == 403
    assert second_api.client.get("/api/followup/graph.csv").status_code == 403


def test_corrected_exports_carry_each_lesions_track(api: Api) -> None:
    view = matched(api)
    link = the_link(view)
    _ok(api.write("POST", f"/api/followup/links/{link['id']}/confirm", json={"version": link["version"]}))
    tracks = {le["lesion_id"]: le["track_id"] for le in patient(api)["lesions"]}
    text = api.client.get("/api/exports/dl_info.csv?extras=true").text
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r["Patient_index"] == "1"]
    assert rows and all(r["Track_id"] == tracks[int(r["Lesion_id"])] for r in rows)
    coco = _ok(api.client.get("/api/exports/coco.json"))
    attrs = [a["attributes"] for a in coco["annotations"] if a["attributes"]["lesion_id"] in tracks]
    assert len(attrs) == len(tracks)
    assert all(a["track_id"] == tracks[a["lesion_id"]] for a in attrs)
    a, b = lesion_of(view, FIRST, 4), lesion_of(view, LATER, 4)
    assert tracks[a["lesion_id"]] == tracks[b["lesion_id"]]


def test_matching_with_appearance_reads_exactly_the_lesions_whose_slice_the_server_has(api: Api) -> None:
    api.login("ada", "admin")
    run = _ok(api.write("POST", "/api/followup/match", json={"appearance": True}))
    lesions = [le for p in (1, 2) for le in _ok(api.client.get(f"/api/followup/patients/{p}"))["lesions"]]
    on_disk = [api.client.get(f"/api/slices/{le['slice_name']}.png").status_code == 200 for le in lesions]
    assert run["appearance"] == sum(on_disk) and 0 < sum(on_disk) < len(lesions)
    assert _ok(api.write("POST", "/api/followup/match", json={}))["appearance"] == 0
    assert [lk["status"] for lk in patient(api)["links"]] == ["proposed"]


def test_undo_of_a_link_someone_changed_since_is_a_409(api: Api, second_api: Api) -> None:
    view = matched(api)
    link = the_link(view)
    _ok(api.write("POST", f"/api/followup/links/{link['id']}/break", json={"version": link["version"]}))
    second_api.login("ben")
    now = the_link(patient(second_api))
    _ok(
        second_api.write("POST", f"/api/followup/links/{now['id']}/confirm", json={"version": now["version"]})
    )
    r = api.write("POST", f"/api/key-slices/{FIRST}/undo")
    assert r.status_code == 409  # type: ignore[attr-defined]
    assert r.json()["current"]["status"] == "confirmed"  # type: ignore[attr-defined]
    assert the_link(patient(api))["status"] == "confirmed"
