"""Sign-in, the keyboard-only work list pass, the 409 conflict dialog, and the overview/evaluation pages."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from app.review import evaluations, jobs
from tests.e2e.conftest import api_login, drag, image_point, open_viewer, shoot, viewer_eval
from tests.e2e.live import ADMIN, REVIEWER, SECOND_REVIEWER, LiveServer


def test_sign_in_rejects_a_wrong_password_then_opens_the_work_list(page: Any, server: LiveServer) -> None:
    page.goto("/")
    page.wait_for_url("**/login?next=*")
    page.fill("#username", REVIEWER[0])
    page.fill("#password", "not-the-password")
    page.click("#login-submit")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "Wrong" in page.inner_text("#login-error")

    page.fill("#password", REVIEWER[1])
    page.click("#login-submit")
    page.wait_for_url(f"{server.url}/")
    page.wait_for_selector("#worklist-body tr")
    assert REVIEWER[0] in page.inner_text("#user-name")
    assert "SYNTHETIC" in page.inner_text("#synthetic-banner")
    rows = page.locator("#worklist-body tr")
    assert rows.count() == min(len(server.key_slices), 50)
    assert "key slices" in page.inner_text("#counts")
    shoot(page, "worklist")


def test_keyboard_only_pass_opens_marks_done_and_moves_to_next(page: Any, server: LiveServer) -> None:
    api_login(page.context, SECOND_REVIEWER)
    page.goto("/?sort=file_name&order=asc")
    page.wait_for_selector("#worklist-body tr.selected")
    first_row = page.locator("#worklist-body tr").nth(0).get_attribute("data-file-name")
    page.keyboard.press("j")
    assert page.locator("#worklist-body tr.selected").get_attribute("data-file-name") != first_row
    page.keyboard.press("k")
    assert page.locator("#worklist-body tr.selected").get_attribute("data-file-name") == first_row
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/viewer/{first_row}?sort=file_name&order=asc")
    page.wait_for_selector("#viewer[data-ready='1']")

    page.keyboard.press("d")  # done, then the next key slice in the same queue
    second_row = sorted(server.key_slices)[1]
    page.wait_for_url(f"**/viewer/{second_row}?sort=file_name&order=asc")
    page.wait_for_selector("#viewer[data-ready='1']")
    status = page.context.request.get(f"/api/key-slices/{first_row}").json()["status"]
    assert status == "done"

    page.keyboard.press("p")
    page.wait_for_url(f"**/viewer/{first_row}?*")
    page.wait_for_selector("#viewer[data-ready='1']")
    assert page.get_attribute("#viewer", "data-status") == "done"
    page.keyboard.press("Control+ArrowRight")
    page.wait_for_url(f"**/viewer/{second_row}?*")
    page.wait_for_selector("#viewer[data-ready='1']")

    page.keyboard.press("?")
    page.wait_for_selector("#keymap-dialog[open]")
    assert "Ctrl+Z" in page.inner_text("#keymap-dialog")
    page.keyboard.press("Escape")

    page.click("#back-to-list")
    page.wait_for_selector("#worklist-body tr")
    done_cell = page.locator(f"#worklist-body tr[data-file-name='{first_row}'] td.status-done")
    assert done_cell.count() == 1


@pytest.fixture
def bob(server: LiveServer, browser: Any) -> Iterator[tuple[Any, str]]:
    """The second reviewer's own API client (a separate cookie jar) and CSRF token."""
    ctx = browser.new_context(base_url=server.url)
    body = api_login(ctx, SECOND_REVIEWER)
    yield ctx, body["csrf_token"]
    ctx.close()


def test_stale_edit_shows_who_changed_it_and_reapply_wins(
    page: Any, server: LiveServer, bob: tuple[Any, str]
) -> None:
    api_login(page.context, REVIEWER)
    name = server.key_slices[0]
    open_viewer(page, name)
    lesion = viewer_eval(
        page, "v.state.ks.lesions.find(l => l.origin === 'csv' && l.flag === null && l.confirmed === null)"
    )
    assert lesion is not None

    # Bob confirms the lesion behind the page's back, so the page now holds a stale version.
    bob_ctx, bob_csrf = bob
    response = bob_ctx.request.post(
        f"/api/lesions/{lesion['id']}/confirm",
        data={"version": lesion["version"]},
        headers={"X-CSRF-Token": bob_csrf},
    )
    assert response.ok and response.json()["entry"]["action"] == "confirm", response.text()

    page.click(f"#lesion-list li[data-lesion-id='{lesion['id']}'] button")
    page.focus("#viewport")
    page.keyboard.press("f")
    page.wait_for_selector("#flag-dialog[open]")
    page.check("input[name='reason'][value='duplicate']")
    page.click("#flag-ok")
    page.wait_for_selector("#conflict-dialog[open]")
    assert SECOND_REVIEWER[0] in page.inner_text("#conflict-who")
    assert "confirmed" in page.inner_text("#conflict-rows")
    shoot(page, "viewer-conflict")
    page.click("#conflict-reapply")
    page.wait_for_function(
        f"window.__viewer.state.ks.lesions.find(l => l.id === {lesion['id']}).review === 'flagged'"
    )
    saved = next(
        x
        for x in page.context.request.get(f"/api/key-slices/{name}").json()["lesions"]
        if x["id"] == lesion["id"]
    )
    assert saved["flag"]["reason"] == "duplicate"
    page.keyboard.press("u")
    page.wait_for_function(
        f"window.__viewer.state.ks.lesions.find(l => l.id === {lesion['id']}).review !== 'flagged'"
    )


