"""Screening through a SliceRunner: one commit per batch, stored runs skipped, and Ray only with --ray."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import event, func, select

from app.cli import main
from app.db.models import Prediction, PredictionRun
from app.db.session import make_engine, make_session_factory, upgrade_database
from app.deeplesion.store import SliceStore
from app.detection.batch import SliceResult, SliceTask, detect_locally
from app.detection.decode import Detection
from app.detection.runtime import Detector
from app.detection.testing import build_tiny_model
from app.review.importer import import_dataset
from app.review.predictions import store_prediction_batch, store_predictions
from app.review.screening import screen_key_slices
from tests.api.ray_data import build_cluster_dataset

KEY_SLICES = 12


@pytest.fixture
def imported(tmp_path: Path) -> tuple[Path, str, Path]:
    """The phantom dataset imported into a fresh SQLite database, and a tiny model."""
    data = tmp_path / "data"
    build_cluster_dataset(data, key_slices=KEY_SLICES, size=96)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    engine = make_engine(url)
    import_dataset(engine=engine, data_dir=data, progress=False)
    engine.dispose()
    return data, url, build_tiny_model(tmp_path / "m.onnx")


def test_a_screen_commits_once_per_batch_not_once_per_slice(imported: tuple[Path, str, Path]) -> None:
    data, url, model = imported
    engine = make_engine(url)
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    res = screen_key_slices(
        session_factory=make_session_factory(engine),
        data_dir=data,
        detector=Detector.load(model),
        batch_size=5,
    )
    with engine.connect() as conn:
        runs = conn.execute(select(func.count()).select_from(PredictionRun)).scalar_one()
    engine.dispose()
    assert res["predicted"] == runs == KEY_SLICES
    assert len(commits) == -(-KEY_SLICES // 5)  # 5 + 5 + 2


def test_a_stop_between_batches_keeps_every_slice_run_so_far_and_the_next_run_skips_them(
    imported: tuple[Path, str, Path],
) -> None:
    data, url, model = imported
    engine = make_engine(url)
    factory = make_session_factory(engine)
    detector = Detector.load(model)

    class Stop(Exception):
        pass

    def stop_at_seven(done: int, total: int) -> None:
        if done == 7:
            raise Stop

    with pytest.raises(Stop):
        screen_key_slices(
            session_factory=factory, data_dir=data, detector=detector, batch_size=5, on_progress=stop_at_seven
        )
    with factory() as session:
        assert session.execute(select(func.count()).select_from(PredictionRun)).scalar_one() == 7
    ran: list[str] = []
    here = detect_locally(detector, SliceStore(data), 0.3)

    def counting(tasks: Sequence[SliceTask]) -> Iterator[SliceResult]:
        ran.extend(t.file_name for t in tasks)
        return here(tasks)

    res = screen_key_slices(session_factory=factory, data_dir=data, detector=detector, runner=counting)
    engine.dispose()
    assert (res["skipped"], res["predicted"], len(ran)) == (7, KEY_SLICES - 7, KEY_SLICES - 7)


def test_a_batch_leaves_out_a_run_a_viewer_stored_first(imported: tuple[Path, str, Path]) -> None:
    _, url, _ = imported
    engine = make_engine(url)
    factory = make_session_factory(engine)
    names = [f"000001_01_01_{k:03d}.png" for k in (10, 18, 26)]
    viewer = [Detection((1.0, 2.0, 30.0, 40.0), 0.9)]
    with factory() as session:
        store_predictions(session=session, file_name=names[1], model_version="m", detections=viewer)
    batch = [(name, [Detection((5.0, 5.0, 20.0, 20.0), 0.5)]) for name in names]
    with factory() as session:
        stored = store_prediction_batch(session=session, model_version="m", runs=batch, threshold=0.3)
    with factory() as session:
        scores = sorted(session.scalars(select(Prediction.score)))
    engine.dispose()
    assert stored == 2 and scores == [0.5, 0.5, 0.9]


def test_without_ray_the_screen_never_imports_ray(imported: tuple[Path, str, Path]) -> None:
    data, url, model = imported
    script = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from app.cli import main\n"
        f"args = ['screen', {str(data)!r}, '--model', {str(model)!r}, '--database-url', {url!r},"
        " '--json', '--no-progress']\n"
        "result = CliRunner().invoke(main, args)\n"
        "print(json.dumps({'exit': result.exit_code, 'ray': sorted(m for m in sys.modules"
        " if m == 'ray' or m.startswith('ray.'))}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"exit": 0, "ray": []}
    # The same check sees Ray once it is imported (the check itself can fail).
    probe = "import sys, ray; print('ray' in sys.modules)"
    has_ray = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert has_ray.returncode != 0 or has_ray.stdout.strip() == "True"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["screen", "{data}", "--ray-actors", "2"], "needs --ray"),
        (["evaluate", "{data}", "--ray-actors", "2"], "needs --ray"),
    ],
)
def test_ray_options_without_ray_are_refused(
    imported: tuple[Path, str, Path], args: list[str], message: str
) -> None:
    data, url, model = imported
    full = [a.format(data=data) for a in args] + ["--model", str(model), "--database-url", url]
    result = CliRunner().invoke(main, full)
    assert result.exit_code == 2 and message in result.output


def test_a_pooled_evaluation_is_refused_on_a_cluster_before_connecting(
    imported: tuple[Path, str, Path],
) -> None:
    from app.detection.pipeline import evaluate_dataset

    data, _, model = imported

    def never(tasks: object) -> list[SliceResult]:
        raise AssertionError("the runner must not run")

    with pytest.raises(ValueError, match="pool"):
        evaluate_dataset(data, Detector.load(model), split="all", pool_with=[data], runner=never)


def test_the_evaluate_command_takes_an_object_store_url_and_gives_the_local_folders_froc(
    imported: tuple[Path, str, Path], tmp_path: Path
) -> None:
    import uuid

    import fsspec

    from app.deeplesion import objectstore

    data, url, model = imported
    remote = f"memory://lr-{uuid.uuid4().hex[:10]}/data"
    fs, base = fsspec.core.url_to_fs(remote)
    for path in sorted(data.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{base}/{path.relative_to(data).as_posix()}", path.read_bytes())
    env = {"LESION_REVIEW_CACHE_DIR": str(tmp_path / "cache")}
    found = []
    try:
        for where in (str(data), remote):
            args = ["evaluate", where, "--split", "all", "--model", str(model), "--database-url", url]
            result = CliRunner().invoke(main, [*args, "--json", "--no-progress"], env=env)
            assert result.exit_code == 0, result.output
            res = json.loads(result.output[result.output.index("{") :])
            found.append({k: v for k, v in res.items() if k not in ("created_at", "seconds", "stored_as")})
    finally:
        fs.rm(base, recursive=True)
        objectstore._BACKENDS.pop(remote, None)
    assert found[0].pop("data_dir") == str(data) and found[1].pop("data_dir") == remote
    assert found[0]["images"] == KEY_SLICES and found[1] == found[0]
