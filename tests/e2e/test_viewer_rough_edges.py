"""The viewer's rough edges (issue 12), each in Chromium: stored-only scrolling, HU readout, missing images,
not-found pages, Predict without a key image, hotkeys, zoom pivot, corner text, interpolation, work list,
evaluation page and offline /docs.

Tests that need images missing on disk run on their own small server (`gappy`), built here with a key
slice's PNG and a detector context slice removed before the import, so the shared server stays intact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from tests.e2e.conftest import (
    DEFAULT_TIMEOUT_MS,
    api_login,
    drag,
    image_point,
    open_viewer,
    shoot,
    viewer_eval,
)
from tests.e2e.live import ADMIN, REVIEWER, SECOND_REVIEWER, LiveServer

RAW_RE = re.compile(r"/api/slices/(\d{6}_\d{2}_\d{2})_(\d{3,4})\.raw")


def key_slice(context: Any, file_name: str) -> dict[str, Any]:
    """The key slice as the API sees it now."""
    response = context.request.get(f"/api/key-slices/{file_name}")
    assert response.ok, response.text()
    body: dict[str, Any] = response.json()
    return body


def raw_requests(page: Any) -> list[tuple[str, int]]:
    """Starts recording (series, index) of every raw slice request the page makes; returns the live list."""
    seen: list[tuple[str, int]] = []

    def on_request(request: Any) -> None:
        m = RAW_RE.search(request.url)
        if m:
            seen.append((m.group(1), int(m.group(2))))

    page.on("request", on_request)
    return seen


def shown(page: Any, index: int, status: str = "ok") -> None:
    """Waits until slice `index` is on screen with `status`."""
    page.wait_for_function(
        f"(d => d.shownSlice === '{index}' && d.shownStatus === '{status}')"
        "(document.getElementById('viewer').dataset)"
    )


# ---------------------------------------------------------------- a server with images missing on disk


@dataclass
class Gappy:
    """A live server whose data lacks one key slice's PNG and one detector context slice."""

    live: LiveServer
    missing_key: str  # key slice whose own image is not on disk
    short_context: str  # key slice one of whose +-2 mm neighbours is not on disk
    removed_context: int  # that neighbour's index
    complete: str  # a key slice with its image and both neighbours


@pytest.fixture(scope="module")
def gappy(tmp_path_factory: pytest.TempPathFactory, server: LiveServer) -> Iterator[Gappy]:
    """Builds, trims and serves the dataset (depends on `server` only so Chromium is known to be there)."""
    from app.config import Settings
    from app.deeplesion.context import missing_context
    from app.deeplesion.csvio import read_dl_info
    from app.detection.testing import build_tiny_model
    from tests.e2e.live import build_dataset, key_slice_names, prepare_database, serve

    root = tmp_path_factory.mktemp("gappy")
    data_dir = build_dataset(root / "data", patients=2)
    records = {r.file_name: r for r in read_dl_info(data_dir / "DL_info.csv")}
    names = key_slice_names(data_dir)
    series_of = {n: n.rsplit("_", 1)[0] for n in names}
    index_of = {n: int(n.rsplit("_", 1)[1][:-4]) for n in names}
    missing_key = names[-1]
    # Another series, so that removing its neighbour leaves the missing key's series alone.
    short_context = next(n for n in reversed(names) if series_of[n] != series_of[missing_key])
    wanted = missing_context(index_of[short_context], records[short_context].spacing_mm[2], [])
    assert wanted, "the key slice's detector context should have neighbours"
    removed = wanted[0]
    complete = next(
        n for n in names if n not in (missing_key, short_context) and series_of[n] != series_of[missing_key]
    )
    images = data_dir / "Images_png"
    (images / series_of[missing_key] / f"{index_of[missing_key]:03d}.png").unlink()
    (images / series_of[short_context] / f"{removed:03d}.png").unlink()
    users = dict([REVIEWER, SECOND_REVIEWER, ADMIN])
    url = prepare_database(data_dir, users)
    model = build_tiny_model(root / "tiny-detector.onnx")
    settings = Settings(data_dir=data_dir, database_url=url, model_path=model, device="cpu")
    with serve(settings) as base_url:
        live = LiveServer(url=base_url, data_dir=data_dir, database_url=url, users=users, key_slices=names)
        yield Gappy(live, missing_key, short_context, removed, complete)


