"""Follow-up view in Chromium: every study side by side, linked windows, axes and response as the API says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DEFAULT_TIMEOUT_MS, api_login, shoot
from tests.e2e.live import ADMIN, REVIEWER, LiveServer, live_server


@pytest.fixture(scope="module")
def fu_server(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Its own server: a patient with two studies (synthetic, seed 1), matched once by the admin API."""
    with live_server(
        tmp_path_factory.mktemp("e2e-followup"), with_model=False, patients=2, max_studies=2
    ) as live:
        yield live


@pytest.fixture
def context(browser: Any, fu_server: LiveServer) -> Iterator[Any]:
    ctx = browser.new_context(base_url=fu_server.url, viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
    yield ctx
    ctx.close()


def _post(context: Any, csrf: str, url: str, body: dict[str, Any]) -> Any:
    r = context.request.post(url, data=body, headers={"X-CSRF-Token": csrf})
    assert r.ok, r.text()
    return r.json()


@pytest.fixture
def matched(context: Any) -> dict[str, Any]:
    """Matching run by the admin; then the reviewer is signed in. Answers patient 1's follow-up."""
    csrf = api_login(context, ADMIN)["csrf_token"]
    _post(context, csrf, "/api/followup/match", {"patient_index": 1})
    api_login(context, REVIEWER)
    view: dict[str, Any] = context.request.get("/api/followup/patients/1").json()
    return view


def _multi_study_track(view: dict[str, Any]) -> dict[str, Any]:
    return next(t for t in view["tracks"] if len(t["points"]) >= 2)


def _open(page: Any, lesion: dict[str, Any]) -> None:
    page.goto(f"/followup/{lesion['file_name']}?lesion={lesion['lesion_id']}")
    page.wait_for_selector("body[data-ready='true']")


def test_a_lesion_is_shown_in_every_study_centred_with_one_window(page: Any, matched: dict[str, Any]) -> None:
    track = _multi_study_track(matched)
    first = next(le for le in matched["lesions"] if le["lesion_id"] == track["points"][0]["lesion_id"])
    _open(page, first)
    assert page.evaluate("document.body.dataset.track") == track["track_id"]
    panels = page.locator(".fu-panel[data-lesion-id]")
    assert panels.count() == len(track["points"])
    by_id = {le["lesion_id"]: le for le in matched["lesions"]}
    for i in range(panels.count()):
        panel = panels.nth(i)
        lesion = by_id[int(panel.get_attribute("data-lesion-id"))]
        assert lesion["track_id"] == track["track_id"]
        assert float(panel.get_attribute("data-long-mm")) == pytest.approx(lesion["long_mm"])
        canvas = panel.locator("canvas")
        side = float(canvas.get_attribute("data-view-side"))
        centre = (
            float(canvas.get_attribute("data-view-x")) + side / 2,
            float(canvas.get_attribute("data-view-y")) + side / 2,
        )
        assert centre == pytest.approx(tuple(lesion["centre_px"]))
    page.wait_for_function(
        "[...document.querySelectorAll('.fu-panel canvas')].every(c => c.dataset.loaded === 'true')"
    )
    # One window for every study: change it once, every panel reloads with it.
    page.fill("#fu-center", "60")
    page.fill("#fu-width", "350")
    page.dispatch_event("#fu-width", "change")
    srcs = page.eval_on_selector_all(".fu-panel canvas", "cs => cs.map(c => c.dataset.src)")
    assert srcs and all("center=60&width=350" in s for s in srcs)
    page.wait_for_function(
        "[...document.querySelectorAll('.fu-panel canvas')].every(c => c.dataset.loaded === 'true')"
    )
    # The lesion is at the panel's centre: the centre pixel is not the black of an empty canvas.
    grey = page.evaluate(
        "[...document.querySelectorAll('.fu-panel canvas')]"
        ".map(c => c.getContext('2d').getImageData(128, 128, 1, 1).data[0])"
    )
    assert all(g > 0 for g in grey), grey
    shoot(page, "followup-side-by-side")


def test_timeline_and_response_agree_with_the_api(page: Any, matched: dict[str, Any]) -> None:
    track = _multi_study_track(matched)
    first = next(le for le in matched["lesions"] if le["lesion_id"] == track["points"][0]["lesion_id"])
    _open(page, first)
    rows = page.eval_on_selector_all(
        "#fu-timeline tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent))"
    )
    assert [int(r[0]) for r in rows] == [p["study_index"] for p in track["points"]]
    for row, point in zip(rows, track["points"], strict=True):
        assert float(row[1]) == pytest.approx(point["long_mm"], abs=0.05)
    last = track["points"][-1]["long_change_pct"]
    assert rows[-1][2] == f"{'+' if last > 0 else ''}{last:.1f}%"
    dots = page.eval_on_selector_all(
        "#fu-chart circle[data-axis='long_mm']", "cs => cs.map(c => Number(c.dataset.mm))"
    )
    assert dots == [p["long_mm"] for p in track["points"]]
    categories = page.eval_on_selector_all("#fu-response tbody tr", "rs => rs.map(r => r.dataset.category)")
    expected = [s.get("category") or "baseline" for s in matched["response"]["studies"]]
    assert categories == expected


def test_breaking_a_link_in_the_view_splits_the_track_and_undo_joins_it(
    page: Any, context: Any, matched: dict[str, Any]
) -> None:
    track = _multi_study_track(matched)
    first = next(le for le in matched["lesions"] if le["lesion_id"] == track["points"][0]["lesion_id"])
    second = track["points"][1]["lesion_id"]
    _open(page, first)
    link = page.locator(".fu-link[data-link-id]").first
    link_id = int(link.get_attribute("data-link-id"))
    before = link.get_attribute("data-link-status")
    link.get_by_role("button", name=f"Break link {link_id}").click()
    page.wait_for_function(f"!document.querySelector(\".fu-panel[data-lesion-id='{second}']\")")
    after = context.request.get("/api/followup/patients/1").json()
    by_id = {le["lesion_id"]: le for le in after["lesions"]}
    assert by_id[first["lesion_id"]]["track_id"] != by_id[second]["track_id"]
    assert next(lk for lk in after["links"] if lk["id"] == link_id)["status"] == "broken"
    page.click("#fu-undo")
    page.wait_for_selector(f".fu-panel[data-lesion-id='{second}']")
    back = context.request.get("/api/followup/patients/1").json()
    assert next(lk for lk in back["links"] if lk["id"] == link_id)["status"] == before


def test_the_viewer_opens_the_follow_up_of_its_key_slice(page: Any, matched: dict[str, Any]) -> None:
    first = matched["lesions"][0]
    page.goto(f"/viewer/{first['file_name']}")
    page.click("#open-followup")
    page.wait_for_selector("body[data-ready='true']")
    assert page.url.endswith(f"/followup/{first['file_name']}")
    assert Path(shoot(page, "followup-from-viewer")).exists()


def test_the_follow_up_page_keeps_the_content_security_policy(browser: Any, fu_server: LiveServer) -> None:
    from tests.e2e.test_security_browser import COLLECT_CSP_VIOLATIONS

    ctx = browser.new_context(
        base_url=fu_server.url, viewport={"width": 1280, "height": 800}, bypass_csp=False
    )
    try:
        ctx.add_init_script(COLLECT_CSP_VIOLATIONS)
        api_login(ctx, REVIEWER)
        page = ctx.new_page()
        console: list[str] = []
        page.on("console", lambda msg: console.append(msg.text))
        name = fu_server.key_slices[0]
        page.goto(f"/followup/{name}")
        page.wait_for_selector("body[data-ready='true']")
        assert page.evaluate("window.__csp") == []
        assert not [line for line in console if "Content Security Policy" in line]
    finally:
        ctx.close()


def test_a_reviewer_links_the_lesion_again_from_the_study_where_it_went_missing(
    page: Any, context: Any, matched: dict[str, Any]
) -> None:
    track = _multi_study_track(matched)
    first = next(le for le in matched["lesions"] if le["lesion_id"] == track["points"][0]["lesion_id"])
    second = next(le for le in matched["lesions"] if le["lesion_id"] == track["points"][1]["lesion_id"])
    _open(page, first)
    link_id = int(page.locator(".fu-link[data-link-id]").first.get_attribute("data-link-id"))
    page.get_by_role("button", name=f"Break link {link_id}").click()
    absent = page.locator(f".fu-panel.fu-absent[data-study='{second['study_index']}']")
    absent.wait_for()
    absent.locator("select").select_option(str(second["lesion_id"]))
    absent.get_by_role(
        "button", name=f"Link a lesion of study {second['study_index']} to this lesion"
    ).click()
    page.wait_for_selector(f".fu-panel[data-lesion-id='{second['lesion_id']}']")
    after = context.request.get("/api/followup/patients/1").json()
    link = next(lk for lk in after["links"] if lk["id"] == link_id)
    assert link["status"] == "confirmed"  # re-adding a broken link confirms it
    tracks = {le["lesion_id"]: le["track_id"] for le in after["lesions"]}
    assert tracks[first["lesion_id"]] == tracks[second["lesion_id"]]
    history = context.request.get(f"/api/key-slices/{first['file_name']}/history").json()
    assert [e["action"] for e in history[-2:]] == ["link_break", "link_add"]
