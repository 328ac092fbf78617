"""Screening page in Chromium: an admin starts a screen, follows it, then opens the possible-missed list."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.review import evaluations, jobs, screening
from tests.e2e.conftest import DEFAULT_TIMEOUT_MS, api_login, shoot
from tests.e2e.live import ADMIN, REVIEWER, LiveServer, live_server


@pytest.fixture(scope="module")
def screen_server(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own: a screen stores predictions that would change what the other tests see."""
    with live_server(tmp_path_factory.mktemp("e2e-screening")) as live:
        yield live


@pytest.fixture
def open_page(browser: Any, screen_server: LiveServer) -> Iterator[Callable[[tuple[str, str]], Any]]:
    """Opens a page signed in as a user; uncaught script errors fail the test."""
    contexts: list[Any] = []
    uncaught: list[str] = []

    def make(user: tuple[str, str]) -> Any:
        ctx = browser.new_context(base_url=screen_server.url, viewport={"width": 1280, "height": 800})
        ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
        contexts.append(ctx)
        api_login(ctx, user)
        page = ctx.new_page()
        page.on("pageerror", lambda exc: uncaught.append(str(exc)))
        return page

    yield make
    for ctx in contexts:
        for page in ctx.pages:
            shoot(page, f"screening-{ctx.pages.index(page)}-end")
        ctx.close()
    assert not uncaught, uncaught


class Hold:
    """Holds a job's work after its first key slice until released."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def wrap(self, real: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        """`real` with its progress held at the first key slice."""

        def held(*args: Any, on_progress: Any, **kwargs: Any) -> dict[str, Any]:
            def hook(done: int, total: int) -> None:
                on_progress(done, total)
                if done == 1:
                    self.reached.set()
                    self.release.wait(60)

            return real(*args, on_progress=hook, **kwargs)

        return held


def test_admin_starts_a_screen_sees_progress_then_the_result_and_opens_the_queue_in_the_work_list(
    open_page: Callable[[tuple[str, str]], Any], screen_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The live server runs in this process: hold its screen after the first key slice.
    hold = Hold()
    monkeypatch.setattr(screening, "screen_key_slices", hold.wrap(screening.screen_key_slices))
    monkeypatch.setattr(jobs, "PROGRESS_INTERVAL_S", 0.0)
    page = open_page(ADMIN)
    page.goto("/screening")
    page.wait_for_selector("body[data-ready='1']")
    assert "No screening has finished yet" in page.inner_text("#screen-status")
    assert page.locator("#screen-result").is_hidden()
    assert page.locator("nav a[href='/screening']").get_attribute("aria-current") == "page"
    shoot(page, "screening-idle")
    total = len(screen_server.key_slices)
    try:
        page.click("#run-screen")
        assert hold.reached.wait(60)
        page.wait_for_function(
            f"document.getElementById('screen-status').textContent.includes('1 / {total} key slices')"
        )
        assert page.locator("#screen-progress").is_visible() and page.locator("#run-screen").is_disabled()
        assert page.get_attribute("#screen-progress", "aria-valuenow") == str(round(100 / total))
        assert "all split, threshold 0.3" in page.inner_text("#screen-status")
        shoot(page, "screening-running")
    finally:
        hold.release.set()
    page.wait_for_function("document.body.dataset.jobStatus === 'done'", timeout=60_000)
    page.wait_for_selector("#screen-result:not([hidden])")
    latest = page.context.request.get("/api/screen").json()
    assert latest["id"] == int(page.evaluate("document.body.dataset.jobId"))
    result = latest["result"]
    assert result["key_slices"] == total and result["queue_key_slices"] > 0
    assert page.inner_text("#screen-queue-slices") == str(result["queue_key_slices"])
    assert page.inner_text("#screen-queue-predictions") == str(result["queue_predictions"])
    assert page.locator("#screen-progress").is_hidden() and page.locator("#run-screen").is_enabled()
    assert "finished" in page.inner_text("#screen-status")
    # The demo data is synthetic: the hidden-lesion line is there and says so.
    assert "hidden_lesions" in result
    assert "synthetic data" in page.inner_text("#screen-hidden")
    shoot(page, "screening-done")

    page.click("#screen-queue-link")
    page.wait_for_url("**/?possible_missed=true*")
    page.wait_for_function("(document.body.dataset.listQuery || '').includes('possible_missed=true')")
    assert page.is_checked("input[name='possible_missed']")
    queued = page.context.request.get("/api/key-slices?possible_missed=true&page_size=500").json()
    shown = page.locator("#worklist-body tr").evaluate_all("rows => rows.map(r => r.dataset.fileName)")
    assert sorted(shown) == sorted(i["file_name"] for i in queued["items"])
    assert len(shown) == result["queue_key_slices"]


def test_a_reviewer_sees_the_last_screen_result_but_no_start_button(
    open_page: Callable[[tuple[str, str]], Any], screen_server: LiveServer
) -> None:
    admin = open_page(ADMIN)
    csrf = api_login(admin.context, ADMIN)["csrf_token"]
    r = admin.context.request.post("/api/screen", data={"limit": 1}, headers={"X-CSRF-Token": csrf})
    assert r.status == 202, r.text()
    job_id = r.json()["id"]
    page = open_page(REVIEWER)
    page.goto("/screening")
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_function(f"document.body.dataset.resultJobId === '{job_id}'", timeout=60_000)
    assert page.locator("#run-screen").count() == 0
    assert "Only an admin" in page.inner_text("#screen-admin-only")
    assert page.locator("#screen-result").is_visible()
    shoot(page, "screening-reviewer")


def test_a_running_evaluation_is_shown_and_screening_can_start_once_it_ends(
    open_page: Callable[[tuple[str, str]], Any], screen_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold = Hold()
    monkeypatch.setattr(evaluations, "evaluate_dataset", hold.wrap(evaluations.evaluate_dataset))
    page = open_page(ADMIN)
    csrf = api_login(page.context, ADMIN)["csrf_token"]
    try:
        r = page.context.request.post(
            "/api/evaluation", data={"split": "all"}, headers={"X-CSRF-Token": csrf}
        )
        assert r.status == 202, r.text()
        evaluation_id = r.json()["id"]
        assert hold.reached.wait(60)
        page.goto("/screening")
        page.wait_for_selector("body[data-ready='1']")
        page.click("#run-screen")
        page.wait_for_function(
            "document.getElementById('screen-status').textContent.includes('An evaluation is running')"
        )
        assert f"job {evaluation_id}" in page.inner_text("#screen-status")
        assert page.locator("#run-screen").is_disabled()
    finally:
        hold.release.set()
    page.wait_for_function("!document.getElementById('run-screen').disabled", timeout=60_000)
    assert "has ended (done)" in page.inner_text("#screen-status")
    assert page.context.request.get(f"/api/jobs/{evaluation_id}").json()["status"] == "done"
