"""Security in Chromium: sign-in never redirects off the site; no page trips its Content-Security-Policy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.e2e.conftest import DEFAULT_TIMEOUT_MS, api_login, shoot
from tests.e2e.live import ADMIN, REVIEWER, LiveServer

EVIL = "evil.example"
# As they appear in the query string; the browser reads `\` as `/` and drops tabs and newlines.
OFF_SITE_NEXT = [
    "/%5Cevil.example/x",
    "/%09/evil.example/x",
    "/%0A/evil.example/x",
    "//evil.example/x",
    "%2F%2Fevil.example%2Fx",
    "/%5C%5Cevil.example/x",
    "https://evil.example/x",
    "/.//evil.example/x",
    "javascript:location='https://evil.example/'",
]

# Chromium reports a blocked resource, script or style through this event, and through the console.
COLLECT_CSP_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.fixture
def context(browser: Any, server: LiveServer) -> Iterator[Any]:
    """A fresh profile that enforces the CSP (the other browser tests bypass it: CONTEXT_OPTIONS)."""
    ctx = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 800}, bypass_csp=False)
    ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
    yield ctx
    ctx.close()


def _wait_until(page: Any, expression: str, timeout_s: float = 15.0) -> None:
    """Poll a page expression from here: wait_for_function evaluates strings with eval, which CSP forbids."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(f"() => Boolean({expression})"):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        page.wait_for_timeout(100)


def _trap_off_site(context: Any) -> list[str]:
    """Answer any request to the evil host with a marker page, and remember it was asked."""
    reached: list[str] = []

    def fulfil(route: Any) -> None:
        reached.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<h1>EVIL</h1>")

    # A predicate, not a glob: a glob would also match our own /login?next=https://evil.example/...
    context.route(lambda url: urlparse(url).hostname == EVIL, fulfil)
    return reached


def _on_site(page: Any, server: LiveServer) -> bool:
    return urlparse(page.url).netloc == urlparse(server.url).netloc


@pytest.mark.parametrize("next_param", OFF_SITE_NEXT)
def test_sign_in_form_never_redirects_off_site(
    page: Any, context: Any, server: LiveServer, next_param: str
) -> None:
    reached = _trap_off_site(context)
    page.goto(f"/login?next={next_param}")
    page.fill("#username", REVIEWER[0])
    page.fill("#password", REVIEWER[1])
    page.click("#login-submit")
    page.wait_for_url(lambda url: "/login" not in url)
    page.wait_for_load_state("load")
    assert _on_site(page, server), page.url
    assert reached == []
    # A signed-in visit to the sign-in page forwards at once: the same rule applies.
    page.goto(f"/login?next={next_param}")
    page.wait_for_url(lambda url: "/login" not in url)
    assert _on_site(page, server) and reached == [], page.url


def test_sign_in_returns_to_a_page_on_this_site(page: Any, server: LiveServer) -> None:
    page.goto("/login?next=%2Foverview%3Fsplit%3Dtest")
    page.fill("#username", REVIEWER[0])
    page.fill("#password", REVIEWER[1])
    page.click("#login-submit")
    page.wait_for_url("**/overview?split=test")
    assert _on_site(page, server)


def test_no_page_trips_the_content_security_policy(page: Any, context: Any, server: LiveServer) -> None:
    context.add_init_script(COLLECT_CSP_VIOLATIONS)
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text))
    # The sign-in page first, anonymous, then every page as an admin (screening shows its controls).
    paths = ["/login", "/", f"/viewer/{server.key_slices[0]}", "/overview", "/evaluation", "/screening"]
    for i, path in enumerate(paths):
        if i == 1:
            api_login(context, ADMIN)
        page.goto(path)
        # Some pages poll (jobs), so the network never idles: give their modules time to load and render.
        page.wait_for_load_state("load")
        page.wait_for_timeout(1500)
        violations = page.evaluate("window.__csp")
        blocked = [line for line in console if "Content Security Policy" in line]
        assert violations == [] and blocked == [], (path, violations, blocked)
        csp = page.evaluate("() => fetch(location.href).then(r => r.headers.get('content-security-policy'))")
        assert "frame-ancestors 'none'" in csp
    page.goto(f"/viewer/{server.key_slices[0]}")
    _wait_until(page, "window.__viewer && window.__viewer.stats.renders > 0")
    assert page.evaluate("window.__csp") == []
    shoot(page, "viewer-under-csp")
    # The collector works and the policy holds: an injected inline script is reported and never runs.
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';"
        " document.body.append(s); }"
    )
    _wait_until(page, "window.__csp.length > 0")
    assert page.evaluate("window.__ran === undefined")


def test_the_viewer_cannot_be_framed(page: Any, context: Any, server: LiveServer) -> None:
    # Another site frames the viewer (it carries the CSRF token) to trick clicks: the browser must refuse.
    api_login(context, REVIEWER)
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text))
    page.set_content(f'<iframe id="f" src="{server.url}/viewer/{server.key_slices[0]}"></iframe>')
    page.wait_for_timeout(2500)
    framed = [f for f in page.frames if f is not page.main_frame]
    assert framed
    for frame in framed:
        try:
            text = frame.evaluate("() => document.body ? document.body.innerText : ''")
        except Exception:  # the error page of a refused frame may not be scriptable
            text = ""
        assert "Lesion Review" not in text and "Work list" not in text
    assert any("frame-ancestors" in line or "Refused to display" in line for line in console), console
