"""Team review in Chromium: an admin assigns a double read, two reviewers read blind in their own browsers,
the adjudicator resolves the disagreements, and the report page and CSV show the agreement."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.db.session import make_engine, make_session_factory
from app.review.users import create_user
from tests.e2e.conftest import DEFAULT_TIMEOUT_MS, api_login, shoot
from tests.e2e.live import ADMIN, REVIEWER, SECOND_REVIEWER, LiveServer, live_server

ADJUDICATOR = ("judy", "judy-password-4")


@pytest.fixture(scope="module")
def team_server(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own (the consensus changes lesions), with an adjudicator."""
    with live_server(tmp_path_factory.mktemp("e2e-team"), with_model=False) as live:
        engine = make_engine(live.database_url)
        try:
            with make_session_factory(engine)() as session, session.begin():
                create_user(session=session, name=ADJUDICATOR[0], password=ADJUDICATOR[1], role="adjudicator")
        finally:
            engine.dispose()
        yield live


@pytest.fixture
def open_page(browser: Any, team_server: LiveServer) -> Iterator[Callable[[tuple[str, str]], Any]]:
    """Opens a page in a browser context of its own, signed in as a user; uncaught script errors fail."""
    contexts: list[Any] = []
    uncaught: list[str] = []

    def make(user: tuple[str, str]) -> Any:
        ctx = browser.new_context(base_url=team_server.url, viewport={"width": 1280, "height": 900})
        ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
        contexts.append(ctx)
        api_login(ctx, user)
        page = ctx.new_page()
        page.on("pageerror", lambda exc: uncaught.append(str(exc)))
        return page

    yield make
    for i, ctx in enumerate(contexts):
        for page in ctx.pages:
            shoot(page, f"team-{i}-end")
        ctx.close()
    assert not uncaught, uncaught


def _screenshot(page: Any, name: str) -> None:
    # test-artifacts/e2e/NAME.png; docs/images/ui_team*.png are copies of these from a passing run.
    shoot(page, name)


def _read_all(page: Any, act: Callable[[Any, int], None], shot: str | None = None) -> int:
    """From the team page: take the next key slice, act on it, Done & next, until back on the team page."""
    page.goto("/team")
    page.wait_for_selector("body[data-ready='1']")
    page.get_by_role("button", name=re.compile("Take the next key slice")).first.click()
    page.wait_for_url(re.compile(r"/team/reads/\d+$"))
    done = 0
    while re.search(r"/team/reads/\d+$", page.url):
        page.wait_for_selector("body[data-ready='1'][data-read-status='claimed']")
        act(page, done)
        if shot and done == 0:
            _screenshot(page, shot)
        here = page.url
        page.get_by_role("button", name="Finish this read and take the next").click()
        page.wait_for_url(lambda url, here=here: url != here)
        done += 1
    return done


def _flag_first(page: Any, _i: int) -> None:
    version = page.evaluate("document.body.dataset.readVersion")
    select = page.get_by_label(re.compile(r"Noisy flag of #\d+")).first
    select.select_option("not_a_lesion")
    page.wait_for_function(f"document.body.dataset.readVersion !== '{version}'")


def _add_box(page: Any, i: int) -> None:
    if i > 0:
        return
    version = page.evaluate("document.body.dataset.readVersion")
    box = page.locator("#marks").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.10, box["y"] + box["height"] * 0.10)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.18, box["y"] + box["height"] * 0.16, steps=5)
    page.mouse.up()
    page.wait_for_function(f"document.body.dataset.readVersion !== '{version}'")
    assert page.locator("#mark-table tbody tr[data-key='+1']").count() == 1


