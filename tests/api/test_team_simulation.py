"""Simulated readers with known error rates: the agreement report recovers their kappa and F1."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main
from app.db.session import make_engine, make_session_factory, upgrade_database
from app.deeplesion.synth import generate_metadata_only
from app.review.importer import import_dataset
from app.review.team.simulate import ReaderModel, TruthModel, expected_f1, expected_kappa, simulate_readers
from app.review.users import create_user
from app.review.worklist import WorklistFilter

# Enough lesions that the sampling error is small, few enough for a test: about 270 train key slices.
LESIONS = 1200
TRUTH = TruthModel(noisy_rate=0.3, missed_rate=0.4)
READER_A = ReaderModel(flag_error=0.1, find_rate=0.85, false_add_rate=0.05)
READER_B = ReaderModel(flag_error=0.2, find_rate=0.7, false_add_rate=0.1)
# Within this many standard errors: a failure by chance has odds of about 1 in 15,000 per figure.
Z = 4.0


@pytest.fixture(scope="module")
def synthetic_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("sim")
    generate_metadata_only(root, lesions=LESIONS, seed=3)
    url = f"sqlite:///{root / 'sim.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    import_dataset(engine=engine, data_dir=root)
    engine.dispose()
    return url


def test_expected_figures_by_hand() -> None:
    # Perfect readers agree completely; a reader who flips half the time agrees no better than chance.
    perfect = ReaderModel(0.0, 1.0, 0.0)
    assert expected_kappa(TRUTH, perfect, perfect) == pytest.approx(1.0)
    assert expected_f1(TRUTH, perfect, perfect) == pytest.approx(1.0)
    assert expected_kappa(TRUTH, perfect, ReaderModel(0.5, 1.0, 0.0)) == pytest.approx(0.0)
    # 0.4 missed, found 1.0 and 0.5, no false adds: 2 * 0.2 / (0.4 + 0.2).
    assert expected_f1(TRUTH, perfect, ReaderModel(0.0, 0.5, 0.0)) == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [1])
def test_the_report_recovers_the_simulated_kappa_and_f1(synthetic_db: str, seed: int) -> None:
    engine = make_engine(synthetic_db)
    try:
        with make_session_factory(engine)() as session:
            admin = create_user(session=session, name=f"admin{seed}", password="simulation-pw", role="admin")
            a = create_user(session=session, name=f"ann{seed}", password="simulation-pw")
            b = create_user(session=session, name=f"bob{seed}", password="simulation-pw")
            session.commit()
            out = simulate_readers(
                session=session,
                admin=admin,
                readers=[(a, READER_A), (b, READER_B)],
                truth=TRUTH,
                flt=WorklistFilter(split="train"),
                seed=seed,
            )
    finally:
        engine.dispose()
    (pair,) = out["report"]["pairs"]
    assert pair["kappa_noisy"] == pytest.approx(out["expected_kappa"], abs=Z * pair["kappa_noisy_se"])
    f1 = out["expected_f1"]
    # F1 = 2 matched / added: roughly a proportion over the mean count of added lesions.
    f1_se = math.sqrt(f1 * (1 - f1) / ((pair["added_a"] + pair["added_b"]) / 2))
    assert pair["f1_added"] == pytest.approx(f1, abs=Z * f1_se)
    # The figures are not trivially equal to their expectation: they vary with the seed.
    assert pair["kappa_noisy"] != pytest.approx(out["expected_kappa"], abs=1e-6)
    assert pair["lesions_compared"] > 600


def test_the_cli_prints_expected_and_measured(synthetic_db: str) -> None:
    result = CliRunner().invoke(
        main, ["simulate-readers", "--database-url", synthetic_db, "--split", "test", "--seed", "5"]
    )
    assert result.exit_code == 0, result.output
    assert "kappa (noisy)  expected" in result.output and "F1 (added)     expected" in result.output


def test_evaluate_refuses_a_truth_that_names_nothing(synthetic_db: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["evaluate", str(tmp_path), "--database-url", synthetic_db, "--against", "everyone"]
    )
    assert result.exit_code == 2 and "truth must be one of" in result.output


def test_export_takes_a_readers_truth(synthetic_db: str, tmp_path: Path) -> None:
    sim = CliRunner().invoke(main, ["simulate-readers", "--database-url", synthetic_db, "--split", "val"])
    assert sim.exit_code == 0, sim.output
    out = {}
    for truth in ("corrected", "reader:sim-reader-a", "reader:sim-reader-b"):
        path = tmp_path / f"{truth.replace(':', '-')}.csv"
        args = ["export", str(tmp_path), "--database-url", synthetic_db, "--truth", truth, "--out", str(path)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        out[truth] = path.read_text()
    # The two simulated readers flag and add differently, and neither equals the untouched corrected state.
    assert len({out[t] for t in out}) == 3
    bad_args = [
        "export",
        str(tmp_path),
        "--database-url",
        synthetic_db,
        "--truth",
        "x",
        "--out",
        str(tmp_path / "x"),
    ]
    bad = CliRunner().invoke(main, bad_args)
    assert bad.exit_code != 0 and "truth must be one of" in bad.output
