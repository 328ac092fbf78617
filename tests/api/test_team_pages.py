"""The team review pages: sign-in redirect, their module and the CSRF meta, no inline code, vocabulary."""

from __future__ import annotations

import re

import pytest

from app.review.page_vocabulary import page_vocabulary
from app.review.team import rules
from tests.api.conftest import Api
from tests.api.test_security import _InlineCode

TEAM_PAGES = ["/team", "/team/reads/1", "/team/adjudications", "/team/report"]


@pytest.mark.parametrize("path", TEAM_PAGES)
def test_team_page_without_login_redirects_to_sign_in(api: Api, path: str) -> None:
    r = api.client.get(path, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize("path", TEAM_PAGES)
def test_team_page_serves_its_module_without_inline_code(api: Api, path: str) -> None:
    api.login("page-admin", "admin")
    r = api.client.get(path)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    meta = re.search(r'<meta name="csrf-token" content="([^"]*)">', r.text)
    assert meta is not None and meta.group(1) == api.csrf
    module = re.search(r'<script type="module" src="(/static/js/[a-z]+\.js)">', r.text)
    assert module is not None and api.client.get(module.group(1)).status_code == 200
    parser = _InlineCode()
    parser.feed(r.text)
    assert parser.blocked == []


def test_team_read_page_id_must_be_a_number(api: Api) -> None:
    api.login("page-reader")
    assert api.client.get("/team/reads/abc").status_code == 422


def test_the_assignment_form_is_for_admins_only(api: Api) -> None:
    api.login("page-reviewer")
    assert 'id="assign-form"' not in api.client.get("/team").text


def test_the_team_words_reach_the_pages_from_their_home() -> None:
    team = page_vocabulary()["team"]
    assert team["modes"] == rules.MODES and team["disagreement_kinds"] == rules.DISAGREEMENT_KINDS
    assert team["long_axis_tolerance_mm"] == rules.LONG_AXIS_TOLERANCE_MM
    assert (team["consensus_truth"], team["reader_truth_prefix"]) == (
        rules.CONSENSUS_TRUTH,
        rules.READER_TRUTH_PREFIX,
    )


def test_the_team_modules_type_no_domain_word() -> None:
    # The modes, statuses and kinds come from #lr-vocabulary: no module spells them out as a label.
    from pathlib import Path

    js = Path(__file__).resolve().parents[2] / "static" / "js"
    for name in ("team.js", "teamread.js", "adjudicate.js", "teamreport.js", "teamshared.js"):
        text = (js / name).read_text()
        words = {**rules.MODES, **rules.DISAGREEMENT_KINDS, **rules.ADJUDICATION_STATUSES}
        # A key ("resolved") is data the API sends; a label differing from its key is shown text.
        for label in (label for key, label in words.items() if label != key):
            assert f'"{label}"' not in text, (name, label)
