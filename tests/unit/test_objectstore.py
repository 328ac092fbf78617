"""The object-store backend on fsspec's memory:// file system: URLs, identities, the disk cache, listings."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
from sqlalchemy import select

from app.config import Settings
from app.db.models import Series
from app.db.session import make_engine, make_session_factory, upgrade_database
from app.deeplesion import objectstore
from app.deeplesion.errors import SliceNotFoundError, UnsafePathError
from app.deeplesion.objectstore import (
    DiskCache,
    configure_backend,
    display_name,
    is_url,
    local_path,
    normalize_data_dir,
)
from app.deeplesion.store import ObjectSliceStore, SliceStore, decode_hu_png, encode_hu_png
from app.review.importer import import_dataset
from tests.api.review_data import STORED, build_review_dataset

SIZE = 16


def hu_of(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 400, size=(SIZE, SIZE)).astype(np.int16)


@pytest.fixture
def url() -> Iterator[str]:
    """A dataset URL of the test's own on the process-wide memory:// file system (removed afterwards)."""
    name = f"memory://lr-{uuid.uuid4().hex[:10]}/data"
    yield name
    fs, path = fsspec.core.url_to_fs(name)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    objectstore._BACKENDS.pop(name, None)


def put(url: str, rel: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{path}/{rel}", data)


@pytest.fixture
def remote(url: str, tmp_path: Path) -> ObjectSliceStore:
    """Three slices of one series on memory://, identities never memoised (each read asks again)."""
    for index in (106, 107, 108):
        put(url, f"Images_png/000001_01_01/{index:03d}.png", encode_hu_png(hu_of(index)))
    configure_backend(url, storage_options={}, cache_dir=tmp_path / "cache", cache_bytes=2**20, ttl_s=0)
    store = SliceStore(url)
    assert isinstance(store, ObjectSliceStore)
    return store


def test_urls_and_local_paths_are_told_apart() -> None:
    assert is_url("s3://bucket/prefix") and is_url("memory://x") and is_url("gs://b/p")
    assert not is_url("/data/deeplesion") and not is_url("data") and not is_url(Path("/x"))
    # file:// is a local folder: it keeps the local fast path.
    assert not is_url("file:///data/x") and local_path("file:///data/x") == Path("/data/x")
    assert normalize_data_dir("s3://bucket/prefix/") == "s3://bucket/prefix"
    assert type(SliceStore("file:///tmp/somewhere")) is SliceStore
    assert SliceStore("file:///tmp/somewhere").root == Path("/tmp/somewhere")


def test_display_name_never_shows_credentials_hosts_or_queries() -> None:
    assert display_name("s3://AKIAXXXX:s3cr3t@bucket/team/deeplesion?token=abc") == "deeplesion"
    assert display_name("s3://bucket") == "bucket"
    assert display_name(Path("/srv/data/deeplesion")) == "deeplesion"
    assert "s3cr3t" not in display_name("s3://AKIA:s3cr3t@bucket")


def test_settings_accept_urls_and_need_a_database_for_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESION_REVIEW_DATA_DIR", "s3://bucket/deeplesion/")
    monkeypatch.setenv(
        "LESION_REVIEW_STORAGE_OPTIONS", '{"client_kwargs": {"endpoint_url": "http://x:9000"}}'
    )
    settings = Settings()
    assert settings.data_dir == "s3://bucket/deeplesion"
    assert settings.storage_options == {"client_kwargs": {"endpoint_url": "http://x:9000"}}
    with pytest.raises(ValueError, match="LESION_REVIEW_DATABASE_URL"):
        settings.resolved_database_url()
    assert Settings(data_dir="/tmp/x").data_dir == Path("/tmp/x")


def test_bad_storage_options_are_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESION_REVIEW_STORAGE_OPTIONS", "{not json")
    with pytest.raises(ValueError, match="LESION_REVIEW_STORAGE_OPTIONS is not valid JSON"):
        objectstore.storage_options_from_env()
    monkeypatch.setenv("LESION_REVIEW_STORAGE_OPTIONS", "[1]")
    with pytest.raises(ValueError, match="JSON object"):
        objectstore.storage_options_from_env()


def test_reads_decode_to_the_written_hu_and_list_what_is_stored(remote: ObjectSliceStore) -> None:
    assert np.array_equal(remote.read_hu("000001_01_01_107.png"), hu_of(107))
    assert np.array_equal(remote.read_hu_slice("000001_01_01", 108), hu_of(108))
    assert remote.stored_slices("000001_01_01") == [106, 107, 108]
    assert remote.stored_slices("000009_01_01") == []
    assert remote.series_folders() == ["000001_01_01"]
    assert remote.stored_index() == {"000001_01_01": [106, 107, 108]}
    assert remote.exists("000001_01_01_106.png") and not remote.exists("000001_01_01_109.png")
    with pytest.raises(SliceNotFoundError):
        remote.read_hu("000001_01_01_109.png")
    with pytest.raises(SliceNotFoundError):
        remote.identity("000001_01_01_109.png")


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "000001_01_01/../../x.png",
        "000001_01_01_1.png",
        "000001_01_01_107.png/..",
        "%2e%2e",
    ],
)
def test_unsafe_names_never_reach_the_backend(remote: ObjectSliceStore, name: str) -> None:
    heads = remote.backend.heads
    assert remote.exists(name) is False
    with pytest.raises(UnsafePathError):
        remote.read_hu(name)
    with pytest.raises(UnsafePathError):
        remote.stored_slices(name)
    assert remote.backend.heads == heads


