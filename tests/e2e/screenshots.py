"""Regenerate docs/images/ui_*.png from a live server on synthetic data: `python -m tests.e2e.screenshots`."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.e2e.live import (
    ADMIN,
    CHROMIUM,
    CHROMIUM_ARGS,
    CONTEXT_OPTIONS,
    REVIEWER,
    chromium_available,
    live_server,
)

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def _login(ctx: Any, user: tuple[str, str]) -> str:
    r = ctx.request.post("/api/auth/login", data={"username": user[0], "password": user[1]})
    if not r.ok:
        raise RuntimeError(f"login failed: {r.status} {r.text()}")
    token: str = r.json()["csrf_token"]
    return token


def _viewer(page: Any, file_name: str) -> None:
    page.goto(f"/viewer/{file_name}")
    page.wait_for_selector("#viewer[data-ready='1']")
    page.wait_for_function("window.__viewer.stats.firstImageMs !== null")


def _drag(page: Any, a: tuple[float, float], b: tuple[float, float]) -> None:
    pa = page.evaluate(f"window.__viewer.imageToClient({a[0]}, {a[1]})")
    pb = page.evaluate(f"window.__viewer.imageToClient({b[0]}, {b[1]})")
    page.mouse.move(pa["x"], pa["y"])
    page.mouse.down()
    page.mouse.move(pb["x"], pb["y"], steps=6)
    page.mouse.up()


def capture(out: Path, patients: int, model: Path | None, only: set[str] | None = None) -> list[Path]:
    """Drive the app like a reviewer and save the screenshots the README shows (`only`: these names)."""
    from playwright.sync_api import sync_playwright

    written: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="ui-shots-") as tmp,
        live_server(Path(tmp), patients=patients, max_studies=2, model_path=model) as live,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        ctx = browser.new_context(
            **CONTEXT_OPTIONS, base_url=live.url, viewport={"width": 1280, "height": 800}
        )
        reviewer_shots = {
            "ui_viewer",
            "ui_keymap",
            "ui_viewer_measure",
            "ui_viewer_cine",
            "ui_worklist",
            "ui_overview",
        }
        if only is None or only & reviewer_shots:
            csrf = _login(ctx, REVIEWER)
            page = ctx.new_page()

            # A key slice with an edited original lesion, a drawn RECIST mark and predictions: four colours.
            name = live.key_slices[0]
            ks = ctx.request.get(f"/api/key-slices/{name}").json()
            original = ks["lesions"][0]
            r = original["current"]["recist"]
            if r:
                moved = [r[0] - 3, r[1] - 2, *r[2:]]
                ctx.request.put(
                    f"/api/lesions/{original['id']}/geometry",
                    data={"version": original["version"], "recist": moved},
                    headers={"X-CSRF-Token": csrf},
                )
            _viewer(page, name)
            page.keyboard.press("x")
            w, h = ks["image_size"]
            _drag(page, (w * 0.30, h * 0.62), (w * 0.38, h * 0.66))
            _drag(page, (w * 0.34, h * 0.61), (w * 0.33, h * 0.67))
            page.wait_for_function("window.__viewer.state.pending === null")
            page.keyboard.press("Escape")
            page.fill("#threshold", "0.3")
            page.dispatch_event("#threshold", "input")
            page.click("#predict")
            page.wait_for_selector("#viewer[data-predicted='1']")
            centre = page.evaluate(f"window.__viewer.imageToClient({w / 2}, {h / 2})")
            page.mouse.move(centre["x"], centre["y"])  # shows the HU readout in the status bar
            page.screenshot(path=str(out / "ui_viewer.png"))
            written.append(out / "ui_viewer.png")
            page.keyboard.press("?")
            page.wait_for_selector("#keymap-dialog[open]")
            page.screenshot(path=str(out / "ui_keymap.png"))
            written.append(out / "ui_keymap.png")
            page.keyboard.press("Escape")

            # The reader's measurements: an ellipse ROI on the lesion, a probe, and the measurement panel.
            if only is None or "ui_viewer_measure" in only:
                lesion = ks["lesions"][0]["current"]["box"]
                page.keyboard.press("e")
                _drag(page, (lesion[0] - 4, lesion[1] - 4), (lesion[2] + 4, lesion[3] + 4))
                page.keyboard.press("o")
                page.mouse.click(centre["x"], centre["y"])
                page.keyboard.press("Escape")
                page.screenshot(path=str(out / "ui_viewer_measure.png"))
                written.append(out / "ui_viewer_measure.png")

            # Cine playing through the stored slices, and the patient's other key slices as thumbnails.
            if only is None or "ui_viewer_cine" in only:
                page.keyboard.press("Escape")
                page.keyboard.press("Escape")
                page.wait_for_selector("#viewer[data-thumbs]")
                page.wait_for_function(
                    "[...document.querySelectorAll('#thumbs img')]"
                    ".every((i) => i.complete && i.naturalWidth > 0)"
                )
                page.evaluate("document.querySelector('.side').scrollTop = 0")
                page.focus("#viewport")
                page.keyboard.press("c")
                page.wait_for_timeout(900)
                page.screenshot(path=str(out / "ui_viewer_cine.png"))
                written.append(out / "ui_viewer_cine.png")
                page.keyboard.press("c")

            page.goto("/")
            page.wait_for_selector("#worklist-body tr")
            page.keyboard.press("j")
            page.screenshot(path=str(out / "ui_worklist.png"))
            written.append(out / "ui_worklist.png")

            page.goto("/overview")
            page.wait_for_selector("body[data-ready='1']")
            page.screenshot(path=str(out / "ui_overview.png"), full_page=True)
            written.append(out / "ui_overview.png")
            ctx.close()

        ctx = browser.new_context(
            **CONTEXT_OPTIONS, base_url=live.url, viewport={"width": 1280, "height": 800}
        )
        admin_csrf = _login(ctx, ADMIN)
        page = ctx.new_page()
        if only is None or "ui_followup" in only:
            # Matching once, then the first lesion seen in two studies: side by side, its curve, the response.
            ctx.request.post("/api/followup/match", data={}, headers={"X-CSRF-Token": admin_csrf})
            for patient in sorted({int(n[:6]) for n in live.key_slices}):
                view = ctx.request.get(f"/api/followup/patients/{patient}").json()
                track = next((t for t in view["tracks"] if len(t["points"]) >= 2), None)
                if track is not None:
                    lesion = next(
                        le for le in view["lesions"] if le["lesion_id"] == track["points"][0]["lesion_id"]
                    )
                    page.goto(f"/followup/{lesion['file_name']}?lesion={lesion['lesion_id']}")
                    page.wait_for_selector("body[data-ready='true']")
                    page.wait_for_function(
                        "[...document.querySelectorAll('.fu-panel canvas')].every(c => c.dataset.loaded)"
                    )
                    page.screenshot(path=str(out / "ui_followup.png"), full_page=True)
                    written.append(out / "ui_followup.png")
                    break
        if only is None or "ui_evaluation" in only:
            page.goto("/evaluation")
            page.wait_for_selector("body[data-ready='1']")
            page.select_option("#eval-split", "all")
            page.click("#run-eval")
            page.wait_for_function("document.body.dataset.points === '6'", timeout=300_000)
            page.screenshot(path=str(out / "ui_evaluation.png"), full_page=True)
            written.append(out / "ui_evaluation.png")

        if only is None or "ui_screening" in only:
            # A screen of every key slice, then its result: the queue and the synthetic hidden-lesion check.
            page.goto("/screening")
            page.wait_for_selector("body[data-ready='1']")
            page.select_option("#screen-split", "all")
            page.click("#run-screen")
            page.wait_for_function("document.body.dataset.jobStatus === 'done'", timeout=600_000)
            page.wait_for_selector("#screen-result:not([hidden])")
            page.screenshot(path=str(out / "ui_screening.png"), full_page=True)
            written.append(out / "ui_screening.png")

        if only is None or "ui_viewer_1920" in only:
            page.set_viewport_size({"width": 1920, "height": 1080})
            _viewer(page, live.key_slices[-1])
            page.keyboard.press("2")
            page.screenshot(path=str(out / "ui_viewer_1920.png"))
            written.append(out / "ui_viewer_1920.png")
        ctx.close()
        browser.close()
    return written


def main(argv: list[str]) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=DOCS_IMAGES)
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument(
        "--only", action="append", default=None, help="Only this image, e.g. ui_screening (repeatable)"
    )
    parser.add_argument(
        "--model", type=Path, default=None, help="ONNX model (default: shipped one, else tiny test model)"
    )
    args = parser.parse_args(argv)
    if args.model is None:
        from app.config import DEFAULT_MODEL

        args.model = DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None
    if not chromium_available():
        print(f"{CHROMIUM} is missing", file=sys.stderr)
        return 1
    only = {name.removesuffix(".png") for name in args.only} if args.only else None
    for path in capture(args.out, args.patients, args.model, only):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
