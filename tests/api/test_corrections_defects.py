"""Issue 10, "Trustworthy corrections": one API test per defect, written to docs/api.md before the fix."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.config import Settings
from app.deeplesion.schema import LesionRecord
from tests.api.conftest import PASSWORD, Api, add_user
from tests.api.lesion_api import (
    KS_A,
    KS_B,
    KS_C,
    ScriptedDetector,
    accept,
    add,
    all_nan,
    body,
    coco_slice_name,
    confirm,
    csv_lesion,
    csv_rows,
    edit,
    export_coco,
    export_csv,
    flag,
    history,
    key_slice,
    lesion_in,
    numbers,
    open_api,
    plus_one,
    predict,
    prediction_in,
    redo,
    reject,
    undo,
)
from tests.readers import read_dl_info_mulan

Dataset = tuple[Path, list[LesionRecord]]
# A RECIST inside the 128 px test images, away from every lesion of the dataset (0-based app frame).
FREE_RECIST = [12.0, 100.0, 28.0, 100.0, 20.0, 95.0, 20.0, 105.0]
FREE_BOX = [7.0, 90.0, 33.0, 110.0]  # FREE_RECIST's box by the 5 px rule
OTHER_BOX = [90.0, 8.0, 116.0, 30.0]
METADATA = (
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Slice_range",
    "Spacing_mm_px_",
    "Image_size",
    "DICOM_windows",
    "Patient_gender",
    "Patient_age",
    "Train_Val_Test",
)


@pytest.fixture
def anna(api: Api) -> Api:
    return api.login("anna")


@pytest.fixture
def admin(second_api: Api) -> Api:
    return second_api.login("boss", "admin")


@pytest.fixture
def detector() -> ScriptedDetector:
    return ScriptedDetector()


@pytest.fixture
def predicting(app_settings: Settings, database_url: str, detector: ScriptedDetector) -> Iterator[Api]:
    """A reviewer whose server has a (scripted) detector loaded."""
    with open_api(app_settings, database_url, detector) as api:
        yield api.login("pia")


def _result(response: Any, status: int = 200) -> dict[str, Any]:
    """A ReviewResult, checked for its shape."""
    result = body(response, status)
    assert set(result) >= {"key_slice", "lesion_id", "prediction_id", "entry"}, sorted(result)
    return result


def _touched(result: dict[str, Any]) -> dict[str, Any]:
    return lesion_in(result["key_slice"], result["lesion_id"])


def _rows_of(text: str, file_name: str) -> list[dict[str, str]]:
    return [r for r in csv_rows(text) if r["File_name"] == file_name]


def _row_of_lesion(text: str, lesion_id: int) -> dict[str, str]:
    rows = [r for r in csv_rows(text) if r["Lesion_id"] == str(lesion_id)]
    assert len(rows) == 1, f"lesion {lesion_id}: {len(rows)} rows"
    return rows[0]


def _original_row(rows: list[dict[str, str]], lesion: dict[str, Any]) -> dict[str, str]:
    """The DL_info row a csv lesion was imported from (its RECIST cell, 1-based, is the lesion's + 1)."""
    want = plus_one(lesion["original"]["recist"])
    found = [r for r in rows if numbers(r["Measurement_coordinates"]) == pytest.approx(want, abs=1e-9)]
    assert len(found) == 1, f"lesion {lesion['id']}: {len(found)} original rows"
    return found[0]


def _annotation_of(coco: dict[str, Any], lesion_id: int) -> dict[str, Any]:
    anns = [a for a in coco["annotations"] if a["attributes"]["lesion_id"] == lesion_id]
    assert len(anns) == 1, f"lesion {lesion_id}: {len(anns)} annotations"
    return anns[0]


def _image_of(coco: dict[str, Any], ann: dict[str, Any]) -> dict[str, Any]:
    return next(i for i in coco["images"] if i["id"] == ann["image_id"])


def _xywh(box: list[float]) -> list[float]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


# --- 1. an edited end point is what the export writes, after a confirm or a flag ----------------------


@pytest.mark.parametrize("then", ["confirm", "flag"])
def test_an_edited_end_point_is_what_the_corrected_export_writes_after_a_confirm_or_a_flag(
    anna: Api, admin: Api, then: str
) -> None:
    lesion = csv_lesion(key_slice(anna, KS_A))
    moved = list(lesion["current"]["recist"])
    moved[2] += 6.0  # drag the long axis' second end point 6 px to the right
    edited = _touched(_result(edit(anna, lesion, recist=moved)))
    assert edited["current"]["recist"] == moved and edited["edited"] is True
    after = _touched(
        _result(confirm(anna, edited) if then == "confirm" else flag(anna, edited, "other", "x"))
    )
    assert after["current"]["recist"] == moved, f"{then} must not touch the geometry"

    row = _row_of_lesion(export_csv(admin, extras=1), lesion["id"])
    assert numbers(row["Measurement_coordinates"]) == pytest.approx(plus_one(moved), abs=1e-9)
    assert numbers(row["Bounding_boxes"]) == pytest.approx(plus_one(after["current"]["box"]), abs=1e-9)
    assert row["Possibly_noisy"] == ("1" if then == "flag" else "0")
    ann = _annotation_of(export_coco(admin), lesion["id"])
    assert ann["recist"] == pytest.approx(moved, abs=1e-9)
    assert ann["bbox"] == pytest.approx(_xywh(after["current"]["box"]), abs=1e-9)


# --- 2. a lesion drawn on a context slice stays on that slice -----------------------------------------


def test_a_lesion_drawn_on_a_context_slice_is_exported_and_evaluated_on_that_slice(
    anna: Api, admin: Api, app_settings: Settings, database_url: str
) -> None:
    from app.detection.pipeline import evaluate_dataset, truth_from_records
    from app.review.evaluations import corrected_state

    ks = key_slice(anna, KS_A)
    context = ks["key_slice_index"] + 2  # 110: inside the slice range and stored on disk
    assert context in ks["stored_slices"] and ks["slice_range"][0] <= context <= ks["slice_range"][1]
    drawn = _touched(_result(add(anna, KS_A, recist=FREE_RECIST, lesion_type=7, slice_index=context), 201))
    assert drawn["current"]["slice_index"] == context
    context_name = f"{ks['series_folder']}_{context:03d}.png"

    row = _row_of_lesion(export_csv(admin, extras=1), drawn["id"])
    assert (row["File_name"], row["Key_slice_index"]) == (context_name, str(context))
    assert numbers(row["Bounding_boxes"]) == pytest.approx(plus_one(drawn["current"]["box"]), abs=1e-9)
    coco = export_coco(admin)
    ann = _annotation_of(coco, drawn["id"])
    image = _image_of(coco, ann)
    assert image["file_name"] == f"Images_png/{ks['series_folder']}/{context:03d}.png"
    assert image["key_slice"] == row["File_name"]  # the DL_info File_name the CSV gives the lesion
    assert ann["attributes"]["slice_index"] == context

    # `evaluate --against corrected` reads corrected_state: the lesion must be ground truth on its own slice.
    truths = truth_from_records(corrected_state(database_url), "test")
    on_context = [t for t in truths if t.file_name == context_name]
    assert len(on_context) == 1, [t.file_name for t in truths]
    assert [list(g.box) for g in on_context[0].lesions] == [pytest.approx(drawn["current"]["box"], abs=1e-9)]
    assert all(
        list(g.box) != pytest.approx(drawn["current"]["box"])
        for t in truths
        if t.file_name == KS_A
        for g in t.lesions
    )
    # A detector that finds it there and nowhere else scores a hit.
    detector = ScriptedDetector(boxes={context_name: [(drawn["current"]["box"], 0.9)]})
    result = evaluate_dataset(
        app_settings.data_dir, detector, split="test", truths=truths, against="corrected"
    )
    assert context_name in detector.calls
    assert result["sensitivity"][-1] > 0


# --- 3. a noisy flag survives a later geometry or type edit ---------------------------------------------


@pytest.mark.parametrize("change", ["geometry", "type"])
def test_a_noisy_flag_survives_a_later_geometry_or_type_edit(anna: Api, admin: Api, change: str) -> None:
    lesion = csv_lesion(key_slice(anna, KS_A))
    flagged = _touched(_result(flag(anna, lesion, "wrong_measurement", "long axis too short")))
    payload: dict[str, Any] = {"recist": FREE_RECIST} if change == "geometry" else {"lesion_type": 8}
    after = _touched(_result(edit(anna, flagged, **payload)))
    assert after["flag"] is not None and after["flag"]["reason"] == "wrong_measurement"
    assert after["flag"]["note"] == "long axis too short"
    assert after["review"] == "flagged" and after["edited"] is True
    assert after["layer"] == "corrected"
    # And it stays through a reload.
    assert lesion_in(key_slice(anna, KS_A), lesion["id"])["flag"] == after["flag"]

    row = _row_of_lesion(export_csv(admin, extras=1), lesion["id"])
    assert row["Possibly_noisy"] == "1" and row["Flag_reason"] == "wrong_measurement"
    if change == "type":
        assert row["Coarse_lesion_type"] == "8"
    else:
        assert numbers(row["Measurement_coordinates"]) == pytest.approx(plus_one(FREE_RECIST), abs=1e-9)
    attributes = _annotation_of(export_coco(admin), lesion["id"])["attributes"]
    assert attributes["possibly_noisy"] in (1, True) and attributes["flag_reason"] == "wrong_measurement"


# --- 4. undo after accept #1 and reject #2 takes back the reject ---------------------------------------


def test_undo_after_accepting_one_prediction_and_rejecting_another_takes_back_the_reject_only(
    predicting: Api, detector: ScriptedDetector
) -> None:
    detector.boxes[KS_A] = [(FREE_BOX, 0.9), (OTHER_BOX, 0.7)]
    ks = predict(predicting, KS_A)
    first, second = sorted(ks["predictions"], key=lambda p: -p["score"])
    accepted = _result(accept(predicting, first, lesion_type=5))
    lesion_id = accepted["lesion_id"]
    assert prediction_in(accepted["key_slice"], first["id"])["status"] == "accepted"
    rejected = _result(reject(predicting, prediction_in(accepted["key_slice"], second["id"])))
    assert prediction_in(rejected["key_slice"], second["id"])["status"] == "rejected"

    undone = _result(undo(predicting, KS_A))
    assert undone["entry"] is not None and undone["entry"]["action"] == "undo"
    assert prediction_in(undone["key_slice"], second["id"])["status"] == "pending"
    assert prediction_in(undone["key_slice"], first["id"])["status"] == "accepted"
    kept = lesion_in(undone["key_slice"], lesion_id)
    assert kept["origin"] == "prediction" and kept["current"]["box"] == FREE_BOX
    assert kept["prediction"]["id"] == first["id"]
    # The reload agrees with the answer.
    reloaded = key_slice(predicting, KS_A)
    assert prediction_in(reloaded, second["id"])["status"] == "pending"
    assert lesion_in(reloaded, lesion_id)["current"]["box"] == FREE_BOX


# --- 5. box-only lesions: no invented RECIST ---------------------------------------------------------------


def test_box_only_lesions_have_nan_measurements_in_csv_and_invisible_keypoints_in_coco(
    predicting: Api, detector: ScriptedDetector, admin: Api
) -> None:
    drawn = _touched(_result(add(predicting, KS_A, box=FREE_BOX, lesion_type=3), 201))
    detector.boxes[KS_A] = [(OTHER_BOX, 0.8)]
    pred = predict(predicting, KS_A)["predictions"][0]
    accepted = _touched(_result(accept(predicting, pred, lesion_type=6)))
    for lesion in (drawn, accepted):
        assert lesion["measured"] is False and lesion["current"]["recist"] is None
        assert lesion["current"]["diameters_px"] is None

    text = export_csv(admin, extras=1)
    for lesion in (drawn, accepted):
        row = _row_of_lesion(text, lesion["id"])
        recist = numbers(row["Measurement_coordinates"])
        diameters = numbers(row["Lesion_diameters_Pixel_"])
        assert len(recist) == 8 and all_nan(recist), row["Measurement_coordinates"]
        assert len(diameters) == 2 and all_nan(diameters), row["Lesion_diameters_Pixel_"]
        assert numbers(row["Bounding_boxes"]) == pytest.approx(plus_one(lesion["current"]["box"]), abs=1e-9)
    omitted = {r["Lesion_id"] for r in csv_rows(export_csv(admin, extras=1, box_only="omit"))}
    assert str(drawn["id"]) not in omitted and str(accepted["id"]) not in omitted

    coco = export_coco(admin)
    for lesion in (drawn, accepted):
        ann = _annotation_of(coco, lesion["id"])
        assert ann["keypoints"] == [0] * 12 and ann["num_keypoints"] == 0 and ann["recist"] is None
        assert ann["bbox"] == pytest.approx(_xywh(lesion["current"]["box"]), abs=1e-9)


# --- 6. flag reasons and notes reach the exports ------------------------------------------------------------


def test_flag_reasons_and_notes_reach_the_extras_columns_and_coco_attributes(anna: Api, admin: Api) -> None:
    ks = key_slice(anna, KS_A)
    note = 'two lesions, "merged"; see 2nd series\u2026'
    flagged = _touched(_result(flag(anna, csv_lesion(ks), "other", note)))
    dataset_noisy = csv_lesion(ks, noisy=True)

    text = export_csv(admin, extras=1)
    row = _row_of_lesion(text, flagged["id"])
    assert (row["Flag_reason"], row["Flag_note"], row["Review_state"]) == ("other", note, "flagged")
    assert (row["Origin"], row["Reviewer"], row["Possibly_noisy"]) == ("csv", "anna", "1")
    noisy_row = _row_of_lesion(text, dataset_noisy["id"])
    assert (noisy_row["Flag_reason"], noisy_row["Possibly_noisy"]) == ("dataset", "1")
    # Without extras the file keeps the dataset's 18 columns.
    assert list(csv_rows(export_csv(admin))[0]) == list(csv_rows(export_csv(admin, state="original"))[0])

    coco = export_coco(admin)
    attributes = _annotation_of(coco, flagged["id"])["attributes"]
    assert (attributes["flag_reason"], attributes["flag_note"]) == ("other", note)
    assert attributes["review_state"] == "flagged" and attributes["reviewer"] == "anna"
    assert _annotation_of(coco, dataset_noisy["id"])["attributes"]["flag_reason"] == "dataset"


# --- 7. added rows copy their metadata; an edit keeps the location and untouched digits ---------------------


def test_an_added_row_copies_its_key_slices_metadata_cells_exactly_and_a_nan_age_stays_nan(
    anna: Api, admin: Api, tmp_path: Path
) -> None:
    # KS_C's patient has no known age: its rows say NaN, as in the real file.
    drawn = _touched(_result(add(anna, KS_C, recist=FREE_RECIST, lesion_type=2), 201))
    text = export_csv(admin, extras=1)
    own = [r for r in _rows_of(text, KS_C) if r["Origin"] == "csv"]
    added = _row_of_lesion(text, drawn["id"])
    for column in METADATA:
        assert added[column] == own[0][column], column
    assert added["Patient_age"] == "NaN"
    assert [p.strip() for p in added["Normalized_lesion_location"].split(",")][:2] == ["NaN", "NaN"]
    z_own = numbers(own[0]["Normalized_lesion_location"])[2]
    assert numbers(added["Normalized_lesion_location"])[2] == z_own
    # MULAN's loader does float() on the age: the export must not make it raise.
    (tmp_path / "DL_info.csv").write_text(export_csv(admin), encoding="utf-8")
    info = read_dl_info_mulan(tmp_path / "DL_info.csv")
    rows_c = info.filenames == KS_C[:12] + os.sep + KS_C[13:]
    assert rows_c.sum() == len(own) + 1 and np.isnan(info.age[rows_c]).all()


def test_an_edited_lesion_keeps_its_original_normalized_location(anna: Api, admin: Api) -> None:
    lesion = csv_lesion(key_slice(anna, KS_A))
    original = _original_row(csv_rows(export_csv(admin, state="original")), lesion)
    _result(edit(anna, lesion, recist=FREE_RECIST))
    row = _row_of_lesion(export_csv(admin, extras=1), lesion["id"])
    assert row["Normalized_lesion_location"] == original["Normalized_lesion_location"]


def test_a_type_only_edit_keeps_every_other_cell_of_the_row_as_the_file_spelled_it(
    anna: Api, admin: Api
) -> None:
    before = _rows_of(export_csv(admin, state="original"), KS_B)
    assert len(before) == 1
    lesion = csv_lesion(key_slice(anna, KS_B))
    _result(edit(anna, lesion, lesion_type=5))
    after = _rows_of(export_csv(admin), KS_B)
    assert len(after) == 1
    # e.g. the diameters as measured, "10, 6.0126", not recomputed from the end points (9.999, 6.0105).
    changed = {c for c in before[0] if before[0][c] != after[0][c]}
    assert changed == {"Coarse_lesion_type"}, {c: (before[0][c], after[0][c]) for c in changed}
    assert after[0]["Coarse_lesion_type"] == "5"


# --- 8. coordinate origin: CSV 1-based, API 0-based ---------------------------------------------------------


def test_csv_cells_are_the_apis_coordinates_plus_one_and_untouched_rows_round_trip_byte_for_byte(
    anna: Api, admin: Api, review_dataset: Dataset
) -> None:
    original_text = (review_dataset[0] / "DL_info.csv").read_text(encoding="utf-8")
    rows = csv_rows(original_text)
    seen = 0
    for name in dict.fromkeys(r["File_name"] for r in rows):
        for lesion in key_slice(anna, name)["lesions"]:
            original, row = lesion["original"], _original_row(rows, lesion)
            assert [v - 1 for v in numbers(row["Bounding_boxes"])] == pytest.approx(original["box"], abs=1e-9)
            assert original == lesion["current"]
            seen += 1
    assert seen == len(rows)

    # An edit with fractional end points is written back as exactly +1 of what the API shows.
    lesion = csv_lesion(key_slice(anna, KS_A))
    edited_line = rows.index(_original_row(rows, lesion)) + 1  # line 0 is the header; no cell spans lines
    recist = [12.25, 100.5, 28.75, 100.5, 20.5, 95.25, 20.5, 105.75]
    edited = _touched(_result(edit(anna, lesion, recist=recist)))
    row = _row_of_lesion(export_csv(admin, extras=1), lesion["id"])
    assert numbers(row["Measurement_coordinates"]) == pytest.approx(
        plus_one(edited["current"]["recist"]), abs=1e-9
    )
    assert numbers(row["Bounding_boxes"]) == pytest.approx(plus_one(edited["current"]["box"]), abs=1e-9)

    # Every other row, the noisy one and KS_B's real-file digits included, comes back byte for byte, in order.
    original_lines = original_text.splitlines()
    corrected_lines = export_csv(admin).splitlines()
    assert len(corrected_lines) == len(original_lines)
    for i, (was, now) in enumerate(zip(original_lines, corrected_lines, strict=True)):
        if i != edited_line:
            assert now == was
    assert corrected_lines[edited_line] != original_lines[edited_line]


# --- 12. parallel adds on one key slice ---------------------------------------------------------------------


def test_twenty_parallel_adds_on_one_key_slice_move_its_version_by_exactly_twenty(
    app_settings: Settings, database_url: str
) -> None:
    from tests.e2e.live import serve

    add_user(database_url, "rush")
    with serve(app_settings, detector=None) as base:
        with httpx.Client(base_url=base) as login:
            r = login.post("/api/auth/login", json={"username": "rush", "password": PASSWORD})
            assert r.status_code == 200, r.text
            cookies, csrf = dict(login.cookies), r.json()["csrf_token"]
            before = login.get(f"/api/key-slices/{KS_A}").json()
        start = threading.Barrier(20)
        answers: list[httpx.Response | BaseException] = []
        lock = threading.Lock()

        def add_one(i: int) -> None:
            # Each thread its own client and connection: the requests really meet in the server.
            with httpx.Client(
                base_url=base, cookies=cookies, headers={"X-CSRF-Token": csrf}, timeout=60
            ) as c:
                start.wait()
                try:
                    x = 4.0 + 10 * (i % 10)
                    y = 100.0 + 12 * (i // 10)
                    answer: httpx.Response | BaseException = c.post(
                        f"/api/key-slices/{KS_A}/lesions",
                        json={"box": [x, y, x + 8, y + 8], "lesion_type": 1},
                    )
                except BaseException as exc:  # noqa: BLE001 - reported below with the others
                    answer = exc
                with lock:
                    answers.append(answer)

        threads = [threading.Thread(target=add_one, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        with httpx.Client(base_url=base, cookies=cookies) as c:
            after = c.get(f"/api/key-slices/{KS_A}").json()
    statuses = [a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers]
    assert statuses == [201] * 20, statuses
    assert after["version"] == before["version"] + 20
    assert len(after["lesions"]) == len(before["lesions"]) + 20
    ids = {a.json()["lesion_id"] for a in answers if isinstance(a, httpx.Response)}
    assert len(ids) == 20


# --- 13. saving unchanged geometry changes nothing ----------------------------------------------------


@pytest.mark.parametrize("send", ["recist", "recist+box", "type", "all"])
def test_saving_unchanged_geometry_changes_nothing(anna: Api, send: str) -> None:
    ks = key_slice(anna, KS_A)
    lesion = csv_lesion(ks)
    current = lesion["current"]
    payload: dict[str, Any] = {
        "recist": {"recist": current["recist"]},
        "recist+box": {"recist": current["recist"], "box": current["box"]},
        "type": {"lesion_type": current["lesion_type"]},
        "all": {"recist": current["recist"], "box": current["box"], "lesion_type": current["lesion_type"]},
    }[send]
    result = _result(edit(anna, lesion, **payload))
    assert result["entry"] is None
    after = _touched(result)
    assert after["version"] == lesion["version"] and after["edited"] is False
    assert after["review"] == lesion["review"] and after["current"] == current
    assert result["key_slice"]["version"] == ks["version"]
    assert history(anna, KS_A) == []
    # Nothing to undo either.
    assert _result(undo(anna, KS_A))["entry"] is None


# --- 14. COCO names files that exist and only positive categories -------------------------------------------


def test_coco_names_image_files_that_exist_and_has_no_negative_category(
    anna: Api, admin: Api, review_dataset: Dataset
) -> None:
    from tests.api.review_data import STORED

    data_dir, records = review_dataset
    coco = export_coco(admin, state="corrected")
    categories = {c["id"] for c in coco["categories"]}
    assert all(c >= 1 for c in categories)
    assert {a["category_id"] for a in coco["annotations"]} <= categories
    # The dataset's unlabelled lesions (type -1) are in the unlabelled category, not dropped.
    unlabelled = [c["id"] for c in coco["categories"] if c["name"] == "unlabelled"]
    assert len(unlabelled) == 1
    in_unlabelled = sum(a["category_id"] == unlabelled[0] for a in coco["annotations"])
    assert in_unlabelled == sum(r.coarse_lesion_type == -1 for r in records) > 0
    assert {i["key_slice"] for i in coco["images"]} == {r.file_name for r in records}
    for image in coco["images"]:
        name = coco_slice_name(image)
        folder, index = name.rsplit("_", 1)
        stored = int(index[:-4]) in STORED.get(folder, [])
        assert (data_dir / image["file_name"]).is_file() == stored, image["file_name"]
        assert folder == key_slice(anna, image["key_slice"])["series_folder"]
    assert any((data_dir / i["file_name"]).is_file() for i in coco["images"])


# --- 15. accepting a prediction that duplicates a lesion ---------------------------------------------


def test_accepting_a_prediction_that_matches_a_lesion_is_refused_unless_allowed(
    predicting: Api, detector: ScriptedDetector
) -> None:
    existing = csv_lesion(key_slice(predicting, KS_A))
    detector.boxes[KS_A] = [(existing["current"]["box"], 0.95)]
    ks = predict(predicting, KS_A)
    pred = ks["predictions"][0]
    assert pred["matches_annotation"] is True
    refused = predicting.write(
        "POST", f"/api/predictions/{pred['id']}/accept", json={"version": pred["version"], "lesion_type": 4}
    )
    assert refused.status_code == 409, refused.text  # type: ignore[attr-defined]
    detail = refused.json()  # type: ignore[attr-defined]
    assert detail["code"] == "duplicate_lesion" and detail["lesion_id"] == existing["id"]
    unchanged = key_slice(predicting, KS_A)
    assert len(unchanged["lesions"]) == len(ks["lesions"])
    assert prediction_in(unchanged, pred["id"])["status"] == "pending"
    assert unchanged["version"] == ks["version"]

    allowed = _result(accept(predicting, pred, lesion_type=4, allow_duplicate=True))
    assert prediction_in(allowed["key_slice"], pred["id"])["status"] == "accepted"
    assert len(allowed["key_slice"]["lesions"]) == len(ks["lesions"]) + 1
    assert _touched(allowed)["current"]["box"] == existing["current"]["box"]


# --- contract checks the stateful test (test_corrections_stateful.py) ran into ----------------------


@pytest.mark.parametrize("action", ["accept", "reject"])
def test_a_stale_prediction_write_is_a_409_that_carries_the_current_key_slice(
    predicting: Api, detector: ScriptedDetector, action: str
) -> None:
    detector.boxes[KS_A] = [(FREE_BOX, 0.9)]
    pred = predict(predicting, KS_A)["predictions"][0]
    stale = {**pred, "version": pred["version"] - 1}
    r = accept(predicting, stale, lesion_type=3) if action == "accept" else reject(predicting, stale)
    conflict = body(r, 409)
    assert conflict["code"] == "edit_conflict" and conflict["current"]["id"] == pred["id"]
    assert conflict["key_slice"] is not None, "docs/api.md: 409 bodies carry key_slice: KeySlice"
    assert prediction_in(conflict["key_slice"], pred["id"])["status"] == "pending"


@pytest.mark.parametrize("meanwhile", ["accept", "reject"])
def test_redo_of_an_accept_is_a_409_once_someone_else_decided_the_prediction(
    app_settings: Settings, database_url: str, detector: ScriptedDetector, predicting: Api, meanwhile: str
) -> None:
    detector.boxes[KS_A] = [(FREE_BOX, 0.9)]
    pred = predict(predicting, KS_A)["predictions"][0]
    mine = _result(accept(predicting, pred, lesion_type=5))["lesion_id"]
    pending = prediction_in(_result(undo(predicting, KS_A))["key_slice"], pred["id"])
    assert pending["status"] == "pending"
    with open_api(app_settings, database_url, detector) as other:
        other.login("otto")
        decided = _result(
            accept(other, pending, lesion_type=6) if meanwhile == "accept" else reject(other, pending)
        )
    theirs = prediction_in(decided["key_slice"], pred["id"])

    r = redo(predicting, KS_A)
    assert r.status_code == 409, r.text  # type: ignore[attr-defined]
    now = key_slice(predicting, KS_A)
    assert prediction_in(now, pred["id"]) == theirs, "the other reviewer's decision was overwritten"
    assert mine not in [le["id"] for le in now["lesions"]]
