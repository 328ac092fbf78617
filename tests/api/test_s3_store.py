"""A dataset on S3 (moto's server mode, started here): the local folder's answers, bounded cache, ETags."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from app.cli import main as cli
from app.config import Settings
from app.db.session import make_engine, upgrade_database
from app.deeplesion import objectstore
from app.deeplesion.store import ObjectSliceStore, SliceStore, encode_hu_png
from app.detection.preprocess import preprocess_key_slice
from app.main import create_app
from app.review.importer import import_dataset
from tests.api.review_data import SPACING, STORED, build_review_dataset
from tests.components import TESTED_COMPONENTS, require_component, start_s3_server

LOOPBACK = ("127.0.0.1", 40000)
BUCKET = "lesion-review-test"
# Small enough that the eight test slices (about 33 KB each) do not all fit: the bound is exercised.
CACHE_MB = 0.1
STORED_NAMES = [f"{folder}_{index:03d}" for folder, indices in STORED.items() for index in indices]


@dataclass
class S3Dataset:
    """The review dataset on local disk and on the S3 server, each imported into its own database."""

    endpoint: str
    local: Path
    url: str
    options: dict[str, Any]
    local_db: str
    remote_db: str
    cache_dir: Path

    def fs(self) -> Any:
        """An S3 client of the test's own (as a user uploading data would have)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1 (a free port), stopped after the module."""
    server, how = start_s3_server()
    require_component("s3", server is not None, how)
    assert server is not None
    TESTED_COMPONENTS["s3"] = f"moto server mode at {how}"
    try:
        yield how
    finally:
        server.stop()


@pytest.fixture(scope="module")
def dataset(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Dataset]:
    """Upload Images_png/ and DL_info.csv, import through `lesion-review import s3://...`."""
    root = tmp_path_factory.mktemp("s3")
    local = root / "local"
    build_review_dataset(local)
    prefix = f"ds-{uuid.uuid4().hex[:8]}"
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
    data = S3Dataset(
        endpoint=s3_endpoint,
        local=local,
        url=f"s3://{BUCKET}/{prefix}",
        options=options,
        local_db=f"sqlite:///{root / 'local.db'}",
        remote_db=f"sqlite:///{root / 'remote.db'}",
        cache_dir=root / "cache",
    )
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=BUCKET)
    fs = data.fs()
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{BUCKET}/{prefix}/{path.relative_to(local).as_posix()}", path.read_bytes())
    upgrade_database(data.local_db)
    engine = make_engine(data.local_db)
    import_dataset(engine=engine, data_dir=local)
    engine.dispose()
    env = {
        "LESION_REVIEW_STORAGE_OPTIONS": json.dumps(options),
        "LESION_REVIEW_CACHE_DIR": str(root / "import-cache"),
    }
    result = CliRunner().invoke(
        cli, ["import", data.url + "/", "--database-url", data.remote_db, "--no-progress"], env=env
    )
    assert result.exit_code == 0, result.output
    yield data
    objectstore._BACKENDS.pop(data.url, None)


def remote_settings(data: S3Dataset, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data.url,
        "database_url": data.remote_db,
        "model_path": None,
        "storage_options": data.options,
        "cache_dir": data.cache_dir,
        "cache_mb": CACHE_MB,
        # Every request asks the server for the object's identity: a rewrite shows at once.
        "object_ttl_s": 0,
    }
    return Settings(**(values | overrides))


@pytest.fixture(scope="module")
def local_client(dataset: S3Dataset) -> Iterator[TestClient]:
    settings = Settings(data_dir=dataset.local, database_url=dataset.local_db, model_path=None)
    with TestClient(create_app(settings, detector=None), client=LOOPBACK) as c:
        yield c


@pytest.fixture(scope="module")
def s3_client(dataset: S3Dataset) -> Iterator[TestClient]:
    with TestClient(create_app(remote_settings(dataset), detector=None), client=LOOPBACK) as c:
        yield c


def app_store(client: TestClient) -> ObjectSliceStore:
    store = client.app.state.store  # type: ignore[attr-defined]
    assert isinstance(store, ObjectSliceStore)
    return store


@pytest.mark.parametrize("suffix", [".png", ".raw", ".webp?wc=40&ww=400", ".png?overlay=1"])
def test_slices_from_s3_are_byte_identical_to_local_disk(
    local_client: TestClient, s3_client: TestClient, suffix: str
) -> None:
    for name in STORED_NAMES:
        want = local_client.get(f"/api/slices/{name}{suffix}")
        got = s3_client.get(f"/api/slices/{name}{suffix}")
        assert want.status_code == 200, want.text
        assert (got.status_code, got.content) == (want.status_code, want.content), name
        for header in ("content-type", "cache-control", "x-width", "x-height", "x-spacing"):
            assert got.headers.get(header) == want.headers.get(header)


