"""The `lesion-review` command line: thin wrappers that call the domain packages."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from app.deeplesion.schema import ALL_SPLITS, SPLITS
from app.review.team.truth import TRUTHS
from app.review.users import ROLES
from app.review.vocabulary import BOX_ONLY_CHOICES, EXPORT_STATES

_SPLIT_CHOICES = [*SPLITS.values(), ALL_SPLITS]
_RAY_HELP = (
    "Run the detector on the Ray cluster at ADDRESS (host:port of its head, or `auto`); "
    "every node needs the app, the model file and the data (docs/deployment.md)."
)
_RAY_ACTORS_HELP = "With --ray: detector actors, one CPU each [the cluster's CPUs]."


class DataDirParam(click.ParamType):
    """A local dataset folder (Path), or an fsspec URL such as s3://bucket/prefix (kept as text)."""

    name = "DATA_DIR"

    def __init__(self, *, exists: bool) -> None:
        self._local = click.Path(exists=exists, file_okay=False, path_type=Path)

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        from app.deeplesion.objectstore import is_url, local_path, normalize_data_dir

        if is_url(value):
            return normalize_data_dir(str(value))
        if isinstance(value, str):
            value = local_path(value)
        assert isinstance(value, Path)
        converted: Path = self._local.convert(value, param, ctx)
        return converted


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
def main(verbose: bool) -> None:
    """Lesion Review: review and extend DeepLesion annotations."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--patients", type=click.IntRange(min=1), default=10, show_default=True, help="Patients.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", type=click.Choice(["512", "768", "1024"]), default="512", show_default=True)
@click.option("--metadata-only", is_flag=True, help="Write DL_info.csv only, no images.")
@click.option(
    "--followup", is_flag=True, help="Patients followed over studies: lesions appear, resolve; tracks known."
)
@click.option("--lesions", type=click.IntRange(min=1), default=None, help="--metadata-only rows [32735].")
@click.option("--max-studies", type=click.IntRange(min=1), default=None, help="Cap on studies per patient.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Render processes [min(2, CPUs)].")
@click.option(
    "--context-mm",
    type=click.FloatRange(min=1.0, max=30.0),
    default=30.0,
    show_default=True,
    help="Slices stored either side of each key slice (DeepLesion stores 30 mm); 5 is enough to train on.",
)
@click.option(
    "--missed-off-key",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Sub-volume model of missed lesions: leave lesions on no key slice out of the CSV at this rate and "
    "place neighbours near lesions in z (docs/synthetic-data.md; Lesion-Harvester's finding).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def synth(
    out_dir: Path,
    patients: int,
    seed: int,
    size: str,
    metadata_only: bool,
    followup: bool,
    lesions: int | None,
    max_studies: int | None,
    workers: int | None,
    context_mm: float,
    missed_off_key: float | None,
    no_progress: bool,
) -> None:
    """Generate a CT-realistic synthetic dataset in the DeepLesion layout."""
    from app.deeplesion.synth import generate_dataset, generate_metadata_only

    if lesions is not None and not metadata_only:
        raise click.UsageError("--lesions only applies with --metadata-only")
    if missed_off_key is not None and metadata_only:
        raise click.UsageError("--missed-off-key needs the images; it does not apply with --metadata-only")
    if (out_dir / "DL_info.csv").exists():
        raise click.ClickException(f"{out_dir / 'DL_info.csv'} already exists; choose an empty folder")
    if metadata_only and followup:
        from app.deeplesion.synth.followup import generate_followup_metadata

        summary = generate_followup_metadata(out_dir, lesions=lesions or 32735, seed=seed)
    elif metadata_only:
        summary = generate_metadata_only(out_dir, lesions=lesions or 32735, seed=seed)
    else:
        summary = generate_dataset(
            out_dir,
            patients=patients,
            seed=seed,
            size=int(size),
            progress=not no_progress,
            workers=workers,
            max_studies=max_studies,
            followup=followup,
            context_mm=context_mm,
            missed_off_key=missed_off_key,
        )
    click.echo(f"synthetic dataset written: {summary.describe()}")


def _step(line: str) -> None:
    """One line of a command's console story: a step (`==>`), or its indented result."""
    click.echo(line if line.startswith(" ") else f"\n==> {line}")


