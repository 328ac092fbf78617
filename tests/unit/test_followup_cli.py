"""Follow-up from the command line: synth --followup, matching at import, match-followup (DB = pure)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from app.cli import main
from app.db.models import KeySlice, Lesion, LesionLink
from app.db.session import make_engine, make_session_factory
from app.deeplesion.csvio import read_dl_info
from app.deeplesion.followup import match_all
from bench.bench_followup import observations


def _db_pairs(url: str) -> set[tuple[str, str]]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            files = dict(session.execute(select(Lesion.id, KeySlice.file_name).join(KeySlice)).all())
            links = session.execute(select(LesionLink.from_lesion_id, LesionLink.to_lesion_id)).all()
            return {(files[a], files[b]) for a, b in links}
    finally:
        engine.dispose()


def test_synth_import_and_match_followup_give_the_pure_matchers_links(tmp_path: Path) -> None:
    data = tmp_path / "fu"
    runner = CliRunner()
    made = runner.invoke(main, ["synth", str(data), "--metadata-only", "--followup", "--lesions", "400"])
    assert made.exit_code == 0, made.output
    url = f"sqlite:///{tmp_path / 'fu.db'}"
    imported = runner.invoke(main, ["import", str(data), "--database-url", url, "--no-progress"])
    assert imported.exit_code == 0, imported.output
    records = read_dl_info(data / "DL_info.csv")
    pure = match_all(observations(records))
    expected = {(records[lk.a].file_name, records[lk.b].file_name) for lk in pure.links}
    assert f"follow-up: {len(pure.links)} links proposed" in imported.output
    assert _db_pairs(url) == expected
    again = runner.invoke(main, ["match-followup", "--database-url", url])
    assert again.exit_code == 0, again.output
    assert f"{len(pure.links)} links proposed, 0 reviewer decisions kept" in again.output
    assert _db_pairs(url) == expected


def test_synth_followup_with_images_writes_every_study_and_the_body_scale(tmp_path: Path) -> None:
    out = tmp_path / "img"
    # Seed 1: both studies show a lesion clearly (seed 0's first study holds only one under Rose's criterion,
    # which nobody could have marked, so that study has no row, as in DeepLesion).
    args = ["synth", str(out), "--patients", "1", "--max-studies", "2", "--followup", "--seed", "1"]
    r = CliRunner().invoke(main, [*args, "--no-progress"])
    assert r.exit_code == 0, r.output
    truth = json.loads((out / "synth_truth.json").read_text())
    studies = truth["patients"][0]["studies"]
    assert len(studies) == 2 and all("body_scale" in st for st in studies)
    marked = {it["study_index"] for les in truth["lesions"] for it in les["studies"] if it["in_csv"]}
    assert {rec.study_index for rec in read_dl_info(out / "DL_info.csv")} == marked == {1, 2}
