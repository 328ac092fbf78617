"""Security defaults: allowed hosts, body limits, headers and CSP, who may read what, cookies, traversal."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.api import auth as auth_api
from app.api.guards import BODY_LIMITS, CONTENT_SECURITY_POLICY, body_limit
from app.config import Settings
from app.main import ROUTERS, TEMPLATES_DIR, create_app
from app.serving import serve_warnings
from tests.api.conftest import PASSWORD, Api, add_user
from tests.api.test_pages import PAGES

KS = "000001_01_01_108.png"
KS_STEM = KS.removesuffix(".png")
LOOPBACK_CLIENT = ("127.0.0.1", 40000)


def api_routes() -> list[APIRoute]:
    """Every route of every router the app includes (pages too)."""
    return [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]


def loopback_client(settings: Settings, **kwargs: Any) -> TestClient:
    """A client on the machine itself, as the demo's browser is (automatic local reviewer while no users)."""
    return TestClient(create_app(settings, detector=None), client=LOOPBACK_CLIENT, **kwargs)


# -- allowed hosts (DNS rebinding) -----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "127.0.0.1", "LOCALHOST"])
def test_loopback_server_answers_its_loopback_names(app_settings: Settings, host: str) -> None:
    settings = app_settings.model_copy(update={"allowed_hosts": ""})
    with loopback_client(settings, base_url=f"http://{host}") as c:
        assert c.get("/api/auth/me", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host", ["rebind.example:8000", "evil.example", "127.0.0.1.evil.example", "testserver"]
)
def test_dns_rebinding_host_cannot_read_the_local_admins_csrf_token(
    app_settings: Settings, host: str
) -> None:
    # A page on another name that resolves to 127.0.0.1 reaches the demo from the victim's own machine.
    settings = app_settings.model_copy(update={"allowed_hosts": ""})
    with loopback_client(settings) as c:
        for path in ("/api/auth/me", "/", "/api/exports/dl_info.csv"):
            r = c.get(path, headers={"Host": host})
            assert r.status_code == 400, (path, r.status_code)
            assert r.json()["code"] == "bad_host"
            assert "csrf" not in r.text
        r = c.put(
            f"/api/key-slices/{KS}/status", json={"status": "done", "version": 0}, headers={"Host": host}
        )
        assert r.status_code == 400


def test_configured_names_are_answered_besides_loopback(app_settings: Settings) -> None:
    settings = app_settings.model_copy(update={"allowed_hosts": "review.example.org, other.example"})
    with TestClient(create_app(settings, detector=None)) as c:
        assert c.get("/api/health", headers={"Host": "review.example.org:443"}).status_code == 200
        assert c.get("/api/health", headers={"Host": "127.0.0.1:8000"}).status_code == 200
        assert c.get("/api/health", headers={"Host": "evil.example"}).status_code == 400


def test_team_server_without_configured_names_answers_any_and_serve_warns(app_settings: Settings) -> None:
    settings = app_settings.model_copy(update={"allowed_hosts": "", "host": "0.0.0.0"})
    with TestClient(create_app(settings, detector=None)) as c:
        assert c.get("/api/health", headers={"Host": "anything.example"}).status_code == 200
    assert any("LESION_REVIEW_ALLOWED_HOSTS" in w for w in serve_warnings(settings))
    star = app_settings.model_copy(update={"allowed_hosts": "*"})
    with TestClient(create_app(star, detector=None)) as c:
        assert c.get("/api/health", headers={"Host": "anything.example"}).status_code == 200


# -- request body limits ---------------------------------------------------------------------------------


def test_every_route_has_a_small_body_limit_and_sign_in_the_smallest() -> None:
    assert body_limit("/api/auth/login") == min(limit for _, limit in BODY_LIMITS)
    assert body_limit("/api/auth/login") <= 8 * 1024
    for route in api_routes():
        if route.methods & {"POST", "PUT", "PATCH", "DELETE"}:
            assert body_limit(route.path) <= 64 * 1024, route.path