def test_moving_an_end_point_after_a_conflict_can_be_discarded(
    page: Any, server: LiveServer, bob: tuple[Any, str]
) -> None:
    api_login(page.context, REVIEWER)
    # A measured, unflagged csv lesion (so that Bob's flag changes it).
    name, lesion_id = next(
        (ks_name, le["id"])
        for ks_name in server.key_slices
        for le in page.context.request.get(f"/api/key-slices/{ks_name}").json()["lesions"]
        if le["origin"] == "csv" and le["current"]["recist"] and le["flag"] is None
    )
    open_viewer(page, name)
    lesion = viewer_eval(page, f"v.state.ks.lesions.find(l => l.id === {lesion_id})")
    # Bob flags it with a note, so the page's version is stale; the conflict dialog shows his note.
    bob_ctx, bob_csrf = bob
    note = "rim is calcified, not a lesion"
    response = bob_ctx.request.post(
        f"/api/lesions/{lesion['id']}/flag",
        data={"version": lesion["version"], "reason": "other", "note": note},
        headers={"X-CSRF-Token": bob_csrf},
    )
    assert response.ok and response.json()["entry"]["action"] == "flag", response.text()
    page.click(f"#lesion-list li[data-lesion-id='{lesion['id']}'] button")
    r = lesion["current"]["recist"]
    drag(page, image_point(page, r[2], r[3]), image_point(page, r[2] + 6, r[3] + 3))
    page.wait_for_selector("#conflict-dialog[open]")
    assert SECOND_REVIEWER[0] in page.inner_text("#conflict-who")
    assert note in page.inner_text("#conflict-rows")
    page.click("#conflict-discard")
    page.wait_for_selector("#conflict-dialog:not([open])", state="attached")
    saved = next(
        x
        for x in page.context.request.get(f"/api/key-slices/{name}").json()["lesions"]
        if x["id"] == lesion["id"]
    )
    assert saved["current"]["recist"] == r
    assert saved["flag"]["note"] == note and saved["flag"]["by"] == SECOND_REVIEWER[0]
    assert viewer_eval(page, f"v.state.ks.lesions.find(l => l.id === {lesion['id']}).current.recist") == r
    assert viewer_eval(page, f"v.state.ks.lesions.find(l => l.id === {lesion['id']}).flag.note") == note
    # Bob takes his flag back, so the later tests find the lesion as it was.
    cleanup = bob_ctx.request.post(
        f"/api/lesions/{lesion['id']}/unflag",
        data={"version": saved["version"]},
        headers={"X-CSRF-Token": bob_csrf},
    )
    assert cleanup.ok, cleanup.text()


