"""Degenerate input on the review endpoints is a 4xx JSON answer, never a 500; plus the stats overview."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.deeplesion.schema import LesionRecord
from tests.api.conftest import Api

KS = "000001_01_01_108.png"


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        ("POST", "/api/lesions/1/confirm", b"{not json", 422),
        ("POST", "/api/lesions/1/confirm", b'{"version": "seven"}', 422),
        ("POST", "/api/lesions/1/confirm", b'{"version": 99999999999999999999}', 422),
        ("POST", "/api/lesions/1/confirm", b"[]", 422),
        ("POST", "/api/lesions/999999/confirm", b'{"version": 1}', 404),
        ("POST", "/api/lesions/0/confirm", b'{"version": 1}', 422),
        ("PUT", "/api/lesions/1/geometry", b'{"version": 1, "recist": [NaN,1,2,3,4,5,6,7]}', 422),
        ("PUT", "/api/lesions/1/geometry", b'{"version": 1, "box": [1e400, 0, 1, 1]}', 422),
        ("PUT", "/api/lesions/1/geometry", b'{"version": 1, "lesion_type": 42}', 422),
        ("PUT", "/api/lesions/1/geometry", b'{"version": 1, "lesion_type": 0}', 422),  # not a DL_info type
        ("POST", f"/api/key-slices/{KS}/lesions", b'{"lesion_type": 4}', 422),
        ("POST", f"/api/key-slices/{KS}/lesions", b'{"box": [0, 0, 0, 0], "lesion_type": 4}', 422),
        ("POST", "/api/key-slices/../../etc/passwd/lesions", b'{"box": [1, 1, 9, 9], "lesion_type": 4}', 404),
        (
            "POST",
            "/api/key-slices/000009_01_01_001.png/lesions",
            b'{"box": [1, 1, 9, 9], "lesion_type": 4}',
            404,
        ),
        ("PUT", f"/api/key-slices/{KS}/status", b'{"status": "finished", "version": 0}', 422),
        ("POST", "/api/key-slices/nope.png/undo", b"", 404),
        ("DELETE", "/api/lesions/1", b"", 422),
        ("POST", "/api/predictions/1/accept", b'{"version": 1, "lesion_type": -7}', 422),
    ],
)
def test_bad_input_gets_a_json_4xx_never_500(
    api: Api, method: str, url: str, body: bytes, status: int
) -> None:
    api.login("robin")
    r = api.client.request(
        method, url, content=body, headers={"X-CSRF-Token": api.csrf, "Content-Type": "application/json"}
    )
    assert r.status_code == status, r.text
    assert r.json()["code"]
    # The server keeps serving.
    assert api.client.get(f"/api/key-slices/{KS}").status_code == 200


def test_stats_counts_types_and_progress(api: Api, review_dataset: tuple[Path, list[LesionRecord]]) -> None:
    api.login("sam")
    api.write("PUT", f"/api/key-slices/{KS}/status", json={"status": "done", "version": 0})
    r = api.client.get("/api/stats")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    records = review_dataset[1]
    expected_types: dict[str, int] = {}
    for rec in records:
        expected_types[str(rec.coarse_lesion_type)] = expected_types.get(str(rec.coarse_lesion_type), 0) + 1
    assert body["type_counts"] == expected_types
    assert len(body["points"]) == len(records)
    assert sum(body["size_histogram"]["counts"]) == len(records)
    sam = next(p for p in body["progress"]["by_reviewer"] if p["reviewer"] == "sam")
    assert sam["done"] == 1 and sam["unreviewed"] == len({r.file_name for r in records}) - 1
    test_split = next(s for s in body["progress"]["by_split"] if s["split"] == "test")
    assert test_split["done"] == 1