@pytest.fixture
def gpage(browser: Any, gappy: Gappy, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page on the gappy server, signed in as the reviewer; uncaught script errors fail the test."""
    ctx = browser.new_context(base_url=gappy.live.url, viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
    api_login(ctx, REVIEWER)
    pg = ctx.new_page()
    uncaught: list[str] = []
    pg.on("pageerror", lambda exc: uncaught.append(str(exc)))
    yield pg
    shoot(pg, f"{request.node.name}-end")
    ctx.close()
    assert not uncaught, uncaught


# ---------------------------------------------------------------- scrolling and the HU readout


def test_scrolling_visits_and_requests_only_stored_slices(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[0]
    ks = key_slice(page.context, name)
    stored = ks["stored_slices"]
    gaps = [(a, b) for a, b in zip(stored, stored[1:], strict=False) if b - a > 1]
    assert gaps, "the synthetic series should store far-apart key slices with unstored slices between them"
    requests = raw_requests(page)
    open_viewer(page, name)
    page.hover("#viewport")
    # Scroll to the first gap with the keys, then step across it once with the wheel.
    a, b = gaps[0]
    viewer_eval(page, f"v.setSlice({a})")
    shown(page, a)
    page.mouse.wheel(0, 120)
    shown(page, b)
    page.keyboard.press("End")
    shown(page, stored[-1])
    page.keyboard.press("Home")
    shown(page, stored[0])
    # Let prefetching run over the whole series.
    page.wait_for_function(f"window.__viewer.cache.size >= {len(stored)}", timeout=60_000)
    asked = {index for series, index in requests if series == ks["series_folder"]}
    assert asked, "the viewer should fetch slices"
    assert asked <= set(stored), sorted(asked - set(stored))
    assert len(requests) == len(set(requests)), "no slice is fetched twice"


def test_hu_readout_follows_the_shown_slice_under_a_still_pointer(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    from app.deeplesion.store import SliceStore

    name = server.key_slices[0]
    ks = key_slice(page.context, name)
    series, key = ks["series_folder"], ks["key_slice_index"]
    after = ks["stored_slices"][ks["stored_slices"].index(key) + 1]
    store = SliceStore(server.data_dir)
    key_hu = store.read_hu_slice(series, key)
    next_hu = store.read_hu_slice(series, after)
    h, w = key_hu.shape
    # A pixel near the centre whose value differs between the two slices, so a stale number shows.
    lo_y, hi_y, lo_x, hi_x = 3 * h // 8, 5 * h // 8, 3 * w // 8, 5 * w // 8
    ys, xs = np.nonzero(key_hu[lo_y:hi_y, lo_x:hi_x] != next_hu[lo_y:hi_y, lo_x:hi_x])
    x, y = int(xs[len(xs) // 2]) + lo_x, int(ys[len(ys) // 2]) + lo_y
    open_viewer(page, name)
    page.focus("#viewport")
    for _ in range(4):  # + zooms about the centre (OHIF's key): several screen pixels per image pixel
        page.keyboard.press("+")
    assert viewer_eval(page, "v.state.zoom") > 2
    page.mouse.move(*image_point(page, x + 0.5, y + 0.5))
    page.wait_for_function(f"(document.getElementById('viewer').dataset.hu || '').startsWith('{key},')")
    assert page.inner_text("#sb-hu") == f"HU {int(key_hu[y, x])} at ({x}, {y})"
    page.mouse.wheel(0, 120)  # the pointer does not move
    shown(page, after)
    page.wait_for_function(f"(document.getElementById('viewer').dataset.hu || '').startsWith('{after},')")
    assert page.inner_text("#sb-hu") == f"HU {int(next_hu[y, x])} at ({x}, {y})"


# ---------------------------------------------------------------- images not on disk


def test_missing_key_image_one_message_no_request_no_hu_and_predict_disabled(
    gpage: Any, gappy: Gappy
) -> None:
    name = gappy.missing_key
    ks = key_slice(gpage.context, name)
    assert ks["key_slice_stored"] is False
    requests = raw_requests(gpage)
    open_viewer(gpage, name)
    shown(gpage, ks["key_slice_index"], "missing")
    assert gpage.is_visible("#missing")
    assert "missing on disk" in gpage.inner_text("#missing")
    assert gpage.is_hidden("#loading") and gpage.is_hidden("#error-banner")
    # The canvas is one plain grey: the words are in the label only, never drawn underneath it.
    colours = gpage.evaluate(
        "(() => { const c = document.getElementById('image-canvas'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; const s = new Set();"
        " for (let i = 0; i < d.length; i += 4) s.add(d[i] << 16 | d[i + 1] << 8 | d[i + 2]);"
        " return s.size; })()"
    )
    assert colours == 1
    gpage.mouse.move(*image_point(gpage, 100, 100))
    assert gpage.inner_text("#sb-hu") == "HU –"
    assert (ks["series_folder"], ks["key_slice_index"]) not in requests
    assert gpage.is_disabled("#predict")
    assert "not on disk" in gpage.inner_text("#predict-time")
    assert "not on disk" in (gpage.get_attribute("#predict", "title") or "")
    # A stored neighbour still shows, with a readout; back on the key slice the readout is blank again.
    gpage.keyboard.press("ArrowDown")
    gpage.wait_for_function("document.getElementById('viewer').dataset.shownStatus === 'ok'")
    gpage.mouse.move(*image_point(gpage, 100.5, 100.5))
    assert gpage.inner_text("#sb-hu").startswith("HU ") and gpage.inner_text("#sb-hu") != "HU –"
    gpage.keyboard.press("k")
    shown(gpage, ks["key_slice_index"], "missing")
    assert gpage.inner_text("#sb-hu") == "HU –"


def test_predict_says_when_the_detector_ran_with_repeated_neighbours(gpage: Any, gappy: Gappy) -> None:
    open_viewer(gpage, gappy.short_context)
    gpage.click("#predict")
    gpage.wait_for_selector("#viewer[data-predicted='1']")
    notice = gpage.locator("#predict-context")
    assert notice.is_visible()
    assert "repeated" in notice.inner_text() and str(gappy.removed_context) in notice.inner_text()
    run = gpage.context.request.post(
        f"/api/key-slices/{gappy.short_context}/predict",
        headers={"X-CSRF-Token": api_login(gpage.context, REVIEWER)["csrf_token"]},
    ).json()["run"]
    assert run["context_missing"] == [gappy.removed_context]

    open_viewer(gpage, gappy.complete)
    gpage.click("#predict")
    gpage.wait_for_selector("#viewer[data-predicted='1']")
    assert gpage.locator("#predict-context").is_hidden()


def test_unknown_well_formed_name_is_a_404_page_not_a_viewer(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    response = page.goto("/viewer/999999_99_99_999.png")
    assert response.status == 404
    assert page.locator("#viewer").count() == 0
    assert "not found" in page.inner_text("h1").lower()
    assert "999999_99_99_999.png" in page.inner_text("#notfound")
    page.click("#notfound-back")
    page.wait_for_url(re.compile(r"/$"))


# ---------------------------------------------------------------- zoom pivot, corner text, interpolation


def test_right_drag_zoom_keeps_the_point_under_the_pointer(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    open_viewer(page, server.key_slices[0])
    w, h = viewer_eval(page, "v.state.ks.image_size")
    target = (w * 0.3, h * 0.7)  # far from the centre, where a centre pivot moves it most
    x, y = image_point(page, *target)
    drag(page, (x, y), (x, y - 120), button="right")
    assert viewer_eval(page, "v.state.zoom") > 2
    after = image_point(page, *target)
    assert abs(after[0] - x) < 1.5 and abs(after[1] - y) < 1.5, (x, y, after)


def test_corner_text_has_a_dark_backing(page: Any, server: LiveServer, signed_in: dict[str, Any]) -> None:
    open_viewer(page, server.key_slices[0])
    page.keyboard.press("4")  # bone window: bright anatomy under the corners
    for corner in ("#info-tl", "#info-tr"):
        background = page.eval_on_selector(corner, "e => getComputedStyle(e).backgroundColor")
        m = re.match(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)", background)
        assert m, background
        r, g, b = (int(m.group(i)) for i in (1, 2, 3))
        alpha = float(m.group(4) or 1)
        assert max(r, g, b) < 60 and alpha >= 0.5, background


def test_smooth_interpolation_option_above_2x(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    open_viewer(page, server.key_slices[0])
    x, y = image_point(page, 256, 256)
    drag(page, (x, y), (x, y - 150), button="right")
    assert viewer_eval(page, "v.state.zoom") > 2.5
    rendering = "getComputedStyle(document.getElementById('image-canvas')).imageRendering"
    assert page.evaluate(rendering) == "pixelated"
    page.focus("#viewport")
    page.keyboard.press("s")
    assert page.get_attribute("#smooth", "aria-pressed") == "true"
    assert page.evaluate(rendering) == "auto"
    page.click("#smooth")
    assert page.evaluate(rendering) == "pixelated"


# ---------------------------------------------------------------- conflict dialog


def test_conflict_dialog_shows_type_names_and_my_own_change(
    page: Any, server: LiveServer, signed_in: dict[str, Any], browser: Any
) -> None:
    from app.deeplesion.schema import LESION_TYPES

    name = server.key_slices[3]  # [2] must stay untouched for test_parity
    lesion = key_slice(page.context, name)["lesions"][0]
    original = lesion["current"]["lesion_type"]
    theirs, mine = [t for t in LESION_TYPES if t not in (original, -1)][:2]
    open_viewer(page, name)
    page.click(f"#lesion-list li[data-lesion-id='{lesion['id']}'] button")
    # Bob changes the type first.
    other = browser.new_context(base_url=server.url)
    try:
        csrf = api_login(other, SECOND_REVIEWER)["csrf_token"]
        r = other.request.put(
            f"/api/lesions/{lesion['id']}/geometry",
            data={"version": lesion["version"], "lesion_type": theirs},
            headers={"X-CSRF-Token": csrf},
        )
        assert r.ok, r.text()
    finally:
        other.close()
    page.select_option("#lesion-type", str(mine))
    page.wait_for_selector("#conflict-dialog[open]")
    row = page.locator("#conflict-rows tr[data-field='type'] td")
    assert row.all_inner_texts() == [LESION_TYPES[original], LESION_TYPES[theirs], LESION_TYPES[mine]]
    assert LESION_TYPES[mine] in page.inner_text("#conflict-mine")
    shoot(page, "conflict-dialog-type-names")
    page.click("#conflict-discard")


# ---------------------------------------------------------------- work list


def test_work_list_shows_and_filters_key_slices_whose_image_is_not_on_disk(gpage: Any, gappy: Gappy) -> None:
    gpage.goto("/")
    gpage.wait_for_selector("#worklist-body tr")
    missing_row = gpage.locator(f"#worklist-body tr[data-file-name='{gappy.missing_key}']")
    assert "image not on disk" in missing_row.inner_text()
    assert gpage.locator("#worklist-body tr[data-image-missing='1']").count() == 1
    gpage.select_option("select[name='on_disk']", "false")
    # The Types popover closes on Apply.
    gpage.click("#type-filter summary")
    assert gpage.evaluate("document.getElementById('type-filter').open")
    gpage.click("button[type='submit']")
    gpage.wait_for_function("(document.body.dataset.listQuery || '').includes('on_disk=false')")
    assert not gpage.evaluate("document.getElementById('type-filter').open")
    rows = gpage.locator("#worklist-body tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-file-name") == gappy.missing_key
    api = gpage.context.request.get("/api/key-slices?on_disk=true").json()
    assert gappy.missing_key not in [i["file_name"] for i in api["items"]]
    assert all(i["image_on_disk"] for i in api["items"])


def test_work_list_error_banner_is_cleared_by_a_later_success(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    failures = {"left": 1}

    def flaky(route: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            route.abort()
        else:
            route.continue_()

    page.route(re.compile(r"/api/key-slices\?"), flaky)
    page.goto("/")
    page.wait_for_selector("#error-banner:not([hidden])")
    page.click("#error-retry")
    page.wait_for_selector("#worklist-body tr")
    assert page.is_hidden("#error-banner")
    # A failure while filtering, then a successful filter: the banner goes again.
    failures["left"] = 1
    page.click("button[type='submit']")
    page.wait_for_selector("#error-banner:not([hidden])")
    page.click("button[type='submit']")
    page.wait_for_selector("#error-banner", state="hidden")


# ---------------------------------------------------------------- evaluation page


def test_evaluation_page_run_button_refusal_and_what_was_left_out(
    gpage: Any, gappy: Gappy, browser: Any
) -> None:
    gpage.goto("/evaluation")
    gpage.wait_for_selector("body[data-ready='1']")
    gpage.wait_for_selector("#run-eval-note:not([hidden])")
    assert gpage.locator("#run-eval").is_hidden()  # a reviewer cannot start one (the API answers 403)

    admin = browser.new_context(base_url=gappy.live.url, viewport={"width": 1280, "height": 800})
    admin.set_default_timeout(DEFAULT_TIMEOUT_MS)
    try:
        api_login(admin, ADMIN)
        page = admin.new_page()
        page.goto("/evaluation")
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_selector("#run-eval:not([hidden])")
        splits = {i["split"] for i in admin.request.get("/api/key-slices?page_size=500").json()["items"]}
        empty = next(s for s in ("test", "val", "train") if s not in splits)
        page.select_option("#eval-split", empty)
        page.click("#run-eval")
        page.wait_for_selector("#error-banner:not([hidden])")
        assert "no lesions" in page.inner_text("#error-text")
        assert admin.request.get("/api/evaluation/jobs").json()["jobs"] == []
        assert admin.request.get("/api/evaluation").status == 404

        page.select_option("#eval-split", "all")
        page.click("#run-eval")
        page.wait_for_function("document.body.dataset.jobStatus === 'done'", timeout=120_000)
        page.wait_for_selector("#eval-meta dt")
        result = admin.request.get("/api/evaluation").json()
        meta = dict(
            zip(
                page.locator("#eval-meta dt").all_inner_texts(),
                page.locator("#eval-meta dd").all_inner_texts(),
                strict=True,
            )
        )
        assert meta["key slices not on disk"] == str(result["missing_key_slices"]) == "1"
        assert meta["noisy lesions left out"] == str(result["noisy_excluded"])
        shoot(page, "evaluation-left-out")
    finally:
        admin.close()


# ---------------------------------------------------------------- /docs offline


def test_api_docs_render_offline_under_their_csp(browser: Any, server: LiveServer) -> None:
    ctx = browser.new_context(base_url=server.url, bypass_csp=False)
    try:
        page = ctx.new_page()
        outside: list[str] = []
        problems: list[str] = []

        def only_local(route: Any) -> None:
            if route.request.url.startswith(server.url):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_local)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        response = page.goto("/docs")
        assert response.status == 200
        csp = response.headers["content-security-policy"]
        assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
        assert page.locator(".swagger-ui .opblock").count() > 10
        assert outside == [] and problems == [], (outside, problems)
        shoot(page, "api-docs-offline")
    finally:
        ctx.close()


def test_docs_assets_are_served_by_the_app(server: LiveServer, browser: Any) -> None:
    ctx = browser.new_context(base_url=server.url)
    try:
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            assert ctx.request.get(f"/docs/assets/{asset}").ok, asset
    finally:
        ctx.close()
