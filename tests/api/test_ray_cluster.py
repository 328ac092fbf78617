"""Screening and evaluation on a local two-node Ray cluster: the same stored rows and FROC as one process."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from app.cli import main
from app.db.models import KeySlice, Prediction, PredictionRun
from app.db.session import make_engine, upgrade_database
from app.review.importer import import_dataset
from tests.api.ray_data import build_cluster_dataset
from tests.components import TESTED_COMPONENTS, require_component, start_ray_cluster, start_s3_server

MODEL = Path(__file__).resolve().parents[2] / "models" / "lesion-detector.onnx"
KEY_SLICES = 12
# One key slice of the CSV whose PNG is not stored: both runs count it as missing.
NOT_STORED = "000001_01_02_018.png"


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head and one worker node (1 CPU each) on 127.0.0.1, stopped by pid after the module."""
    started, how = start_ray_cluster(workers=1)
    require_component("ray", started is not None, how)
    assert started is not None
    TESTED_COMPONENTS["ray"] = how
    try:
        yield started.address
    finally:
        started.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The phantom dataset and its imported SQLite database (a template each test copies)."""
    root = tmp_path_factory.mktemp("ray")
    data = root / "data"
    build_cluster_dataset(data, key_slices=KEY_SLICES)
    (data / "Images_png" / NOT_STORED[:12] / f"{NOT_STORED[13:]}").unlink()
    db = root / "template.db"
    upgrade_database(f"sqlite:///{db}")
    engine = make_engine(f"sqlite:///{db}")
    import_dataset(engine=engine, data_dir=data, progress=False)
    engine.dispose()
    return data, db


def _copy(dataset: tuple[Path, Path], tmp_path: Path, name: str) -> str:
    target = tmp_path / f"{name}.db"
    shutil.copy(dataset[1], target)
    return f"sqlite:///{target}"


def _cli(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    result = CliRunner().invoke(main, [*args, "--json", "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output[result.output.index("{") :]))


def stored(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """What a screen stores: predictions, runs and each key slice's summary, without ids and times."""
    engine = make_engine(url)
    with engine.connect() as conn:
        preds = conn.execute(
            select(
                KeySlice.file_name,
                Prediction.model_version,
                Prediction.box,
                Prediction.score,
                Prediction.status,
                Prediction.matches_annotation,
            ).join(KeySlice, KeySlice.id == Prediction.key_slice_id)
        ).all()
        runs = conn.execute(
            select(
                KeySlice.file_name,
                PredictionRun.model_version,
                PredictionRun.threshold,
                PredictionRun.prediction_count,
            ).join(KeySlice, KeySlice.id == PredictionRun.key_slice_id)
        ).all()
        summary = conn.execute(
            select(
                KeySlice.file_name,
                KeySlice.prediction_count,
                KeySlice.unreviewed_predictions,
                KeySlice.missed_score,
            )
        ).all()
    engine.dispose()
    return {
        "predictions": sorted((f, m, tuple(b), s, st, ma) for f, m, b, s, st, ma in preds),
        "runs": sorted(tuple(r) for r in runs),
        "summary": sorted(tuple(r) for r in summary),
    }