def _database_url(data_dir: Path | str | None, database_url: str | None) -> str:
    """The URL from --database-url, else Settings (environment) with --data-dir applied."""
    if database_url:
        return database_url
    from app.config import Settings

    settings = Settings(data_dir=data_dir) if data_dir is not None else Settings()
    try:
        return settings.resolved_database_url()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@main.command()
@click.option("--data-dir", type=DataDirParam(exists=False), default=None)
@click.option("--database-url", default=None, help="SQLAlchemy URL; default: SQLite in the data folder.")
def migrate(data_dir: Path | None, database_url: str | None) -> None:
    """Apply pending database migrations."""
    from app.db.session import upgrade_database

    url = _database_url(data_dir, database_url)
    upgrade_database(url)
    click.echo("database is at the newest schema")


@main.command(name="import")
@click.argument("data_dir", type=DataDirParam(exists=True))
@click.option("--database-url", default=None, help="SQLAlchemy URL; default: SQLite in the data folder.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def import_(data_dir: Path | str, database_url: str | None, no_progress: bool) -> None:
    """Migrate the database, then import DATA_DIR/DL_info.csv and the list of stored slices."""
    from app.db.session import make_engine, make_session_factory, upgrade_database
    from app.deeplesion.errors import CsvValidationError
    from app.review.followup import run_matching
    from app.review.importer import import_dataset

    url = _database_url(data_dir, database_url)
    upgrade_database(url)
    engine = make_engine(url)
    try:
        summary = import_dataset(engine=engine, data_dir=data_dir, progress=not no_progress)
        click.echo(summary.describe())
        # Matching runs with every import: new studies get linked, reviewer decisions stay.
        with make_session_factory(engine)() as session:
            found = run_matching(session=session)
    except CsvValidationError as exc:
        for line in exc.errors:
            click.echo(line, err=True)
        click.echo(f"{len(exc.errors)} error(s) in DL_info.csv: nothing was imported", err=True)
        sys.exit(1)
    except FileNotFoundError as exc:
        raise click.ClickException(f"cannot import: {exc}") from exc
    finally:
        engine.dispose()
    click.echo(f"follow-up: {found['proposed']} links proposed between the patients' studies")


@main.command(name="match-followup")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--database-url", default=None, help="SQLAlchemy URL; default: SQLite in the data folder.")
@click.option("--patient", type=click.IntRange(min=1), default=None, help="Only this patient.")
@click.option("--appearance", is_flag=True, help="Also compare each lesion's patch on its stored slice.")
def match_followup(
    data_dir: Path | None, database_url: str | None, patient: int | None, appearance: bool
) -> None:
    """Link each lesion to the same lesion in the patient's other studies (reviewer decisions are kept)."""
    from app.config import Settings
    from app.db.session import assert_schema_current, make_engine, make_session_factory
    from app.deeplesion.store import SliceStore
    from app.review.followup import run_matching

    store = None
    if appearance:
        store = SliceStore(data_dir if data_dir is not None else Settings().data_dir)
    engine = make_engine(_database_url(data_dir, database_url))
    try:
        assert_schema_current(engine)
        with make_session_factory(engine)() as session:
            result = run_matching(session=session, patient=patient, store=store)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    click.echo(
        f"follow-up matching: {result['lesions']} lesions of {result['patients']} patients, "
        f"{result['proposed']} links proposed, {result['kept']} reviewer decisions kept, "
        f"{result['seconds']} s"
    )


@main.group()
def user() -> None:
    """Manage users."""


@user.command(name="add")
@click.argument("name")
@click.option("--role", type=click.Choice(list(ROLES)), default="reviewer", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--data-dir", type=DataDirParam(exists=False), default=None)
@click.option("--database-url", default=None)
def user_add(
    name: str, role: str, password_stdin: bool, data_dir: Path | None, database_url: str | None
) -> None:
    """Add a user (prompts for the password)."""
    from app.db.session import assert_schema_current, make_engine, make_session_factory
    from app.review.errors import ReviewError
    from app.review.users import create_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    engine = make_engine(_database_url(data_dir, database_url))
    try:
        assert_schema_current(engine)
        with make_session_factory(engine)() as session, session.begin():
            info = create_user(session=session, name=name, password=password, role=role)
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from exc
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    click.echo(f"user {info.name} ({info.role}) added")


def _write_streamed(pieces: Iterable[bytes], out: Path, desc: str) -> int:
    """Write an export's pieces to `out` with a progress bar counting the bytes; the bytes written."""
    from tqdm import tqdm

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    written = 0
    # disable=None: the bar shows on a terminal only.
    bar = tqdm(unit="B", unit_scale=True, desc=desc, disable=None)
    with partial.open("wb") as fh, bar:
        for piece in pieces:
            fh.write(piece)
            written += len(piece)
            bar.update(len(piece))
    partial.replace(out)  # a stopped export leaves no half file under the asked name
    return written


@main.command()
@click.argument("data_dir", type=DataDirParam(exists=True))
@click.option("--format", "fmt", type=click.Choice(["csv", "coco", "nifti"]), default="csv")
@click.option("--state", type=click.Choice(list(EXPORT_STATES)), default="corrected", show_default=True)
@click.option("--series", default=None, help="With --format nifti: the series folder, e.g. 000001_01_01.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--database-url", default=None)
@click.option("--extras", is_flag=True, help="CSV: append flag reason, note, reviewer and origin columns.")
@click.option(
    "--box-only",
    type=click.Choice(list(BOX_ONLY_CHOICES)),
    default="nan",
    show_default=True,
    help="CSV: lesions known only by a box get NaN measurements, or are left out.",
)
@click.option(
    "--truth",
    default=None,
    help=f"One of {', '.join(TRUTHS)}; overrides --state. NIfTI: adds the series' DL_info rows under that "
    "truth to the zip.",
)
def export(
    data_dir: Path | str,
    fmt: str,
    state: str,
    series: str | None,
    out: Path,
    database_url: str | None,
    extras: bool,
    box_only: str,
    truth: str | None,
) -> None:
    """Export the original or corrected annotations as DL_info.csv, COCO JSON or a NIfTI zip."""
    from app.db.session import assert_schema_current, make_engine, make_session_factory
    from app.review import exports
    from app.review.errors import ReviewError

    if fmt == "nifti" and not series:
        raise click.UsageError("--format nifti needs --series SERIES_FOLDER")
    engine = make_engine(_database_url(data_dir, database_url))
    try:
        assert_schema_current(engine)
        factory = make_session_factory(engine)
        if fmt in ("csv", "coco"):
            pieces = (
                exports.stream_csv(
                    session_factory=factory, state=state, extras=extras, box_only=box_only, truth=truth
                )
                if fmt == "csv"
                else exports.stream_coco(session_factory=factory, state=state, truth=truth)
            )
            # Streamed in chunks of rows to the file, with a progress bar counting the bytes written.
            written = _write_streamed(pieces, out, "DL_info.csv" if fmt == "csv" else "COCO")
            click.echo(f"wrote {out} ({written} bytes)")
            return
        from app.deeplesion.store import SliceStore

        with factory() as session:
            data = exports.export_nifti_zip(
                session=session, store=SliceStore(data_dir), series_folder=str(series), truth=truth
            )
    except (ReviewError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    click.echo(f"wrote {out} ({len(data)} bytes)")


@main.command()
@click.option("--data-dir", type=DataDirParam(exists=False), default=None)
@click.option("--host", default=None, help="Address to listen on [default: 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default: 8000].")
@click.option("--database-url", default=None, help="SQLAlchemy URL; default: SQLite in the data folder.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Server processes (a team on PostgreSQL: one per core; docs/deployment.md).",
)
def serve(
    data_dir: Path | str | None,
    host: str | None,
    port: int | None,
    database_url: str | None,
    model_path: Path | None,
    workers: int,
) -> None:
    """Serve the review app (refuses an unmigrated database, and a public address while no user exists)."""
    from app.serving import (
        ServeRefusedError,
        check_can_serve,
        check_port_free,
        run_server,
        serve_warnings,
        settings_with,
    )

    settings = settings_with(
        data_dir=data_dir, host=host, port=port, database_url=database_url, model_path=model_path
    )
    try:
        check_can_serve(settings)
        check_port_free(settings.host, settings.port)
    except ServeRefusedError as exc:
        raise click.ClickException(str(exc)) from exc
    for warning in serve_warnings(settings, workers=workers):
        click.echo(f"warning: {warning}", err=True)
    processes = f" with {workers} worker processes" if workers > 1 else ""
    click.echo(f"serving {settings.data_dir} at http://{settings.host}:{settings.port}{processes}")
    run_server(settings, workers=workers)


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--patients", type=int, default=10, show_default=True, help="Patients when generating.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--no-serve", is_flag=True, help="Prepare the data and database, then exit.")
@click.option("--max-studies", type=int, default=None, hidden=True)
def demo(data_dir: Path | None, patients: int, port: int, no_serve: bool, max_studies: int | None) -> None:
    """Generate the synthetic demo dataset if absent, import it, and serve it on 127.0.0.1."""
    from app.serving import (
        ServeRefusedError,
        check_can_serve,
        check_port_free,
        demo_banner,
        prepare_demo,
        run_server,
        settings_with,
    )

    # The demo signs everyone in automatically, so it only ever listens on loopback.
    settings = settings_with(data_dir=data_dir, host="127.0.0.1", port=port)
    app_log = logging.getLogger("app")
    if not app_log.isEnabledFor(logging.DEBUG):
        # The steps below say what the app's own INFO lines would repeat; --verbose keeps them.
        app_log.setLevel(logging.WARNING)
    try:
        prepared = prepare_demo(settings, patients=patients, max_studies=max_studies, say=_step)
    finally:
        app_log.setLevel(logging.NOTSET)
    if no_serve:
        return
    _step(f"checking that {settings.host}:{settings.port} is free")
    try:
        check_can_serve(settings)
        check_port_free(settings.host, settings.port)
    except ServeRefusedError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("")
    click.echo(demo_banner(prepared, settings))
    run_server(settings)


# --- detector commands (H4): thin wrappers over app.detection ---------------------------------------
_DEVICE = click.Choice(["auto", "cpu", "cuda"])


def _default_model() -> Path:
    from app.config import DEFAULT_MODEL

    return DEFAULT_MODEL


@main.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="ONNX file to write."
)
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=_DEVICE, default="auto", show_default=True)
@click.option(
    "--val-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Dataset whose val split selects the best epoch (default: DATA_DIR).",
)
@click.option("--max-minutes", type=float, default=25.0, show_default=True, help="Stop after this wall time.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--crop", type=int, default=256, show_default=True, help="Random crop side in input pixels.")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option(
    "--iters-per-epoch",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Batches per epoch (0: one crop per training key slice); val runs after each epoch.",
)
@click.option(
    "--extra-train-dir",
    "extra_train_dirs",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    multiple=True,
    help="More datasets whose train split is added to DATA_DIR's (repeatable).",
)
@click.option(
    "--init",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Warm start from the .pt weights a previous run wrote next to its ONNX file, or from an "
    "exported .onnx detector such as the shipped one.",
)
@click.option("--model-version", default=None, help="Stored in the ONNX metadata (default: name-seed-date).")
@click.option(
    "--truth-labels/--csv-labels-only",
    default=True,
    show_default=True,
    help="On synthetic data, also train on the lesions synth_truth.json lists as left out of DL_info.csv.",
)
@click.option(
    "--flip-tta/--no-flip-tta",
    default=True,
    show_default=True,
    help="Export the graph with test-time left-right flip averaging (twice the inference cost).",
)
@click.option(
    "--card",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Model card to write (default: MODEL_CARD.md next to --out).",
)
@click.option(
    "--num-workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="DataLoader processes decoding the 16-bit PNGs (use several on the real dataset).",
)
@click.option(
    "--cache-slices",
    type=click.IntRange(min=0),
    default=None,
    help="Keep the preprocessed key slices in memory (1.5 MB each) when train + val hold at most this many;"
    " more are decoded from their PNGs for every crop. Default: TrainConfig.cache_slices.",
)
@click.option(
    "--amp",
    type=click.Choice(["auto", "bf16", "off"]),
    default="auto",
    show_default=True,
    help="Mixed precision: auto = float16 + GradScaler on CUDA, float32 on CPU; bf16 = bfloat16 autocast.",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Checkpoint written after every epoch (default: --out with the suffix .ckpt).",
)
@click.option(
    "--arch",
    type=click.Choice(["lite", "resnet"]),
    default="lite",
    show_default=True,
    help="lite: the shipped CenterNet-lite (0.26M parameters); resnet: ResNet-style backbone (1.6M).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue a stopped run from its checkpoint (same settings), as if it had never stopped.",
)
@click.option(
    "--augment/--no-augment",
    default=True,
    show_default=True,
    help="Domain randomisation of every crop: zoom, contrast, calibration, noise, kernel.",
)
def train(
    data_dir: Path,
    out: Path,
    epochs: int,
    seed: int,
    device: str,
    val_dir: Path | None,
    max_minutes: float,
    batch_size: int,
    crop: int,
    lr: float,
    iters_per_epoch: int,
    extra_train_dirs: tuple[Path, ...],
    init: Path | None,
    model_version: str | None,
    truth_labels: bool,
    flip_tta: bool,
    card: Path | None,
    num_workers: int,
    cache_slices: int | None,
    amp: str,
    checkpoint: Path | None,
    arch: str,
    resume: bool,
    augment: bool,
) -> None:
    """Train the 3-slice detector on DATA_DIR (needs the [train] extra) and export it to ONNX.

    Several GPUs: `torchrun --nproc_per_node N -m app.cli train ...` (DistributedDataParallel).
    """
    from app.detection.commands import run_train

    if crop % 32 or not 64 <= crop <= 512:
        raise click.BadParameter("must be a multiple of 32 within 64..512", param_hint="--crop")
    try:
        info = run_train(
            data_dir,
            out,
            epochs=epochs,
            iters_per_epoch=iters_per_epoch,
            init=init,
            extra_train_dirs=extra_train_dirs,
            seed=seed,
            device=device,
            val_dir=val_dir,
            max_minutes=max_minutes,
            batch_size=batch_size,
            crop=crop,
            lr=lr,
            model_version=model_version,
            truth_labels=truth_labels,
            flip_tta=flip_tta,
            card=card,
            command=" ".join(["lesion-review", *sys.argv[1:]]),
            num_workers=num_workers,
            cache_slices=cache_slices,
            amp=amp,
            checkpoint=checkpoint,
            resume=resume,
            arch=arch,
            augment=augment,
        )
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not info.get("is_main", True):
        return  # another torchrun rank: rank 0 exports and reports
    click.echo(f"wrote {info['out']} ({info['model_version']}) and {info['card']}")
    for split in ("val", "test"):
        sens = info[f"{split}_result"]["sensitivity"]
        click.echo(
            f"{split} FROC sensitivity @0.5/1/2/4/8/16 FP: " + " ".join(f"{100 * v:.1f}" for v in sens)
        )


@main.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("file_name")
@click.option(
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="ONNX model (default: models/lesion-detector.onnx).",
)
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.05, show_default=True)
@click.option("--device", type=_DEVICE, default="auto", show_default=True)
def predict(data_dir: Path, file_name: str, model: Path | None, threshold: float, device: str) -> None:
    """Predict lesion boxes on one key slice and print them as JSON (original pixel coordinates)."""
    import json

    from app.deeplesion.errors import DeepLesionError
    from app.detection.commands import run_predict
    from app.detection.errors import ModelLoadError

    try:
        out = run_predict(
            data_dir, file_name, model=model or _default_model(), device=device, threshold=threshold
        )
    except (ModelLoadError, DeepLesionError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(out, indent=1))


