"""The DL_info.csv and COCO downloads are streamed chunk by chunk, giving exactly the whole export."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.config import Settings
from app.db.session import make_engine, make_session_factory
from app.review import exports
from tests.api.lesion_api import KS_A, add, body
from tests.api.team_api import assign, browsers, finish, marks_with, next_read, save


@pytest.fixture
def reviewed(app_settings: Settings, database_url: str) -> Any:
    """A drawn lesion, and a finished read by ann with a flag and an added box."""
    with browsers(app_settings, database_url, boss="admin", ann="reviewer") as p:
        body(add(p["boss"], KS_A, recist=None, box=[20.0, 20.0, 40.0, 40.0], lesion_type=2), 201)
        a = assign(p["boss"], ["ann"], mode="single")
        read = next_read(p["ann"], a["id"])
        assert read is not None
        first = read["marks"]["lesions"][0]["id"]
        marks = marks_with(read, **{f"l{first}": {"flag_reason": "duplicate"}})
        marks["added"] = [{"recist": None, "box": [50.0, 50.0, 70.0, 70.0], "lesion_type": 3}]
        finish(p["ann"], save(p["ann"], read, marks)["read"])
        yield p


@pytest.mark.parametrize("chunk_rows", [1, 2, 5, 2000])
@pytest.mark.parametrize(
    ("truth", "extras", "box_only"),
    [
        ("corrected", True, "nan"),
        ("corrected", False, "omit"),
        ("reader:ann", True, "nan"),
        ("original", False, "nan"),
    ],
)
def test_every_chunk_size_streams_the_same_bytes_as_the_whole_export(
    reviewed: Any, database_url: str, chunk_rows: int, truth: str, extras: bool, box_only: str
) -> None:
    engine = make_engine(database_url)
    try:
        factory = make_session_factory(engine)
        with factory() as session:
            whole = exports.export_csv(session=session, truth=truth, extras=extras, box_only=box_only)
        pieces = list(
            exports.stream_csv(
                session_factory=factory, truth=truth, extras=extras, box_only=box_only, chunk_rows=chunk_rows
            )
        )
    finally:
        engine.dispose()
    assert b"".join(pieces) == whole
    if truth != "original" and chunk_rows == 1:
        assert len(pieces) > 3  # really in pieces


def test_the_route_streams_and_refuses_bad_input_before_the_first_byte(reviewed: Any) -> None:
    boss = reviewed["boss"]
    r = boss.client.get("/api/exports/dl_info.csv", params={"truth": "reader:ann", "extras": 1})
    assert r.status_code == 200 and "content-length" not in r.headers
    assert r.headers["content-disposition"] == 'attachment; filename="DL_info_reader-ann.csv"'
    assert r.text.splitlines()[0].startswith("File_name,")
    assert boss.client.get("/api/exports/dl_info.csv", params={"truth": "reader:nobody"}).status_code == 404
    assert boss.client.get("/api/exports/dl_info.csv", params={"box_only": "drop"}).status_code == 422


@pytest.mark.parametrize("chunk_rows", [1, 2, 5, 2000])
@pytest.mark.parametrize("truth", ["original", "corrected", "consensus", "reader:ann"])
def test_every_chunk_size_streams_the_same_coco_as_the_whole_export(
    reviewed: Any, database_url: str, chunk_rows: int, truth: str
) -> None:
    engine = make_engine(database_url)
    try:
        factory = make_session_factory(engine)
        with factory() as session:
            whole = exports.export_coco(session=session, truth=truth)
        pieces = list(exports.stream_coco(session_factory=factory, truth=truth, chunk_rows=chunk_rows))
    finally:
        engine.dispose()
    assert b"".join(pieces) == whole
    doc = json.loads(whole)
    assert doc["annotations"] and doc["images"]  # not two empty documents agreeing
    if chunk_rows == 1:
        assert len(pieces) > len(doc["images"])  # really in pieces: the images of each row as it is read


def test_the_coco_route_streams_in_more_pieces_when_the_dataset_is_larger_than_a_chunk(
    reviewed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    boss = reviewed["boss"]
    assert boss.client.get("/api/exports/coco.json", params={"truth": "reader:nobody"}).status_code == 404
    assert boss.client.get("/api/exports/coco.json", params={"truth": "mine"}).status_code == 422
    stream = exports.stream_coco
    seen: list[list[int]] = []

    def counted(**kwargs: Any) -> Any:
        pieces = stream(**kwargs)  # bad input fails here, before the first byte
        seen.append([])

        def each() -> Any:
            for piece in pieces:
                seen[-1].append(len(piece))
                yield piece

        return each()

    monkeypatch.setattr(exports, "stream_coco", counted)
    got = {}
    for chunk_rows in (10**6, 1):
        monkeypatch.setattr(exports, "EXPORT_CHUNK_ROWS", chunk_rows)
        r = boss.client.get("/api/exports/coco.json", params={"truth": "reader:ann"})
        assert r.status_code == 200 and "content-length" not in r.headers
        assert r.headers["content-disposition"] == 'attachment; filename="deeplesion_reader-ann.json"'
        got[chunk_rows] = r.content
        assert sum(seen[-1]) == len(r.content)
    images = len(json.loads(got[1])["images"])
    assert got[1] == got[10**6] and images > 1
    # A dataset larger than one chunk: the route's generator yields the images of each chunk as it reads it.
    assert len(seen[1]) >= len(seen[0]) + images - 1
