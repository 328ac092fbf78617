"""20 readers taking "next for me" at once from a real server never get the same key slice (or read) twice."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select

from app.config import Settings
from app.db.models import KeySlice
from app.db.session import make_engine, make_session_factory
from tests.api.conftest import PASSWORD, add_user
from tests.e2e.live import serve

READERS = 20
EXTRA_KEY_SLICES = 56  # with the dataset's 4: 60 key slices, 3 per reader on average


def _add_key_slices(database_url: str, count: int) -> None:
    """Copies of a key slice under new names, so that 20 readers have work to race for."""
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            template = session.execute(select(KeySlice).order_by(KeySlice.id).limit(1)).scalar_one()
            columns = {c.key: getattr(template, c.key) for c in KeySlice.__table__.columns if c.key != "id"}
            for i in range(count):
                session.add(
                    KeySlice(
                        **{**columns, "file_name": f"009{i:03d}_01_01_100.png", "patient_index": 9000 + i}
                    )
                )
    finally:
        engine.dispose()


def _signed_in(base_url: str, name: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=60)
    r = client.post("/api/auth/login", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return client


@pytest.mark.parametrize("mode", ["single", "double"])
def test_twenty_readers_at_once_never_share_a_read(
    app_settings: Settings, database_url: str, mode: str
) -> None:
    _add_key_slices(database_url, EXTRA_KEY_SLICES)
    add_user(database_url, "boss", "admin")
    names = [f"reader{i:02d}" for i in range(READERS)]
    for name in names:
        add_user(database_url, name)
    with serve(app_settings, detector=None) as url:
        admin = _signed_in(url, "boss")
        r = admin.post("/api/team/assignments", json={"name": "race", "mode": mode, "readers": names})
        assert r.status_code == 201, r.text
        assignment = r.json()["id"]
        total = r.json()["progress"]["reads"]["total"]
        clients = [_signed_in(url, n) for n in names]
        start = threading.Barrier(READERS)

        def work(client: httpx.Client) -> list[tuple[int, str]]:
            """Take, finish, take again until nothing is left: (read id, key slice) of each read taken."""
            taken: list[tuple[int, str]] = []
            start.wait()
            while True:
                got = client.post(f"/api/team/assignments/{assignment}/next")
                assert got.status_code == 200, got.text
                read = got.json()["read"]
                if read is None:
                    return taken
                taken.append((read["id"], read["file_name"]))
                done = client.post(f"/api/team/reads/{read['id']}/finish", json={"version": read["version"]})
                assert done.status_code == 200, done.text

        with ThreadPoolExecutor(max_workers=READERS) as pool:
            per_reader = list(pool.map(work, clients))
        for c in [admin, *clients]:
            c.close()
    reads = [read_id for taken in per_reader for read_id, _ in taken]
    assert len(reads) == total and len(set(reads)) == total  # every read handed out exactly once
    slices = Counter(name for taken in per_reader for _, name in taken)
    assert set(slices.values()) == {1 if mode == "single" else 2}
    for taken in per_reader:  # in a double read, nobody reads one key slice twice
        assert len({name for _, name in taken}) == len(taken)
    assert sum(1 for taken in per_reader if taken) > 1  # the work was really shared
