"""Server-rendered pages: anonymous visitors go to sign-in, signed-in users get the shell with CSRF meta."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlparse

import pytest

from app.deeplesion.schema import ALL_SPLITS, LESION_TYPES, SPLITS
from app.review.page_vocabulary import page_vocabulary
from app.review.vocabulary import FLAG_REASONS, LAYERS, STATUSES
from tests.api.conftest import Api

PAGES = [
    "/",
    "/viewer/000001_01_01_108.png",
    "/followup/000001_01_01_108.png",
    "/overview",
    "/evaluation",
    "/screening",
]


@pytest.mark.parametrize("path", PAGES)
def test_page_without_login_redirects_to_sign_in_and_back(api: Api, path: str) -> None:
    r = api.client.get(path + "?split=test", follow_redirects=False)
    assert r.status_code == 303
    location = urlparse(r.headers["location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["next"] == [path + "?split=test"]


@pytest.mark.parametrize("path", PAGES)
def test_page_signed_in_serves_its_module_and_the_session_csrf_token(api: Api, path: str) -> None:
    api.login("pages-reviewer")
    r = api.client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    meta = re.search(r'<meta name="csrf-token" content="([^"]*)">', r.text)
    assert meta is not None and meta.group(1) == api.csrf
    module = re.search(r'<script type="module" src="(/static/js/[a-z]+\.js)">', r.text)
    assert module is not None
    assert api.client.get(module.group(1)).status_code == 200
    assert 'id="synthetic-banner"' in r.text


def test_login_page_is_public(api: Api) -> None:
    r = api.client.get("/login")
    assert r.status_code == 200
    assert 'id="login-form"' in r.text


@pytest.mark.parametrize("name", ["bad.png", "000001_01_01_109", "..%2Fsecret.png", "000001_01_01_1.png"])
def test_viewer_page_for_a_name_that_is_not_a_key_slice_is_404(api: Api, name: str) -> None:
    api.login("pages-reviewer-2")
    assert api.client.get(f"/viewer/{name}").status_code == 404


def test_every_page_module_and_the_stylesheet_are_served(api: Api) -> None:
    for asset in (
        "api",
        "charts",
        "jobs",
        "login",
        "lut",
        "vocabulary",
        "worklist",
        "viewer",
        "overview",
        "evaluation",
        "screening",
    ):
        r = api.client.get(f"/static/js/{asset}.js")
        assert r.status_code == 200, asset
        assert "javascript" in r.headers["content-type"]
    assert api.client.get("/static/css/app.css").status_code == 200


def test_screening_page_has_the_start_controls_for_admins_only(api: Api, second_api: Api) -> None:
    api.login("pages-admin", "admin")
    admin_page = api.client.get("/screening").text
    assert 'id="run-screen"' in admin_page and 'id="screen-threshold"' in admin_page
    second_api.login("pages-reviewer-3")
    reviewer_page = second_api.client.get("/screening").text
    assert 'id="run-screen"' not in reviewer_page and 'id="screen-admin-only"' in reviewer_page
    assert 'href="/screening"' in reviewer_page  # linked from the navigation for everyone


def _vocabulary_block(html: str) -> object:
    """The page's #lr-vocabulary JSON block, parsed."""
    found = re.findall(r'<script type="application/json" id="lr-vocabulary">(.*?)</script>', html, re.S)
    assert len(found) == 1, "one vocabulary block per page"
    return json.loads(found[0])


@pytest.mark.parametrize("path", [*PAGES, "/login"])
def test_every_page_carries_the_vocabulary_once_as_a_json_data_block(api: Api, path: str) -> None:
    if path != "/login":
        api.login("pages-vocabulary")
    html = api.client.get(path).text
    # A JSON data block, not a script: it runs under a CSP that forbids inline scripts.
    assert _vocabulary_block(html) == json.loads(json.dumps(page_vocabulary()))


class _Controls(HTMLParser):
    """(value, label text) of the <option>s of one <select> and the radios/checkboxes of one name."""

    def __init__(self, select_id: str | None = None, input_name: str | None = None) -> None:
        super().__init__()
        self.select_id, self.input_name = select_id, input_name
        self.found: list[list[str]] = []
        self._in_select = False
        self._text_for: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "select":
            self._in_select = self.select_id is not None and self.select_id in (a.get("id"), a.get("name"))
        elif (tag == "option" and self._in_select) or (
            tag == "input" and self.input_name and a.get("name") == self.input_name
        ):
            self._text_for = [a.get("value") or "", ""]
            self.found.append(self._text_for)

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._in_select = False
        if tag in ("option", "label"):
            self._text_for = None

    def handle_data(self, data: str) -> None:
        if self._text_for is not None:
            self._text_for[1] = (self._text_for[1] + data).strip()


def _controls(
    html: str, select_id: str | None = None, input_name: str | None = None
) -> list[tuple[str, str]]:
    parser = _Controls(select_id, input_name)
    parser.feed(html)
    return [(value, text) for value, text in parser.found]


def test_page_menus_list_the_vocabulary_words_in_its_order(api: Api) -> None:
    api.login("pages-menus")
    types = [(str(t), name) for t, name in LESION_TYPES.items()]
    viewer = api.client.get(PAGES[1]).text
    assert _controls(viewer, "new-type") == types
    assert _controls(viewer, "lesion-type") == types
    assert _controls(viewer, input_name="reason") == list(FLAG_REASONS.items())
    assert re.findall(r'data-layer="([a-z_]+)"', viewer) == list(LAYERS)
    assert re.findall(r'data-preset="(\d)"', viewer) == [p["key"] for p in page_vocabulary()["presets"]]
    worklist = api.client.get("/").text
    assert _controls(worklist, "split")[1:] == [(name, name) for name in SPLITS.values()]
    assert _controls(worklist, "status")[1:] == list(STATUSES.items())
    assert [v for v, _ in _controls(worklist, input_name="lesion_type")] == [str(t) for t in LESION_TYPES]
    api.login("pages-menus-admin", "admin")
    for page, select in (("/evaluation", "eval-split"), ("/screening", "screen-split")):
        splits = [v for v, _ in _controls(api.client.get(page).text, select)]
        assert set(splits) == {*SPLITS.values(), ALL_SPLITS}, page


def test_viewer_page_for_an_unknown_well_formed_name_is_a_404_page_without_a_viewer(api: Api) -> None:
    api.login("pages-reviewer-3")
    r = api.client.get("/viewer/999999_99_99_999.png")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert 'id="viewer"' not in r.text and "999999_99_99_999.png" in r.text
    assert '<script type="module" src="/static/js/notfound.js">' in r.text
