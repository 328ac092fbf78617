"""Exports: the original CSV round-trips, the corrected CSV and COCO reflect flags and added lesions."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

from app.deeplesion.csvio import parse_dl_info_text
from app.deeplesion.schema import LesionRecord, coco_category, csv_coordinates
from tests.api.conftest import Api

Dataset = tuple[Path, list[LesionRecord]]
KS = "000001_01_01_108.png"
ADDED_RECIST = [30.0, 60.0, 70.0, 60.0, 50.0, 50.0, 50.0, 70.0]  # in the API's 0-based frame


def test_original_csv_export_reads_back_equal_to_the_input(api: Api, review_dataset: Dataset) -> None:
    api.login("admin1", "admin")
    r = api.client.get("/api/exports/dl_info.csv", params={"state": "original"})
    assert r.status_code == 200
    assert parse_dl_info_text(r.text) == review_dataset[1]
    assert r.content == (review_dataset[0] / "DL_info.csv").read_bytes()


def test_corrected_csv_reflects_a_flag_an_added_lesion_and_a_deletion(
    api: Api, review_dataset: Dataset
) -> None:
    api.login("admin2", "admin")
    lesions = api.client.get(f"/api/key-slices/{KS}").json()["lesions"]
    clean = next(le for le in lesions if le["flag"] is None)
    flagged_now = api.write(
        "POST",
        f"/api/lesions/{clean['id']}/flag",
        json={"version": clean["version"], "reason": "not_a_lesion", "note": ""},
    )
    assert flagged_now.status_code == 200, flagged_now.text  # type: ignore[attr-defined]
    added_now = api.write(
        "POST", f"/api/key-slices/{KS}/lesions", json={"recist": ADDED_RECIST, "lesion_type": 7}
    )
    assert added_now.status_code == 201, added_now.text  # type: ignore[attr-defined]
    result = api.write(
        "POST", f"/api/key-slices/{KS}/lesions", json={"box": [5, 5, 25, 25], "lesion_type": 3}
    ).json()  # type: ignore[attr-defined]
    doomed = next(le for le in result["key_slice"]["lesions"] if le["id"] == result["lesion_id"])
    gone = api.write("DELETE", f"/api/lesions/{doomed['id']}?version={doomed['version']}")
    assert gone.status_code == 200, gone.text  # type: ignore[attr-defined]

    rows = parse_dl_info_text(api.client.get("/api/exports/dl_info.csv?state=corrected").text)
    originals = review_dataset[1]
    assert len(rows) == len(originals) + 1
    on_slice = [r for r in rows if r.file_name == KS]
    # The CSV counts from 1: the API's 0-based coordinates come back plus one.
    clean_csv = csv_coordinates(clean["original"]["recist"])
    flagged = [r for r in on_slice if tuple(r.measurement_coordinates or ()) == clean_csv]
    assert len(flagged) == 1 and flagged[0].possibly_noisy == 1
    # A flag changes nothing else of the row.
    source_row = next(r for r in originals if r.measurement_coordinates == clean_csv)
    assert source_row.possibly_noisy == 0 and flagged[0] == replace(source_row, possibly_noisy=1)
    added = [r for r in on_slice if list(r.measurement_coordinates or ()) == [v + 1 for v in ADDED_RECIST]]
    assert len(added) == 1
    assert added[0].coarse_lesion_type == 7
    assert list(added[0].bounding_box) == [26.0, 46.0, 76.0, 76.0]
    assert list(added[0].lesion_diameters_px or ()) == [40.0, 20.0]
    # The deleted one is not there.
    assert not [r for r in on_slice if r.coarse_lesion_type == 3]
    # Rows untouched by review come back exactly as imported.
    others = [r for r in rows if r.file_name != KS]
    assert others == [r for r in originals if r.file_name != KS]


def test_corrected_csv_puts_added_lesions_after_the_key_slices_own_rows(
    api: Api, review_dataset: Dataset
) -> None:
    api.login("admin6", "admin")
    own = [r for r in review_dataset[1] if r.file_name == KS]
    assert len(own) > 1, "the key slice needs several rows for the order to mean anything"
    added = api.write(
        "POST", f"/api/key-slices/{KS}/lesions", json={"recist": ADDED_RECIST, "lesion_type": 7}
    )
    assert added.status_code == 201, added.text  # type: ignore[attr-defined]
    rows = parse_dl_info_text(api.client.get("/api/exports/dl_info.csv?state=corrected").text)
    on_slice = [r.measurement_coordinates for r in rows if r.file_name == KS]
    assert on_slice == [r.measurement_coordinates for r in own] + [csv_coordinates(ADDED_RECIST)]


def test_coco_export_has_images_boxes_and_recist(api: Api, review_dataset: Dataset) -> None:
    api.login("admin3", "admin")
    doc = json.loads(api.client.get("/api/exports/coco.json?state=original").content)
    records = review_dataset[1]
    assert len(doc["images"]) == len({r.file_name for r in records})
    assert len(doc["annotations"]) == len(records)
    first = records[0]
    ann = doc["annotations"][0]
    # COCO is in the 0-based frame: the CSV's values minus one.
    x1, y1, x2, y2 = (v - 1 for v in first.bounding_box)
    assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]
    assert ann["recist"] == [v - 1 for v in first.measurement_coordinates or ()]
    assert ann["num_keypoints"] == 4 and ann["keypoints"][2::3] == [2, 2, 2, 2]
    assert ann["category_id"] == first.coarse_lesion_type
    assert doc["images"][0]["key_slice"] == first.file_name
    assert doc["images"][0]["file_name"] == "Images_png/000001_01_01/108.png"
    # Unlabelled (-1) lesions get the positive category 9; every category id is positive.
    assert {c["id"] for c in doc["categories"]} >= {coco_category(r.coarse_lesion_type) for r in records}
    assert min(c["id"] for c in doc["categories"]) >= 1
    unlabelled = [a for a, r in zip(doc["annotations"], records, strict=True) if r.coarse_lesion_type == -1]
    assert unlabelled and {a["category_id"] for a in unlabelled} == {9}
    noisy = [a["attributes"]["possibly_noisy"] for a in doc["annotations"]]
    assert noisy == [r.possibly_noisy for r in records]


def test_nifti_export_zips_the_stored_runs_and_404s_without_slices(api: Api) -> None:
    api.login("admin4", "admin")
    r = api.client.get("/api/exports/nifti/000001_01_01.zip")
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.namelist() == ["000001_01_01_106-110.nii.gz"]
    assert api.client.get("/api/exports/nifti/000001_02_01.zip").status_code == 404
    assert api.client.get("/api/exports/nifti/..%2Fsecret.zip").status_code == 404


def test_bad_export_state_is_422(api: Api) -> None:
    api.login("admin5", "admin")
    assert api.client.get("/api/exports/dl_info.csv?state=mine").status_code == 422
