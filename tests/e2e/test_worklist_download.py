"""The work list's CSV button in Chromium: the file it saves is the API's filtered export, byte for byte."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from tests.e2e.live import LiveServer


def test_worklist_csv_button_downloads_the_apis_filtered_rows(
    page: Any, server: LiveServer, signed_in: dict[str, Any], tmp_path: Path
) -> None:
    everyone = page.context.request.get("/api/key-slices?page_size=500").json()["items"]
    patient = everyone[0]["patient_index"]
    query = f"patient={patient}&sort=size&order=desc"
    listed = page.context.request.get(f"/api/key-slices?{query}&page_size=500").json()["items"]
    wanted = {i["file_name"] for i in listed}
    assert wanted and len(wanted) < len(everyone), "the filter should keep some key slices, not all"

    page.goto(f"/?{query}")
    page.wait_for_function(f"document.body.dataset.listQuery === '{query}'")
    link = page.locator("#download-worklist-csv")
    assert link.get_attribute("href") == f"/api/exports/worklist.csv?{query}"
    with page.expect_download() as info:
        link.click()
    download = info.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert download.suggested_filename.endswith(".csv")
    api = page.context.request.get(f"/api/exports/worklist.csv?{query}")
    assert api.ok
    assert saved.read_bytes() == api.body()
    table = list(csv.reader(io.StringIO(saved.read_text())))
    assert table[0][0] == "File_name" and "Review_state" in table[0]
    # Every matching key slice has rows; a lesion drawn on a neighbour slice names that slice.
    names = {row[0] for row in table[1:]}
    assert wanted <= names
    assert {n.rsplit("_", 1)[0] for n in names} == {n.rsplit("_", 1)[0] for n in wanted}