@main.command()
@click.argument("data_dir", type=DataDirParam(exists=True))
@click.option("--split", type=click.Choice(_SPLIT_CHOICES), default="test", show_default=True)
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--against",
    default="original",
    show_default=True,
    help="original, corrected (the reviewers' current state), consensus (of double reads) or reader:NAME.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.option("--device", type=_DEVICE, default="auto", show_default=True)
@click.option(
    "--database-url",
    default=None,
    help="Where the result is stored (and, with --against corrected, the reviewers' state is read); "
    "default: SQLite in DATA_DIR.",
)
@click.option(
    "--pool-with",
    "pool_with",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    multiple=True,
    help="Pool the same split of another dataset into one FROC (repeatable; the result is not stored).",
)
@click.option("--no-progress", is_flag=True)
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS", help=_RAY_HELP)
@click.option("--ray-actors", type=click.IntRange(min=1), default=None, help=_RAY_ACTORS_HELP)
def evaluate(
    data_dir: Path | str,
    split: str,
    model: Path | None,
    against: str,
    as_json: bool,
    device: str,
    database_url: str | None,
    pool_with: tuple[Path, ...],
    no_progress: bool,
    ray_address: str | None,
    ray_actors: int | None,
) -> None:
    """DeepLesion FROC of a split as the dataset authors compute it (IoU >= 0.5, noisy dropped), stored."""
    import json

    from sqlalchemy.exc import SQLAlchemyError

    from app.db.session import SchemaOutdatedError
    from app.deeplesion.errors import DeepLesionError
    from app.detection.commands import run_evaluate
    from app.detection.errors import ModelLoadError
    from app.detection.pipeline import EVAL_THRESHOLD
    from app.review.errors import ReviewError
    from app.review.evaluations import store_evaluation
    from app.review.team.truth import check_truth

    url = _database_url(data_dir, database_url)
    records = None
    try:
        check_truth(against)
    except ReviewError as exc:
        raise click.BadParameter(str(exc), param_hint="--against") from exc
    try:
        if against != "original":
            from app.review.evaluations import corrected_state

            records = corrected_state(url, truth=against)
        res = run_evaluate(
            data_dir,
            model=model or _default_model(),
            split=split,
            device=device,
            against="original" if against == "original" else "corrected",
            corrected_records=records,
            progress=not no_progress,
            pool_with=pool_with,
            runner=_cluster_runner(
                ray_address, ray_actors, model or _default_model(), data_dir, EVAL_THRESHOLD
            ),
        )
    except (ModelLoadError, DeepLesionError, ValueError, RuntimeError, ReviewError) as exc:
        raise click.ClickException(str(exc)) from exc
    res["truth"] = against
    not_stored = ""
    try:
        if pool_with:
            # The app shows a dataset's latest evaluation: a pooled figure is not that dataset's.
            raise ValueError("a FROC pooled over several datasets is printed, not stored")
        res["stored_as"] = f"evaluation_runs/{store_evaluation(database_url=url, result=res)}"
    except (SchemaOutdatedError, SQLAlchemyError, ValueError) as exc:
        # The FROC took minutes: still print it; the message says how to make the database ready.
        res["stored_as"] = None
        not_stored = f"result not stored in the database: {exc}"
        click.echo(f"warning: {not_stored}", err=True)
    if as_json:
        click.echo(json.dumps(res, indent=1))
        return
    click.echo(
        f"model {res['model_version']} on {res['provider']}; split {res['split']} against {against}: "
        f"{res['images']} key slices, {res['lesions']} lesions ({res['noisy_excluded']} noisy dropped, "
        f"{res['images_without_lesion_dropped']} key slices left without a lesion dropped); "
        f"curve read as {res['froc_reading']}"
    )
    click.echo("FP/image     " + " ".join(f"{r:>6g}" for r in res["fp_rates"]))
    click.echo("sensitivity% " + " ".join(f"{100 * v:6.1f}" for v in res["sensitivity"]))
    for name, groups in res["breakdowns"].items():
        for g in groups:
            sens = " ".join(f"{100 * v:6.1f}" for v in g["sensitivity"])
            click.echo(f"  {name:<14} {g['label']:<12} n={g['lesions']:<5} {sens}")
    click.echo(f"stored as {res['stored_as']}" if res["stored_as"] else not_stored)