def test_the_import_recorded_the_same_stored_slices(local_client: TestClient, s3_client: TestClient) -> None:
    for folder in ("000001_01_01", "000001_02_01", "000002_01_01"):
        want = local_client.get(f"/api/exports/nifti/{folder}.zip")
        got = s3_client.get(f"/api/exports/nifti/{folder}.zip")
        assert got.status_code == want.status_code


@pytest.mark.parametrize(
    "name",
    [
        "000001_01_01_111",  # in the CSV's slice range, not stored
        "000009_01_01_001",  # no such series
        "..%2F..%2FDL_info",
        "000001_01_01_106.png%2F..",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "000001_01_01_0106",
    ],
)
def test_missing_and_unsafe_slices_answer_as_on_local_disk(
    local_client: TestClient, s3_client: TestClient, name: str
) -> None:
    want = local_client.get(f"/api/slices/{name}.png")
    got = s3_client.get(f"/api/slices/{name}.png")
    assert want.status_code in (404, 422)
    assert got.status_code == want.status_code
    assert got.json()["detail"] and "s3://" not in got.text and BUCKET not in got.text


def test_a_rewritten_object_gets_a_new_etag_and_new_pixels(dataset: S3Dataset) -> None:
    key = f"{dataset.url.removeprefix('s3://')}/Images_png/000002_01_01/051.png"
    fs = dataset.fs()
    original = fs.cat_file(key)
    with TestClient(create_app(remote_settings(dataset), detector=None), client=LOOPBACK) as client:
        url = "/api/slices/000002_01_01_051.raw"
        first = client.get(url)
        assert first.status_code == 200
        assert client.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
        hu = np.full((64, 32), 123, dtype=np.int16)
        try:
            fs.pipe_file(key, encode_hu_png(hu))
            second = client.get(url, headers={"If-None-Match": first.headers["etag"]})
        finally:
            fs.pipe_file(key, original)
        assert second.status_code == 200
        assert second.headers["etag"] != first.headers["etag"]
        assert (second.headers["x-width"], second.headers["x-height"]) == ("32", "64")
        # The test client undoes the gzip Content-Encoding.
        assert np.array_equal(np.frombuffer(second.content, dtype="<i2"), hu.ravel())
        assert client.get(url).content == first.content


def test_the_disk_cache_stays_within_its_byte_bound(s3_client: TestClient) -> None:
    store = app_store(s3_client)
    for _ in range(2):
        for name in STORED_NAMES:
            store.clear_cache()
            s3_client.app.state.slice_images.encoded._items.clear()  # type: ignore[attr-defined]
            assert s3_client.get(f"/api/slices/{name}.raw").status_code == 200
    cache = store.backend.cache
    assert 0 < cache.disk_bytes() <= int(CACHE_MB * 2**20)
    assert cache.nbytes == cache.disk_bytes()


def test_slice_requests_never_list_the_bucket(s3_client: TestClient) -> None:
    backend = app_store(s3_client).backend
    lists = backend.lists
    for name in [*STORED_NAMES, "000001_01_01_111", "000009_01_01_001"]:
        s3_client.get(f"/api/slices/{name}.png")
        s3_client.get(f"/api/slices/{name}.raw")
    assert backend.lists == lists


def test_nifti_export_reads_the_same_volumes_from_s3(
    local_client: TestClient, s3_client: TestClient, tmp_path: Path
) -> None:
    volumes = {}
    for which, client in (("local", local_client), ("s3", s3_client)):
        r = client.get("/api/exports/nifti/000001_01_01.zip")
        assert r.status_code == 200, r.text
        with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
            assert zf.namelist() == ["000001_01_01_106-110.nii.gz"]
            path = tmp_path / f"{which}.nii.gz"
            path.write_bytes(zf.read("000001_01_01_106-110.nii.gz"))
        image = nib.load(path)
        volumes[which] = (np.asarray(image.dataobj), image.affine)  # type: ignore[attr-defined]
    assert np.array_equal(volumes["s3"][0], volumes["local"][0])
    assert np.array_equal(volumes["s3"][1], volumes["local"][1])