def test_oversized_login_body_with_content_length_is_413_json(api: Api) -> None:
    r = api.client.post(
        "/api/auth/login",
        content=b'{"username": "a", "password": "' + b"x" * 20_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json() == {"detail": r.json()["detail"], "code": "body_too_large"}


def _chunks(total: int, sent: list[int]) -> Iterator[bytes]:
    yield b'{"username": "a", "password": "'
    chunk = b"x" * 1024
    for _ in range(total // len(chunk)):
        sent[0] += len(chunk)
        yield chunk
    yield b'"}'


def test_oversized_chunked_login_body_without_length_is_413_json(api: Api) -> None:
    sent = [0]
    r = api.client.post(
        "/api/auth/login", content=_chunks(200_000, sent), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "body_too_large" and r.json()["detail"]
    assert sent[0] > body_limit("/api/auth/login")


def test_a_streaming_body_is_cut_off_at_the_limit_not_read_to_its_end() -> None:
    # A client that never stops sending: the app must stop reading just past the limit and answer 413.
    app = create_app(Settings(model_path=None, allowed_hosts=""), detector=None)
    chunk = b"x" * 1024
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < 100_000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/auth/login",
        "raw_path": b"/api/auth/login",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 413
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["code"] == "body_too_large"
    assert pulled * len(chunk) <= body_limit("/api/auth/login") + 2 * len(chunk)


def test_oversized_chunked_review_write_is_413(api: Api) -> None:
    api.login("rita")
    sent = [0]
    r = api.write(
        "PUT",
        f"/api/key-slices/{KS}/status",
        content=_chunks(300_000, sent),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"  # type: ignore[attr-defined]


def test_bodies_under_the_limit_still_work(api: Api) -> None:
    add_user(api.database_url, "sven")
    padded = '{"username": "sven", "password": "' + PASSWORD + '"' + " " * 3000 + "}"
    r = api.client.post("/api/auth/login", content=padded, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text


# -- security headers and CSP ----------------------------------------------------------------------------


def _assert_security_headers(r: Any) -> None:
    csp = r.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp
    script_src = re.search(r"script-src ([^;]*)", csp)
    assert script_src and "'unsafe-inline'" not in script_src.group(1) and "'unsafe-eval'" not in csp
    assert "'unsafe-inline'" not in csp
    assert r.headers.get("x-content-type-options") == "nosniff"
    assert r.headers.get("referrer-policy") == "same-origin"
    assert r.headers.get("x-frame-options") == "DENY"


def test_every_kind_of_answer_carries_the_security_headers(api: Api) -> None:
    anonymous = [
        api.client.get("/login"),
        api.client.get("/"),  # 303 to sign-in
        api.client.get("/api/health"),
        api.client.get("/api/key-slices"),  # 401
        api.client.get("/static/js/viewer.js"),
        api.client.get("/static/css/app.css"),
        api.client.get("/no/such/thing"),
        api.client.post("/api/auth/login", content=b"x" * 10_000),  # 413
        api.client.get("/api/health", headers={"Host": "evil.example"}),  # 400
    ]
    api.login("tess")
    signed_in = [api.client.get(p) for p in PAGES] + [api.client.get(f"/api/slices/{KS_STEM}.png")]
    for r in anonymous + signed_in:
        _assert_security_headers(r)
    assert api.client.get("/docs").headers["content-security-policy"] != CONTENT_SECURITY_POLICY


class _InlineCode(HTMLParser):
    """Collects what a `script-src 'self'; style-src 'self'` policy would block in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []
        self._in_data_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.blocked.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith("javascript:"):
                self.blocked.append(f"<{tag} {name}=javascript:>")
        # JSON data blocks are never executed, so the policy lets them be.
        if tag == "script" and "src" not in names and (names.get("type") or "").lower() != "application/json":
            self.blocked.append(f"inline <script type={names.get('type')!r}>")
        if tag == "style":
            self.blocked.append("<style>")


@pytest.mark.parametrize("path", ["/login", *PAGES])
def test_pages_need_no_inline_script_or_style(api: Api, path: str) -> None:
    api.login("uma", "admin")
    r = api.client.get(path)
    assert r.status_code == 200
    parser = _InlineCode()
    parser.feed(r.text)
    assert parser.blocked == [], parser.blocked


def test_templates_have_no_inline_handlers_or_styles() -> None:
    # Also the parts a page renders only sometimes (dialogs, admin controls).
    for template in sorted(TEMPLATES_DIR.glob("*.html")):
        text = template.read_text()
        assert not re.search(r"\son[a-z]+\s*=", text), template.name
        assert not re.search(r"\sstyle\s*=", text), template.name
        for match in re.finditer(r"<script\b([^>]*)>", text):
            attrs = match.group(1)
            assert "src=" in attrs or 'type="application/json"' in attrs, (template.name, match.group(0))


# -- who may read what -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"/api/slices/{KS_STEM}.png",
        f"/api/slices/{KS_STEM}.webp",
        f"/api/slices/{KS_STEM}.png?overlay=1",
        f"/api/slices/{KS_STEM}.raw",
    ],
)
def test_anonymous_clients_read_no_images(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert r.status_code == 401 and r.json()["code"] == "not_authenticated"


def test_public_images_switch_opens_plain_images_only(app_settings: Settings) -> None:
    settings = app_settings.model_copy(update={"public_images": True})
    with TestClient(create_app(settings, detector=None)) as c:
        plain = c.get(f"/api/slices/{KS_STEM}.png")
        assert plain.status_code == 200 and plain.headers["cache-control"].startswith("public")
        assert c.get(f"/api/slices/{KS_STEM}.png?overlay=1").status_code == 401
        assert c.get(f"/api/slices/{KS_STEM}.raw").status_code == 401
        assert c.get(f"/api/key-slices/{KS}").status_code == 401


def test_signed_in_images_are_private_to_caches(api: Api) -> None:
    api.login("vera")
    for suffix in ("png", "raw"):
        r = api.client.get(f"/api/slices/{KS_STEM}.{suffix}")
        assert r.status_code == 200
        assert r.headers["cache-control"].startswith("private")
    overlay = api.client.get(f"/api/slices/{KS_STEM}.png?overlay=1")
    assert overlay.status_code == 200 and "private" in overlay.headers["cache-control"]


def test_health_shows_no_absolute_path(client: TestClient, app_settings: Settings) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.json()["data_dir"] == app_settings.data_dir.name
    assert str(app_settings.data_dir.resolve()) not in r.text
    assert str(app_settings.data_dir) not in r.text


def test_health_hides_the_model_files_folder(app_settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "hidden-folder" / "model.onnx"
    settings = app_settings.model_copy(update={"model_path": bad})
    with TestClient(create_app(settings)) as c:
        r = c.get("/api/health")
    assert r.json()["detector"]["loaded"] is False
    assert "hidden-folder" not in r.text and str(tmp_path) not in r.text


# -- CSRF on every write ---------------------------------------------------------------------------------


def _sample_path(path: str) -> str:
    samples = {"file_name": KS, "name": KS_STEM, "series_folder": "000001_01_01", "fmt": "png"}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: samples.get(m.group(1), "1"), path)


def test_every_cookie_authenticated_write_needs_the_csrf_header(api: Api) -> None:
    api.login("wim", "admin")
    writes = [
        (method, route.path)
        for route in api_routes()
        for method in sorted(route.methods & {"POST", "PUT", "PATCH", "DELETE"})
        if route.path != "/api/auth/login"
    ]
    assert len(writes) >= 10
    for method, path in writes:
        r = api.client.request(method, _sample_path(path) + "?version=0", json={"version": 0})
        assert r.status_code == 403 and r.json()["code"] == "csrf_failed", (method, path, r.status_code)
        wrong = api.client.request(
            method, _sample_path(path) + "?version=0", json={"version": 0}, headers={"X-CSRF-Token": "x" * 32}
        )
        assert wrong.status_code == 403, (method, path)


# -- path traversal over every route that takes a name ---------------------------------------------------

# httpx removes plain dot segments before sending, so they appear encoded here as a client may send them.
TRAVERSAL = [
    "%2E%2E",
    "../secret",
    "..%2Fsecret",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2fsecret",
    "%252e%252e%252fsecret",
    "....%2F%2Fsecret",
    "..%5Csecret",
    "%2Fetc%2Fpasswd",
    "000001_01_01_108%00.png",
    "000001_01_01%2F..%2F..%2Fsecret",
    "Images_png%2F000001_01_01%2F108",
    "%C0%AE%C0%AE%2Fsecret",
    "000001_01_01_108.png%2F..%2F..%2Fsecret",
    "~root",
    "con",
    "a" * 300,
]


def test_no_route_that_takes_a_name_reads_outside_its_place(api: Api, app_settings: Settings) -> None:
    secret = app_settings.data_dir.parent / "secret"
    secret.write_text("TOP-SECRET-SENTINEL")
    (app_settings.data_dir.parent / "secret.png").write_text("TOP-SECRET-SENTINEL")
    api.login("xena", "admin")
    named = [
        route.path
        for route in api_routes()
        if "GET" in route.methods and re.search(r"\{(file_name|name|series_folder)", route.path)
    ]
    assert len(named) >= 6, named
    tried = 0
    for path in named:
        param = re.search(r"\{(file_name|name|series_folder)(?::\w+)?\}", path)
        assert param is not None
        for bad in TRAVERSAL:
            url = _sample_path(path.replace(param.group(0), bad))
            r = api.client.get(url)
            tried += 1
            assert r.status_code in (400, 404, 405, 422), (url, r.status_code, r.text[:200])
            assert "TOP-SECRET-SENTINEL" not in r.text, url
            assert str(app_settings.data_dir.resolve()) not in r.text, url
    assert tried >= 6 * len(TRAVERSAL)


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("/api/key-slices/000001_01_01_108%00.png", 404, "not_found"),
        ("/api/key-slices/000001_01_01_108.png%00/neighbours", 404, "not_found"),
        ("/viewer/000001_01_01_108.png%0A", 404, "not_found"),
        ("/api/key-slices?reviewer=a%00b", 422, "invalid_input"),
        ("/api/key-slices?patient=1&split=te%00st", 422, "invalid_input"),
    ],
)
def test_control_characters_in_names_are_refused_not_500(api: Api, url: str, status: int, code: str) -> None:
    # PostgreSQL refuses NUL in text: such a name used to reach the database and fail there.
    api.login("yuri")
    r = api.client.get(url)
    assert r.status_code == status and r.json()["code"] == code


# -- sign-in: cookies, logging, bounded password hashing -------------------------------------------------


def test_session_cookie_is_secure_off_loopback_by_default(app_settings: Settings, database_url: str) -> None:
    add_user(database_url, "yara")
    for host, secure in (("0.0.0.0", True), ("127.0.0.1", False)):
        settings = app_settings.model_copy(update={"host": host})
        with TestClient(create_app(settings, detector=None)) as c:
            r = c.post("/api/auth/login", json={"username": "yara", "password": PASSWORD})
            assert r.status_code == 200
            assert ("secure" in r.headers["set-cookie"].lower()) is secure, host


def test_insecure_cookies_off_loopback_only_when_configured_and_serve_warns(app_settings: Settings) -> None:
    settings = app_settings.model_copy(update={"host": "0.0.0.0", "cookie_secure": False})
    assert settings.secure_cookies() is False
    assert any("COOKIE_SECURE=false" in w for w in serve_warnings(settings))
    assert serve_warnings(app_settings.model_copy(update={"allowed_hosts": ""})) == []


def test_failed_sign_in_leaves_a_log_line(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.api.auth"):
        r = api.client.post("/api/auth/login", json={"username": "nobody\nforged", "password": "nope-nope"})
    assert r.status_code == 401
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "app.api.auth"]
    assert any("failed sign-in" in line and "nobody\\nforged" in line for line in lines), lines
    assert all("\n" not in line for line in lines)


class _SlowHasher:
    """Counts how many password checks run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()

    def _work(self) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1

    def hash(self, password: str) -> str:
        self._work()
        return "x"

    def verify(self, hashed: str, password: str) -> bool:
        self._work()
        raise __import__("argon2").exceptions.VerifyMismatchError()

    def check_needs_rehash(self, hashed: str) -> bool:
        return False


def test_sign_in_floods_hash_a_few_passwords_at_a_time(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.review.users as users

    slow = _SlowHasher()
    monkeypatch.setattr(users, "_hasher", slow)
    statuses: list[int] = []

    def attempt(i: int) -> None:
        r = api.client.post("/api/auth/login", json={"username": f"ghost{i}", "password": "wrong-wrong"})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(statuses)) == [401]
    assert 1 <= slow.peak <= auth_api.PASSWORD_HASH_THREADS


def test_a_full_password_queue_is_refused_at_once(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_api, "PASSWORD_QUEUE_MAX", 0)
    monkeypatch.setattr(auth_api, "BUSY_DELAY_S", 0.0)
    r = api.client.post("/api/auth/login", json={"username": "ghost", "password": "wrong-wrong"})
    assert r.status_code == 503 and r.json()["code"] == "busy" and r.headers["retry-after"]


def test_an_unexpected_error_is_a_json_500_with_the_security_headers(app_settings: Settings) -> None:
    app = create_app(app_settings, detector=None)

    @app.get("/api/boom-for-test")
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/boom-for-test")
        assert r.status_code == 500
        assert r.json()["code"] == "internal_error" and "a bug" not in r.text
        _assert_security_headers(r)
        assert c.get("/api/health").status_code == 200  # and the server keeps serving