def test_double_read_adjudication_and_report(
    open_page: Callable[[tuple[str, str]], Any], team_server: LiveServer
) -> None:
    admin = open_page(ADMIN)
    admin.goto("/team")
    admin.wait_for_selector("body[data-ready='1']")
    admin.get_by_label("Assignment name").fill("Double read, first patient")
    admin.get_by_label("Mode").select_option("double")
    admin.get_by_label("Reader names, comma separated").fill(f"{REVIEWER[0]}, {SECOND_REVIEWER[0]}")
    patient = int(team_server.key_slices[0][:6])
    admin.get_by_label("Patient index").fill(str(patient))
    admin.get_by_role("button", name="Create the assignment").click()
    admin.wait_for_selector("#assignments tbody tr")
    assert "Assignment" in admin.locator("#assign-status").inner_text()
    expected = sum(1 for k in team_server.key_slices if int(k[:6]) == patient)
    _screenshot(admin, "ui_team")

    # Two reviewers in two browsers: alice flags, bob adds a lesion; neither sees the other's read.
    alice, bob = open_page(REVIEWER), open_page(SECOND_REVIEWER)
    assert _read_all(alice, _flag_first, shot="ui_team_read") == expected
    first_read = alice.context.request.get("/api/team/queue").json()["reads"][0]["id"]
    assert bob.context.request.get(f"/api/team/reads/{first_read}").status == 403
    assert _read_all(bob, _add_box) == expected

    # The adjudicator sees the disagreements and takes bob's read for the first case.
    judge = open_page(ADJUDICATOR)
    judge.goto("/team/adjudications")
    judge.wait_for_selector("body[data-ready='1']")
    assert int(judge.evaluate("document.body.dataset.queueSize")) == expected
    judge.locator("#adj-queue tbody a").first.click()
    judge.wait_for_selector("#adj-case:not([hidden])")
    assert judge.locator("#adj-disagreements li").count() >= 1
    assert judge.locator("tr.disagree").count() >= 1
    _screenshot(judge, "ui_team_adjudication")
    judge.get_by_role("button", name="Take read B as the consensus").click()
    judge.wait_for_selector("body[data-case-status='resolved']")
    case = judge.context.request.get("/api/team/adjudications?status=resolved").json()["adjudications"][0]
    lesions = judge.context.request.get(f"/api/key-slices/{case['file_name']}").json()["lesions"]
    # alice read first, so she holds slot A of every key slice; bob's box is on the first case.
    assert case["readers"] == [REVIEWER[0], SECOND_REVIEWER[0]]
    assert [le["origin"] for le in lesions].count("drawn") == 1
    # Undo takes the consensus back, and it can be applied again.
    judge.get_by_role("button", name="Undo the applied consensus").click()
    judge.wait_for_selector("body[data-case-status='open']")
    judge.get_by_role("button", name="Take read A as the consensus").click()
    judge.wait_for_selector("body[data-case-status='resolved']")

    # The report page and its CSV show the pair's agreement.
    admin.goto("/team/report")
    admin.wait_for_selector("body[data-ready='1']")
    cells = admin.locator("#pairs tbody tr").first.locator("td").all_inner_texts()
    assert cells[:3] == [REVIEWER[0], SECOND_REVIEWER[0], str(expected)]
    assert admin.locator("#ba-plot svg, #ba-plot").count() >= 1
    _screenshot(admin, "ui_team_report")
    csv = admin.context.request.get(admin.locator("#csv-pairs").get_attribute("href"))
    assert csv.ok and csv.text().splitlines()[0].startswith("reader_a,reader_b,key_slices")
    assert csv.text().splitlines()[1].startswith(f"{REVIEWER[0]},{SECOND_REVIEWER[0]},{expected}")
    # Admins download the DL_info.csv of a truth: bob's reads hold his added lesion.
    first = admin.get_by_label("Truth of the exports").input_value()
    assert admin.locator("#export-csv").get_attribute("href") == f"/api/exports/dl_info.csv?truth={first}"
    admin.get_by_label("Truth of the exports").select_option(f"reader:{SECOND_REVIEWER[0]}")
    href = admin.locator("#export-csv").get_attribute("href")
    assert href == f"/api/exports/dl_info.csv?truth=reader%3A{SECOND_REVIEWER[0]}"
    bobs = admin.context.request.get(href + "&extras=1")
    corrected = admin.context.request.get("/api/exports/dl_info.csv?truth=corrected&extras=1")
    # The consensus applied was alice's read (Take A), so bob's box is one row more than the corrected state.
    assert bobs.ok and len(bobs.text().splitlines()) == len(corrected.text().splitlines()) + 1


def _api_read_through(context: Any, csrf: str, assignment_id: int) -> int:
    """Take and finish every read of the assignment as it comes (no change: the readers agree)."""
    done = 0
    headers = {"X-CSRF-Token": csrf}
    while True:
        r = context.request.post(f"/api/team/assignments/{assignment_id}/next", headers=headers)
        assert r.ok, r.text()
        read = r.json()["read"]
        if read is None:
            return done
        finished = context.request.post(
            f"/api/team/reads/{read['id']}/finish", data={"version": read["version"]}, headers=headers
        )
        assert finished.ok, finished.text()
        done += 1


def test_the_adjudicator_applies_all_agreed_reads_in_one_step(
    open_page: Callable[[tuple[str, str]], Any], team_server: LiveServer
) -> None:
    admin = open_page(ADMIN)
    csrf = api_login(admin.context, ADMIN)["csrf_token"]
    patient = int(team_server.key_slices[-1][:6])
    assert patient != int(team_server.key_slices[0][:6])  # not the first test's key slices
    body = {"name": "agreeing", "mode": "double", "readers": [REVIEWER[0], SECOND_REVIEWER[0]]}
    r = admin.context.request.post(
        "/api/team/assignments", data={**body, "filter": {"patient": patient}}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status == 201, r.text()
    assignment = r.json()["id"]
    expected = sum(1 for k in team_server.key_slices if int(k[:6]) == patient)
    for reader in (REVIEWER, SECOND_REVIEWER):
        page = open_page(reader)
        assert (
            _api_read_through(page.context, api_login(page.context, reader)["csrf_token"], assignment)
            == expected
        )

    judge = open_page(ADJUDICATOR)
    judge.goto("/team/adjudications")
    judge.wait_for_selector("body[data-ready='1']")
    judge.get_by_label("Adjudication status").select_option("agreed")
    judge.wait_for_function(f"document.body.dataset.queueSize === '{expected}'")
    judge.get_by_role("button", name="Apply every agreed double read as the consensus").click()
    judge.wait_for_selector(f"body[data-applied-agreed='{expected}']")
    judge.wait_for_function("document.body.dataset.queueSize === '0'")
    assert f"{expected} agreed case(s) applied" in judge.locator("#apply-agreed-status").inner_text()
    _screenshot(judge, "ui_team_apply_agreed")
    resolved = judge.context.request.get(f"/api/team/adjudications?status=resolved&assignment={assignment}")
    cases = resolved.json()["adjudications"]
    assert len(cases) == expected and {c["resolved_by"] for c in cases} == {ADJUDICATOR[0]}
    # Each one is undoable on its own, like any consensus.
    judge_csrf = api_login(judge.context, ADJUDICATOR)["csrf_token"]
    undo = judge.context.request.post(
        f"/api/team/adjudications/{cases[0]['id']}/unresolve",
        data={"version": cases[0]["version"]},
        headers={"X-CSRF-Token": judge_csrf},
    )
    assert undo.ok and undo.json()["adjudication"]["status"] == "agreed"