@pytest.fixture(scope="module")
def in_process(dataset: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The single-process screen's result and stored rows: what every cluster run must reproduce."""
    url = _copy(dataset, tmp_path_factory.mktemp("local"), "local")
    res = _cli(["screen", str(dataset[0]), "--model", str(MODEL), "--database-url", url])
    return {"result": res, "stored": stored(url)}


def _same_result(res: dict[str, Any], reference: dict[str, Any]) -> None:
    assert {k: v for k, v in res.items() if k != "job_id"} == {
        k: v for k, v in reference.items() if k != "job_id"
    }


def test_a_screen_on_two_nodes_stores_exactly_what_the_single_process_screen_stores(
    cluster: str, dataset: tuple[Path, Path], in_process: dict[str, Any], tmp_path: Path
) -> None:
    import ray

    url = _copy(dataset, tmp_path, "ray")
    res = _cli(["screen", str(dataset[0]), "--model", str(MODEL), "--database-url", url, "--ray", cluster])
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert (res["predicted"], res["missing"], res["skipped"]) == (KEY_SLICES - 1, 1, 0)
    # Not a trivial equality: the model finds boxes on these slices.
    assert len(in_process["stored"]["predictions"]) >= KEY_SLICES // 2
    assert stored(url) == in_process["stored"]
    _same_result(res, in_process["result"])


def test_a_stopped_cluster_screen_resumes_and_ends_where_the_single_process_screen_ends(
    cluster: str, dataset: tuple[Path, Path], in_process: dict[str, Any], tmp_path: Path
) -> None:
    from app.db.models import DetectorJob
    from app.detection.cluster import ray_runner
    from app.detection.runtime import Detector
    from app.review.screening import run_screen

    url = _copy(dataset, tmp_path, "resume")
    detector = Detector.load(MODEL, device="cpu")

    class Killed(Exception):
        pass

    def stop_at_five(done: int, total: int) -> None:
        if done == 5:
            raise Killed

    def runner() -> Any:
        return ray_runner(cluster, MODEL, dataset[0], 0.3)

    with pytest.raises(Killed):
        run_screen(
            database_url=url,
            data_dir=dataset[0],
            detector=detector,
            progress=False,
            on_progress=stop_at_five,
            runner=runner(),
        )
    first = stored(url)["runs"]
    # What ran before the stop is stored: 5 key slices less any not stored (those leave no run).
    assert 4 <= len(first) <= 5
    res = run_screen(
        database_url=url, data_dir=dataset[0], detector=detector, progress=False, runner=runner()
    )
    assert res["skipped"] == len(first) and res["predicted"] + res["skipped"] == KEY_SLICES - 1
    assert stored(url) == in_process["stored"]
    engine = make_engine(url)
    with engine.connect() as conn:
        jobs = conn.execute(
            select(DetectorJob.status, DetectorJob.active_lock).order_by(DetectorJob.id)
        ).all()
    engine.dispose()
    assert [tuple(j) for j in jobs] == [("failed", None), ("done", None)]


def test_an_evaluation_on_two_nodes_gives_the_single_process_froc(
    cluster: str, dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    data = str(dataset[0])
    args = ["evaluate", data, "--split", "all", "--model", str(MODEL)]
    local = _cli([*args, "--database-url", _copy(dataset, tmp_path, "eval-local")])
    remote = _cli([*args, "--database-url", _copy(dataset, tmp_path, "eval-ray"), "--ray", cluster])
    for result in (local, remote):
        assert result["stored_as"]
        for varies in ("created_at", "seconds", "stored_as"):
            result.pop(varies)
    assert local["missing_key_slices"] == 1 and local["lesions"] == KEY_SLICES - 1
    assert remote == local


def test_an_s3_dataset_screened_on_the_cluster_stores_what_the_local_screen_stores(
    cluster: str, dataset: tuple[Path, Path], in_process: dict[str, Any], tmp_path: Path
) -> None:
    from app.deeplesion import objectstore

    server, endpoint = start_s3_server()
    require_component("s3", server is not None, endpoint)
    assert server is not None
    bucket, prefix = "lesion-review-ray", f"ds-{uuid.uuid4().hex[:8]}"
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    url = f"s3://{bucket}/{prefix}"
    # The nodes were started without these settings: the actors get them from the driver.
    env = {
        "LESION_REVIEW_STORAGE_OPTIONS": json.dumps(options),
        "LESION_REVIEW_CACHE_DIR": str(tmp_path / "cache"),
    }
    try:
        import boto3
        import s3fs

        client = options["client_kwargs"]
        boto3.client(
            "s3", aws_access_key_id="testing", aws_secret_access_key="testing", **client
        ).create_bucket(Bucket=bucket)
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
        for path in sorted(dataset[0].rglob("*")):
            if path.is_file():
                fs.pipe_file(
                    f"{bucket}/{prefix}/{path.relative_to(dataset[0]).as_posix()}", path.read_bytes()
                )
        db = f"sqlite:///{tmp_path / 's3.db'}"
        imported = CliRunner().invoke(main, ["import", url, "--database-url", db, "--no-progress"], env=env)
        assert imported.exit_code == 0, imported.output
        res = _cli(["screen", url, "--model", str(MODEL), "--database-url", db, "--ray", cluster], env=env)
    finally:
        server.stop()
        objectstore._BACKENDS.pop(url, None)
        # The actors' disk cache: each node's default folder (the nodes have no LESION_REVIEW_CACHE_DIR).
        shutil.rmtree(objectstore._default_cache_dir(url), ignore_errors=True)
    assert (res["predicted"], res["missing"]) == (KEY_SLICES - 1, 1)
    assert stored(db) == in_process["stored"]


def test_a_node_with_another_model_version_fails_the_run_instead_of_storing_under_the_wrong_name(
    cluster: str, dataset: tuple[Path, Path]
) -> None:
    from app.detection.batch import SliceTask
    from app.detection.cluster import ray_runner

    run = ray_runner(cluster, MODEL, dataset[0], 0.3, model_version="not-the-nodes-model")
    with pytest.raises(RuntimeError, match="not-the-nodes-model"):
        list(run([SliceTask("000001_01_01_010.png", (0.8, 0.8, 2.0))]))