def test_overview_draws_the_body_map_and_a_click_on_a_point_opens_its_key_slice(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    stats = page.context.request.get("/api/stats").json()
    page.goto("/overview")
    page.wait_for_selector("body[data-ready='1']")
    assert page.evaluate("window.__overview.count()") == len(stats["points"]) > 0
    bars = page.locator("#size-hist svg rect")
    assert bars.count() == len(stats["size_histogram"]["counts"])
    assert page.locator("#type-legend li").count() == 9
    assert page.locator("#progress-split tbody tr").count() == len(stats["progress"]["by_split"])
    shoot(page, "overview")
    target = page.evaluate("window.__overview.pointToClient(0)")
    page.mouse.click(target["x"], target["y"])
    page.wait_for_url(f"**/viewer/{target['file_name']}")
    page.wait_for_selector("#viewer[data-ready='1']")


def test_evaluation_job_shows_its_progress_then_plots_six_froc_points(
    page: Any, server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The live server runs in this process: hold its evaluation after the first key slice.
    reached, release = threading.Event(), threading.Event()
    real = evaluations.evaluate_dataset

    def held(*args: Any, on_progress: Any, **kwargs: Any) -> dict[str, Any]:
        def hook(done: int, total: int) -> None:
            on_progress(done, total)
            if done == 1:
                reached.set()
                release.wait(60)

        return real(*args, on_progress=hook, **kwargs)

    monkeypatch.setattr(evaluations, "evaluate_dataset", held)
    monkeypatch.setattr(jobs, "PROGRESS_INTERVAL_S", 0.0)
    api_login(page.context, ADMIN)
    page.goto("/evaluation")
    page.wait_for_selector("body[data-ready='1']")
    page.select_option("#eval-split", "all")
    try:
        page.click("#run-eval")
        assert reached.wait(60)
        total = len(server.key_slices)
        page.wait_for_function(
            f"document.getElementById('eval-status').textContent.includes('1 / {total} key slices')"
        )
        assert page.locator("#eval-progress").is_visible() and page.locator("#run-eval").is_disabled()
        assert page.get_attribute("#eval-progress", "aria-valuenow") == str(round(100 / total))
        shoot(page, "evaluation-running")
    finally:
        release.set()
    page.wait_for_function("document.body.dataset.points === '6'", timeout=60_000)
    assert page.evaluate("document.body.dataset.jobStatus") == "done"
    assert page.locator("#froc svg circle.froc-point").count() == 6
    assert page.locator("#froc-table tbody tr").count() == 6
    assert page.locator("#eval-progress").is_hidden() and page.locator("#run-eval").is_enabled()
    stored = page.context.request.get("/api/evaluation").json()
    assert stored["job_id"] == int(page.evaluate("document.body.dataset.jobId"))
    first = page.locator("#froc-table tbody tr").first.inner_text()
    assert f"{stored['sensitivity'][0] * 100:.1f}%" in first
    assert "finished" in page.inner_text("#eval-status")
    shoot(page, "evaluation")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    # After a reload the split shown in the dropdown is the one of the stored result, not the default.
    assert page.input_value("#eval-split") == "all" and page.input_value("#eval-against") == "original"


def test_a_failed_evaluation_job_shows_its_error(
    page: Any, server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("detector session lost")

    monkeypatch.setattr(evaluations, "evaluate_dataset", broken)
    api_login(page.context, ADMIN)
    page.goto("/evaluation")
    page.wait_for_selector("body[data-ready='1']")
    page.select_option("#eval-split", "all")  # the tiny dataset's lesions are all in train: test is refused
    page.click("#run-eval")
    page.wait_for_function("document.body.dataset.jobStatus === 'failed'", timeout=60_000)
    assert "RuntimeError: detector session lost" in page.inner_text("#eval-status")
    page.wait_for_selector("#error-banner:not([hidden])")
    assert "detector session lost" in page.inner_text("#error-text")
    assert page.locator("#run-eval").is_enabled() and page.locator("#eval-progress").is_hidden()
    shoot(page, "evaluation-failed")


def test_work_list_filters_sorts_and_badges_unreviewed_predictions(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[0]
    r = page.context.request.post(
        f"/api/key-slices/{name}/predict?threshold=0.05", headers={"X-CSRF-Token": signed_in["csrf_token"]}
    )
    assert r.ok, r.text()
    page.goto("/")
    page.wait_for_selector("#worklist-body tr")
    row = page.locator(f"#worklist-body tr[data-file-name='{name}']")
    assert row.locator(".badge-pred").count() == 1

    page.click("button.sort[data-sort='lesion_count']")
    page.wait_for_url("**/?*sort=lesion_count*")
    page.click("button.sort[data-sort='lesion_count']")
    page.wait_for_url("**order=desc*")
    page.wait_for_function("(document.body.dataset.listQuery || '').includes('order=desc')")
    assert page.get_attribute("button.sort[data-sort='lesion_count']", "aria-sort") == "descending"
    counts = [int(t) for t in page.locator("#worklist-body tr td:nth-child(4)").all_inner_texts()]
    assert counts == sorted(counts, reverse=True)

    patient = int(name[:6])
    page.fill("input[name='patient']", str(patient))
    page.click("#filters button[type='submit']")
    page.wait_for_url(f"**patient={patient}*")
    page.wait_for_function(f"(document.body.dataset.listQuery || '').includes('patient={patient}')")
    rows_js = "[...document.querySelectorAll('#worklist-body tr')]"
    page.wait_for_function(f"{rows_js}.every(r => r.dataset.fileName.startsWith('{name[:6]}'))")
    expected = sum(1 for k in server.key_slices if k.startswith(name[:6]))
    assert page.locator("#worklist-body tr").count() == expected
    # The filters live in the URL: a reload shows the same list.
    page.reload()
    page.wait_for_selector("#worklist-body tr")
    assert page.input_value("input[name='patient']") == str(patient)
    assert page.locator("#worklist-body tr").count() == expected


def test_work_list_type_filter_keeps_only_key_slices_with_that_lesion_type(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    everything = page.context.request.get("/api/key-slices?page_size=500").json()["items"]
    wanted = everything[-1]["lesion_types"][0]
    expected = sorted(k["file_name"] for k in everything if wanted in k["lesion_types"])
    page.goto("/")
    page.wait_for_selector("#worklist-body tr")
    page.click("#type-filter summary")
    page.check(f"#type-filter input[value='{wanted}']")
    assert page.inner_text("#type-summary") != "any"
    page.click("#filters button[type='submit']")
    page.wait_for_function(f"(document.body.dataset.listQuery || '').includes('lesion_type={wanted}')")
    shown = sorted(
        page.locator("#worklist-body tr").evaluate_all("rows => rows.map(r => r.dataset.fileName)")
    )
    assert shown == expected
    assert len(shown) < len(everything) or all(wanted in k["lesion_types"] for k in everything)
