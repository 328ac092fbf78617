"""The viewer's strip of the patient's other key slices in Chromium: the API's list, real images, links."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import open_viewer
from tests.e2e.live import LiveServer


def patient_items(page: Any, patient: int) -> list[dict[str, Any]]:
    """The work list's key slices of one patient as the API gives them."""
    body = page.context.request.get(f"/api/key-slices?patient={patient}&page_size=500").json()
    assert body["total"] == len(body["items"])
    items: list[dict[str, Any]] = body["items"]
    return items


def test_thumbnails_are_the_patients_other_key_slices_and_open_them(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    # The patient with the most key slices, so the strip has several.
    everyone = page.context.request.get("/api/key-slices?page_size=500").json()["items"]
    counts: dict[int, int] = {}
    for item in everyone:
        counts[item["patient_index"]] = counts.get(item["patient_index"], 0) + 1
    patient = max(counts, key=lambda p: counts[p])
    items = patient_items(page, patient)
    assert len(items) >= 2
    name = items[0]["file_name"]
    open_viewer(page, name)
    page.wait_for_selector("#viewer[data-thumbs]")
    links = page.locator("#thumbs a.thumb")
    shown = [links.nth(i).get_attribute("data-file-name") for i in range(links.count())]
    assert sorted(shown) == sorted(i["file_name"] for i in items if i["file_name"] != name)
    # Every thumbnail is that slice's image, really loaded, and scaled down to a thumbnail.
    page.wait_for_function(
        "[...document.querySelectorAll('#thumbs img')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    for i in range(links.count()):
        img = links.nth(i).locator("img")
        target = shown[i]
        assert target is not None
        assert f"/api/slices/{target[:-4]}.png" in (img.get_attribute("src") or "")
        box = img.bounding_box()
        assert box is not None and box["width"] <= 80
    # The study line: which study of the patient this is, out of the studies the work list knows.
    ks = page.context.request.get(f"/api/key-slices/{name}").json()
    studies = sorted({i["study_index"] for i in items})
    assert page.get_attribute("#viewer", "data-study-of") == f"{ks['study_index']}/{len(studies)}"
    assert "no study date" in page.inner_text("#study-of")
    assert f"study {ks['study_index']}/{len(studies)}" in page.inner_text("#info-tl")
    # Clicking one opens its viewer.
    target = shown[-1]
    links.nth(links.count() - 1).click()
    page.wait_for_url(f"**/viewer/{target}")
    page.wait_for_selector("#viewer[data-ready='1']")
    assert page.get_attribute("#viewer", "data-file-name") == target
