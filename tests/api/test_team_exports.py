"""Exports choose their truth: original, corrected, one reader's reads, or the consensus of double reads."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest

from app.config import Settings
from app.db.session import make_engine, make_session_factory
from app.review import exports
from tests.api.lesion_api import KS_A, body, csv_rows, export_csv
from tests.api.team_api import assign, browsers, finish, marks_with, next_read, save

ADDED = {"recist": None, "box": [10.0, 10.0, 30.0, 30.0], "lesion_type": 3}


def _csv(admin: Any, truth: str, extras: int = 1) -> list[dict[str, str]]:
    r = admin.client.get("/api/exports/dl_info.csv", params={"truth": truth, "extras": extras})
    assert r.status_code == 200, r.text[:300]
    assert f"DL_info_{truth.replace(':', '-')}.csv" in r.headers["content-disposition"]
    return csv_rows(r.text)


def _rows_of(rows: list[dict[str, str]], file_name: str) -> list[dict[str, str]]:
    return [r for r in rows if r["File_name"] == file_name]


@pytest.fixture
def read_twice(app_settings: Settings, database_url: str) -> Any:
    """KS_A read by ann (first lesion flagged) and bob (a lesion added), both done; judy adjudicates."""
    with browsers(
        app_settings, database_url, boss="admin", ann="reviewer", bob="reviewer", judy="adjudicator"
    ) as p:
        a = assign(p["boss"], ["ann", "bob"], patient=1, split="test")
        ra, rb = next_read(p["ann"], a["id"]), next_read(p["bob"], a["id"])
        assert ra is not None and rb is not None and ra["file_name"] == KS_A
        first = ra["marks"]["lesions"][0]["id"]
        finish(
            p["ann"],
            save(p["ann"], ra, marks_with(ra, **{f"l{first}": {"flag_reason": "duplicate"}}))["read"],
        )
        marks_b = marks_with(rb)
        marks_b["added"] = [ADDED]
        finish(p["bob"], save(p["bob"], rb, marks_b)["read"])
        yield p, first


def test_a_readers_truth_is_their_read_over_the_corrected_state(read_twice: Any) -> None:
    p, first = read_twice
    corrected = _rows_of(csv_rows(export_csv(p["boss"], extras=1)), KS_A)
    ann = _rows_of(_csv(p["boss"], "reader:ann"), KS_A)
    bob = _rows_of(_csv(p["boss"], "reader:bob"), KS_A)
    by_id = {r["Lesion_id"]: r for r in ann}
    assert by_id[str(first)]["Flag_reason"] == "duplicate" and by_id[str(first)]["Possibly_noisy"] == "1"
    assert len(ann) == len(corrected) and len(bob) == len(corrected) + 1
    assert bob[-1]["Origin"] == "drawn" and bob[-1]["Lesion_id"] == ""
    # Other key slices are as corrected; the stored lesions were not touched by building a truth.
    others = [r for r in csv_rows(export_csv(p["boss"], extras=1)) if r["File_name"] != KS_A]
    assert [r for r in _csv(p["boss"], "reader:ann") if r["File_name"] != KS_A] == others
    assert _rows_of(csv_rows(export_csv(p["boss"], extras=1)), KS_A) == corrected


def test_the_consensus_truth_follows_adjudication(read_twice: Any) -> None:
    p, first = read_twice
    before = _rows_of(_csv(p["boss"], "consensus"), KS_A)
    assert before == _rows_of(_csv(p["boss"], "corrected"), KS_A)  # open disagreement: no consensus yet
    (case,) = body(p["judy"].client.get("/api/team/adjudications"))["adjudications"]
    pick = "ab"[case["readers"].index("ann")]
    body(
        p["judy"].write(
            "POST",
            f"/api/team/adjudications/{case['id']}/resolve",
            json={"version": case["version"], "pick": pick},
        )
    )
    after = {r["Lesion_id"]: r for r in _rows_of(_csv(p["boss"], "consensus"), KS_A)}
    assert after[str(first)]["Flag_reason"] == "duplicate"
    coco = p["boss"].client.get("/api/exports/coco.json", params={"truth": "reader:bob"})
    assert coco.status_code == 200 and "(reader:bob)" in coco.json()["info"]["description"]
    assert len(coco.json()["annotations"]) == len(_csv(p["boss"], "reader:bob"))
    original = p["boss"].client.get(
        "/api/exports/dl_info.csv", params={"truth": "original", "state": "corrected"}
    )
    assert original.text == export_csv(p["boss"], state="original")


def test_a_bad_truth_is_a_clear_4xx(read_twice: Any) -> None:
    p, _ = read_twice
    assert (
        p["boss"].client.get("/api/exports/dl_info.csv", params={"truth": "reader:nobody"}).status_code == 404
    )
    r = p["boss"].client.get("/api/exports/dl_info.csv", params={"truth": "everyone"})
    assert r.status_code == 422 and "truth must be one of" in r.json()["detail"]
    assert p["ann"].client.get("/api/exports/dl_info.csv", params={"truth": "reader:ann"}).status_code == 403


def _resolve_for_ann(p: dict[str, Any]) -> None:
    (case,) = body(p["judy"].client.get("/api/team/adjudications"))["adjudications"]
    pick = "ab"[case["readers"].index("ann")]
    body(
        p["judy"].write(
            "POST",
            f"/api/team/adjudications/{case['id']}/resolve",
            json={"version": case["version"], "pick": pick},
        )
    )


def test_the_streamed_consensus_coco_is_the_whole_one_in_any_chunk_size(
    read_twice: Any, database_url: str
) -> None:
    p, first = read_twice
    _resolve_for_ann(p)
    engine = make_engine(database_url)
    try:
        factory = make_session_factory(engine)
        with factory() as session:
            whole = exports.export_coco(session=session, truth="consensus")
        for chunk_rows in (1, 3, 2000):
            streamed = b"".join(
                exports.stream_coco(session_factory=factory, truth="consensus", chunk_rows=chunk_rows)
            )
            assert streamed == whole, chunk_rows
    finally:
        engine.dispose()
    flagged = [a for a in json.loads(whole)["annotations"] if a["attributes"]["lesion_id"] == first]
    assert [a["attributes"]["flag_reason"] for a in flagged] == ["duplicate"]  # the consensus, not corrected
    route = p["boss"].client.get("/api/exports/coco.json", params={"truth": "consensus"})
    assert route.status_code == 200 and route.content == whole


SERIES_A = KS_A.rsplit("_", 1)[0]


def _nifti(admin: Any, truth: str | None) -> zipfile.ZipFile:
    params = {} if truth is None else {"truth": truth}
    r = admin.client.get(f"/api/exports/nifti/{SERIES_A}.zip", params=params)
    assert r.status_code == 200, r.text[:300]
    label = "" if truth is None else "_" + truth.replace(":", "-")
    assert r.headers["content-disposition"] == f'attachment; filename="{SERIES_A}{label}.zip"'
    return zipfile.ZipFile(io.BytesIO(r.content))


@pytest.mark.parametrize("truth", ["original", "corrected", "consensus", "reader:ann", "reader:bob"])
def test_the_nifti_zip_holds_the_series_rows_under_the_chosen_truth(read_twice: Any, truth: str) -> None:
    p, _ = read_twice
    _resolve_for_ann(p)
    with _nifti(p["boss"], truth) as zf:
        volumes = [n for n in zf.namelist() if n.endswith(".nii.gz")]
        table = f"{SERIES_A}_DL_info_{truth.replace(':', '-')}.csv"
        assert zf.namelist() == [*volumes, table] and volumes
        rows = csv_rows(zf.read(table).decode("utf-8"))
    extras = 0 if truth == "original" else 1
    r = p["boss"].client.get("/api/exports/dl_info.csv", params={"truth": truth, "extras": extras})
    want = [row for row in csv_rows(r.text) if row["File_name"].startswith(SERIES_A + "_")]
    assert rows == want and rows
    with _nifti(p["boss"], None) as zf:  # without a truth: the volumes alone, as before
        assert zf.namelist() == volumes


def test_the_nifti_truths_differ_where_the_reads_do(read_twice: Any) -> None:
    p, _ = read_twice
    counts = {}
    for truth in ("corrected", "reader:bob"):
        with _nifti(p["boss"], truth) as zf:
            (table,) = [n for n in zf.namelist() if n.endswith(".csv")]
            counts[truth] = len(csv_rows(zf.read(table).decode("utf-8")))
    assert counts["reader:bob"] == counts["corrected"] + 1  # bob's added lesion


def test_a_bad_nifti_truth_is_a_clear_4xx(read_twice: Any) -> None:
    p, _ = read_twice
    url = f"/api/exports/nifti/{SERIES_A}.zip"
    assert p["boss"].client.get(url, params={"truth": "reader:nobody"}).status_code == 404
    r = p["boss"].client.get(url, params={"truth": "everyone"})
    assert r.status_code == 422 and "truth must be one of" in r.json()["detail"]