def test_a_rewritten_object_is_read_again_under_a_new_identity(remote: ObjectSliceStore, url: str) -> None:
    before = remote.identity("000001_01_01_107.png")
    assert np.array_equal(remote.read_hu("000001_01_01_107.png"), hu_of(107))
    put(url, "Images_png/000001_01_01/107.png", encode_hu_png(hu_of(999)))
    assert remote.identity("000001_01_01_107.png") != before
    assert np.array_equal(remote.read_hu("000001_01_01_107.png"), hu_of(999))


def test_second_read_comes_from_the_decoded_lru_then_the_disk_cache(remote: ObjectSliceStore) -> None:
    remote.read_hu("000001_01_01_106.png")
    gets = remote.backend.gets
    remote.read_hu("000001_01_01_106.png")
    assert remote.backend.gets == gets and remote.hits == 1
    remote.clear_cache()
    remote.read_hu("000001_01_01_106.png")
    # Decoded again, but from the local disk cache: no new GET.
    assert remote.backend.gets == gets and remote.backend.cache.hits >= 1


def test_identities_are_memoised_for_the_ttl(url: str, tmp_path: Path) -> None:
    put(url, "Images_png/000001_01_01/106.png", encode_hu_png(hu_of(1)))
    backend = configure_backend(url, storage_options={}, cache_dir=tmp_path / "c", ttl_s=60)
    store = SliceStore(url)
    for _ in range(5):
        store.identity("000001_01_01_106.png")
        store.read_hu("000001_01_01_106.png")
    assert backend.heads == 1
    backend.forget()
    store.identity("000001_01_01_106.png")
    assert backend.heads == 2


def test_every_store_of_a_url_shares_the_configured_backend(remote: ObjectSliceStore, url: str) -> None:
    again = SliceStore(url)
    assert isinstance(again, ObjectSliceStore) and again.backend is remote.backend


def test_object_store_pickles_to_a_worker_with_an_empty_cache(remote: ObjectSliceStore) -> None:
    remote.read_hu("000001_01_01_106.png")
    copy = pickle.loads(pickle.dumps(remote))
    assert isinstance(copy, ObjectSliceStore) and copy.root == remote.root and copy.cache_bytes == 0
    assert np.array_equal(copy.read_hu("000001_01_01_106.png"), hu_of(106))


def test_disk_cache_stays_within_its_bound_and_drops_the_least_recent(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", max_bytes=1000)
    for i in range(10):
        cache.put(f"k{i}", bytes([i]) * 300)
        if i == 5:
            assert cache.get("k4") is not None  # k4 becomes the most recent
        assert cache.disk_bytes() <= 1000 and cache.nbytes <= 1000
    assert cache.get("k9") == bytes([9]) * 300
    assert cache.get("k0") is None
    cache.put("huge", b"x" * 1001)
    assert cache.get("huge") is None
    # A restarted process finds what is there and keeps the bound.
    again = DiskCache(tmp_path / "c", max_bytes=400)
    assert again.disk_bytes() <= 400 and again.nbytes == again.disk_bytes()


def test_decoding_bytes_and_files_agree(tmp_path: Path) -> None:
    data = encode_hu_png(hu_of(3))
    (tmp_path / "a.png").write_bytes(data)
    assert np.array_equal(decode_hu_png(data), decode_hu_png(tmp_path / "a.png"))


def test_import_from_object_storage_records_the_stored_slices_like_a_local_import(
    url: str, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    build_review_dataset(local)
    fs, base = fsspec.core.url_to_fs(url)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{base}/{path.relative_to(local).as_posix()}", path.read_bytes())
    backend = configure_backend(url, storage_options={}, cache_dir=tmp_path / "cache", ttl_s=0)
    stored = {}
    for name, data_dir in (("local", local), ("remote", url)):
        db = f"sqlite:///{tmp_path / name}.db"
        upgrade_database(db)
        engine = make_engine(db)
        lists = backend.lists
        import_dataset(engine=engine, data_dir=data_dir)
        if name == "remote":
            # One recursive listing for the whole dataset, not one per series.
            assert backend.lists == lists + 1
        with make_session_factory(engine)() as session:
            stored[name] = {s.folder: s.stored_slices for s in session.execute(select(Series)).scalars()}
        engine.dispose()
    assert stored["remote"] == stored["local"]
    assert {k: v for k, v in stored["remote"].items() if v} == STORED