@main.command()
@click.argument("data_dir", type=DataDirParam(exists=True))
@click.option("--split", type=click.Choice(_SPLIT_CHOICES), default="all", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many key slices.")
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=0.3,
    show_default=True,
    help="Predictions below this score are not stored (nor queued as possible missed lesions).",
)
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--device", type=_DEVICE, default="auto", show_default=True)
@click.option("--database-url", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.option("--no-progress", is_flag=True)
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS", help=_RAY_HELP)
@click.option("--ray-actors", type=click.IntRange(min=1), default=None, help=_RAY_ACTORS_HELP)
def screen(
    data_dir: Path | str,
    split: str,
    limit: int | None,
    threshold: float,
    model: Path | None,
    device: str,
    database_url: str | None,
    as_json: bool,
    no_progress: bool,
    ray_address: str | None,
    ray_actors: int | None,
) -> None:
    """Run the detector over key slices (resumable) and fill the possible-missed-lesions queue."""
    import json

    from app.deeplesion.errors import DeepLesionError
    from app.detection.errors import ModelLoadError
    from app.detection.runtime import Detector
    from app.review.errors import ReviewError
    from app.review.screening import run_screen

    try:
        det = Detector.load(model or _default_model(), device=device)
        res = run_screen(
            database_url=_database_url(data_dir, database_url),
            data_dir=data_dir,
            detector=det,
            split=split,
            limit=limit,
            threshold=threshold,
            progress=not no_progress,
            requested_by=f"{_os_user()} (CLI)",
            runner=_cluster_runner(ray_address, ray_actors, det.path, data_dir, threshold, det.model_version),
        )
    except (ModelLoadError, DeepLesionError, ReviewError, ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(res, indent=1))
        return
    click.echo(
        f"screen job {res['job_id']}, model {res['model_version']} on {res['provider']}: "
        f"{res['predicted']} key slices predicted, "
        f"{res['skipped']} already done, {res['missing']} not stored; queue: {res['queue_key_slices']} "
        f"key slices with unmatched predictions >= {threshold}"
    )
    hidden = res.get("hidden_lesions")
    if hidden:
        click.echo(
            f"synthetic check: {hidden['found_top_n_iou_0_3']}/{hidden['total']} deliberately unannotated "
            f"lesions in the top {hidden['top_n']} of the queue at IoU>=0.3, "
            f"{hidden['found_top_n_iou_0_5']} at IoU>=0.5"
        )


@main.command(name="screen-volumes")
@click.argument("data_dir", type=DataDirParam(exists=True))
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many series.")
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=0.3,
    show_default=True,
    help="Boxes below this score are not joined into candidates.",
)
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--device", type=_DEVICE, default="auto", show_default=True)
@click.option("--database-url", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.option("--no-progress", is_flag=True)
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS", help=_RAY_HELP)
@click.option("--ray-actors", type=click.IntRange(min=1), default=None, help=_RAY_ACTORS_HELP)
def screen_volumes(
    data_dir: Path | str,
    limit: int | None,
    threshold: float,
    model: Path | None,
    device: str,
    database_url: str | None,
    as_json: bool,
    no_progress: bool,
    ray_address: str | None,
    ray_actors: int | None,
) -> None:
    """Run the detector on every stored slice of each series (resumable) and queue the 3D candidates."""
    import json

    from app.deeplesion.errors import DeepLesionError
    from app.detection.errors import ModelLoadError
    from app.detection.runtime import Detector
    from app.review.errors import ReviewError
    from app.review.volume import run_volume_screen

    try:
        det = Detector.load(model or _default_model(), device=device)
        res = run_volume_screen(
            database_url=_database_url(data_dir, database_url),
            data_dir=data_dir,
            detector=det,
            threshold=threshold,
            limit=limit,
            progress=not no_progress,
            requested_by=f"{_os_user()} (CLI)",
            runner=_cluster_runner(ray_address, ray_actors, det.path, data_dir, threshold, det.model_version),
        )
    except (ModelLoadError, DeepLesionError, ReviewError, ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(res, indent=1))
        return
    click.echo(
        f"volume screen job {res['job_id']}, model {res['model_version']} on {res['provider']}: "
        f"{res['series']} series ({res['slices']} slices, {res['unreadable']} unreadable), "
        f"{res['skipped_series']} already done; {res['candidates']} candidates, "
        f"queue: {res['queue_candidates']} matching no marked lesion"
    )
    left = res.get("left_out_lesions")
    if left:
        click.echo(
            f"synthetic check: the queue finds {left['found']}/{left['total']} left-out lesions "
            f"(precision {left['precision']})"
        )


@main.command(name="screen-study")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--device", type=_DEVICE, default="auto", show_default=True)
@click.option(
    "--fit-split", default="val", show_default=True, help="Split(s), comma-separated, to calibrate on."
)
@click.option(
    "--report-split", default="test", show_default=True, help="Split(s), comma-separated, to report on."
)
@click.option(
    "--report-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Report on this dataset's --report-split instead of DATA_DIR's.",
)
@click.option(
    "--write-model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a copy of the model carrying this calibration and threshold (screen then uses them).",
)
@click.option("--no-progress", is_flag=True)
def screen_study(
    data_dir: Path,
    model: Path | None,
    device: str,
    fit_split: str,
    report_split: str,
    report_dir: Path | None,
    write_model: Path | None,
    no_progress: bool,
) -> None:
    """Calibrate scores and choose the missed-lesion queue's threshold on val; its precision/recall on test.

    Needs a synthetic dataset (synth_truth.json lists the lesions left out of DL_info.csv). Prints JSON.
    """
    import json

    from app.deeplesion.errors import DeepLesionError
    from app.detection.errors import ModelLoadError
    from app.detection.runtime import Detector
    from app.detection.screening import screening_study

    try:
        det = Detector.load(model or _default_model(), device=device)
        res = screening_study(
            data_dir,
            det,
            fit_split=fit_split,
            report_split=report_split,
            report_dir=report_dir,
            progress=not no_progress,
        )
        if write_model is not None:
            from app.detection.contract import screening_metadata, write_metadata
            from app.detection.screening import Calibration

            cal = Calibration.from_dict(res["calibration"])
            res["written_model"] = str(
                write_metadata(det.path, write_model, screening_metadata(cal, res["threshold"]))
            )
    except (ModelLoadError, DeepLesionError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(res, indent=1))


def _cluster_runner(
    address: str | None,
    actors: int | None,
    model: Path,
    data_dir: Path | str,
    threshold: float,
    model_version: str | None = None,
) -> Any:
    """The Ray SliceRunner of --ray, or None (the detector runs here); Ray is imported only with --ray."""
    if address is None:
        if actors is not None:
            raise click.BadParameter("needs --ray", param_hint="--ray-actors")
        return None
    from app.deeplesion.objectstore import is_url, storage_options_from_env
    from app.detection.cluster import ray_runner

    # The actors read an object-store dataset with the driver's settings, whatever their own environment.
    options = storage_options_from_env() if is_url(data_dir) else None
    if model_version is None:
        from app.detection.runtime import Detector

        # The version the results are stored under; every node's copy of the model must be it.
        model_version = Detector.load(model, device="cpu").model_version
    return ray_runner(
        address,
        model,
        data_dir,
        threshold,
        storage_options=options,
        actors=actors,
        model_version=model_version,
    )


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no USER and no passwd entry, as in some containers
        return "unknown"


if __name__ == "__main__":  # pragma: no cover
    main()


@main.command(name="simulate-readers")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--database-url", default=None, help="SQLAlchemy URL; default: SQLite in the data folder.")
@click.option("--split", type=click.Choice(list(SPLITS.values())), default=None, help="Only this split.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--noisy-rate", type=click.FloatRange(0, 1), default=0.3, show_default=True)
@click.option("--missed-rate", type=click.FloatRange(0, 1), default=0.3, show_default=True)
@click.option("--flag-error", nargs=2, type=click.FloatRange(0, 1), default=(0.1, 0.15), show_default=True)
@click.option("--find-rate", nargs=2, type=click.FloatRange(0, 1), default=(0.8, 0.7), show_default=True)
@click.option(
    "--false-add-rate", nargs=2, type=click.FloatRange(0, 1), default=(0.05, 0.1), show_default=True
)
def simulate_readers(
    data_dir: Path | None,
    database_url: str | None,
    split: str | None,
    seed: int,
    noisy_rate: float,
    missed_rate: float,
    flag_error: tuple[float, float],
    find_rate: tuple[float, float],
    false_add_rate: tuple[float, float],
) -> None:
    """Replay two simulated readers with known error rates as a double read; print expected vs measured."""
    from app.db.session import make_engine, make_session_factory
    from app.review.errors import NotFoundError
    from app.review.team.simulate import ReaderModel, TruthModel
    from app.review.team.simulate import simulate_readers as run
    from app.review.users import create_user, ensure_local_user, get_user
    from app.review.worklist import WorklistFilter

    engine = make_engine(_database_url(data_dir, database_url))
    try:
        with make_session_factory(engine)() as session:
            admin = ensure_local_user(session=session)
            people = []
            for i, name in enumerate(("sim-reader-a", "sim-reader-b")):
                try:
                    who = get_user(session=session, name=name)
                except NotFoundError:
                    # Simulated readers never sign in: a random password nobody knows.
                    who = create_user(session=session, name=name, password=os.urandom(16).hex())
                    session.commit()
                people.append((who, ReaderModel(flag_error[i], find_rate[i], false_add_rate[i])))
            out = run(
                session=session,
                admin=admin,
                readers=people,
                truth=TruthModel(noisy_rate, missed_rate),
                flt=WorklistFilter(split=split),
                seed=seed,
            )
    finally:
        engine.dispose()
    (pair,) = out["report"]["pairs"]
    click.echo(f"assignment {out['assignment_id']}: {pair['key_slices']} key slices read twice")
    click.echo(
        f"kappa (noisy)  expected {out['expected_kappa']:.3f}  measured {pair['kappa_noisy']:.3f}"
        f" +- {pair['kappa_noisy_se']:.3f}"
    )
    click.echo(f"F1 (added)     expected {out['expected_f1']:.3f}  measured {pair['f1_added']:.3f}")