def test_the_detector_reads_its_slice_context_through_the_app_store(
    dataset: S3Dataset, s3_client: TestClient
) -> None:
    store = app_store(s3_client)
    # A job's own SliceStore of the same URL shares the backend (disk cache, identity memo).
    assert SliceStore(dataset.url).backend is store.backend  # type: ignore[attr-defined]
    want, want_t = preprocess_key_slice(SliceStore(dataset.local), "000001_01_01_108.png", SPACING)
    got, got_t = preprocess_key_slice(store, "000001_01_01_108.png", SPACING)
    assert np.array_equal(got, want) and got_t == want_t


def test_health_names_the_dataset_without_the_bucket_or_endpoint(
    s3_client: TestClient, dataset: S3Dataset
) -> None:
    r = s3_client.get("/api/health")
    assert r.status_code == 200
    assert r.json()["data_dir"] == dataset.url.rsplit("/", 1)[-1]
    for secret in (BUCKET, "s3://", dataset.endpoint, "testing"):
        assert secret not in r.text


def test_import_of_an_empty_prefix_is_a_clear_error(dataset: S3Dataset, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    env = {"LESION_REVIEW_STORAGE_OPTIONS": json.dumps(dataset.options)}
    url = f"s3://{BUCKET}/nothing-here-{uuid.uuid4().hex[:6]}"
    result = CliRunner().invoke(cli, ["import", url, "--database-url", db, "--no-progress"], env=env)
    objectstore._BACKENDS.pop(url, None)
    assert result.exit_code != 0 and "DL_info.csv" in result.output
    no_db = CliRunner().invoke(cli, ["import", url, "--no-progress"], env=env)
    assert no_db.exit_code == 2 and "LESION_REVIEW_DATABASE_URL" in no_db.output


def test_a_screen_job_reads_the_key_slices_from_s3_like_from_local_disk(
    dataset: S3Dataset, s3_client: TestClient, tmp_path: Path
) -> None:
    import shutil

    from sqlalchemy import select

    from app.db.models import KeySlice, Prediction
    from app.db.session import make_session_factory
    from app.detection.runtime import Detector
    from app.detection.testing import build_tiny_model
    from app.review.screening import screen_key_slices

    detector = Detector.load(build_tiny_model(tmp_path / "m.onnx"))
    found = {}
    for which, data_dir, db in (
        ("local", dataset.local, dataset.local_db),
        ("s3", dataset.url, dataset.remote_db),
    ):
        copy = tmp_path / f"{which}.db"
        shutil.copy(db.removeprefix("sqlite:///"), copy)
        engine = make_engine(f"sqlite:///{copy}")
        factory = make_session_factory(engine)
        result = screen_key_slices(session_factory=factory, data_dir=data_dir, detector=detector)
        with factory() as session:
            query = select(KeySlice.file_name, Prediction.score).join(
                KeySlice, Prediction.key_slice_id == KeySlice.id
            )
            rows = [tuple(row) for row in session.execute(query)]
        engine.dispose()
        found[which] = ({k: result[k] for k in ("predicted", "missing")}, sorted(rows))
    # Two imported key slices are stored (108, 050); the other two are not, on disk as in the bucket.
    assert found["s3"][0] == found["local"][0] == {"predicted": 2, "missing": 2}
    assert found["s3"][1] == found["local"][1]


def test_an_evaluation_reads_the_csv_and_slices_from_s3_like_from_local_disk(
    dataset: S3Dataset, s3_client: TestClient, tmp_path: Path
) -> None:
    from app.detection.pipeline import evaluate_dataset
    from app.detection.runtime import Detector
    from app.detection.testing import build_tiny_model

    detector = Detector.load(build_tiny_model(tmp_path / "m.onnx"))
    local = evaluate_dataset(dataset.local, detector, split=None)
    remote = evaluate_dataset(dataset.url, detector, split=None)
    for result in (local, remote):
        for varies in ("data_dir", "created_at", "seconds"):
            result.pop(varies)
    assert remote == local


def test_the_screen_command_takes_an_s3_url(dataset: S3Dataset, tmp_path: Path) -> None:
    import shutil

    from app.detection.testing import build_tiny_model

    model = build_tiny_model(tmp_path / "m.onnx")
    copy = tmp_path / "screen.db"
    shutil.copy(dataset.remote_db.removeprefix("sqlite:///"), copy)
    env = {
        "LESION_REVIEW_STORAGE_OPTIONS": json.dumps(dataset.options),
        "LESION_REVIEW_CACHE_DIR": str(tmp_path / "cache"),
    }
    args = ["screen", dataset.url, "--model", str(model), "--database-url", f"sqlite:///{copy}"]
    result = CliRunner().invoke(cli, [*args, "--json", "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    res = json.loads(result.output[result.output.index("{") :])
    assert (res["predicted"], res["missing"]) == (2, 2)
