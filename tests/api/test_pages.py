"""Server-rendered pages: anonymous visitors go to sign-in, signed-in users get the shell with CSRF meta."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest

from tests.api.conftest import Api

PAGES = ["/", "/viewer/000001_01_01_109.png", "/overview", "/evaluation", "/screening"]


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
