"""Simulated readers with known error rates, replayed through the team service, and their expected agreement.

The truth is drawn per lesion (noisy with probability `noisy_rate`) and per key slice (a missed lesion with
probability `missed_rate`); each reader flips the noisy truth with its `flag_error`, finds a missed lesion
with its `find_rate` and adds a false lesion with its `false_add_rate`. The expected kappa and F1 follow
from these numbers alone, so the report has a known answer (docs/api.md, Simulated readers).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.review import corrections
from app.review.team import service
from app.review.team.report import agreement_report
from app.review.users import UserInfo
from app.review.worklist import WorklistFilter

# Side of a simulated added lesion's box in px, and how far a reader's box strays from the truth's.
ADDED_SIDE_PX = 24.0
JITTER_PX = 1.5


@dataclass(frozen=True)
class ReaderModel:
    """A simulated reader's error rates."""

    flag_error: float
    find_rate: float
    false_add_rate: float


@dataclass(frozen=True)
class TruthModel:
    """How often the simulated truth has a noisy lesion and a missed lesion."""

    noisy_rate: float
    missed_rate: float


def expected_kappa(truth: TruthModel, a: ReaderModel, b: ReaderModel) -> float:
    """Cohen's kappa of two readers who each flip a Bernoulli(noisy_rate) truth independently."""
    p, ea, eb = truth.noisy_rate, a.flag_error, b.flag_error
    pa = p * (1 - ea) + (1 - p) * ea
    pb = p * (1 - eb) + (1 - p) * eb
    both = p * (1 - ea) * (1 - eb) + (1 - p) * ea * eb
    neither = p * ea * eb + (1 - p) * (1 - ea) * (1 - eb)
    pe = pa * pb + (1 - pa) * (1 - pb)
    return (both + neither - pe) / (1 - pe)


def expected_f1(truth: TruthModel, a: ReaderModel, b: ReaderModel) -> float:
    """F1 of added lesions: both readers find a missed lesion (a match); false adds never match."""
    m = truth.missed_rate
    matched = m * a.find_rate * b.find_rate
    added = m * (a.find_rate + b.find_rate) + a.false_add_rate + b.false_add_rate
    return 2 * matched / added


def _box(x: float, y: float, rng: random.Random, jitter: float) -> list[float]:
    dx, dy = rng.uniform(-jitter, jitter), rng.uniform(-jitter, jitter)
    return [
        round(x + dx, 2),
        round(y + dy, 2),
        round(x + dx + ADDED_SIDE_PX, 2),
        round(y + dy + ADDED_SIDE_PX, 2),
    ]


def simulated_marks(
    read: dict[str, Any], model: ReaderModel, truth: TruthModel, seed: int, reader_seed: int, image_size: int
) -> dict[str, Any]:
    """A reader's marks of one read: truth drawn from (seed, key slice), errors from the reader's own seed."""
    truth_rng = random.Random(f"{seed}:{read['file_name']}")
    rng = random.Random(f"{seed}:{reader_seed}:{read['file_name']}")
    lesions = []
    for mark in read["baseline"]["lesions"]:
        noisy = truth_rng.random() < truth.noisy_rate
        if rng.random() < model.flag_error:
            noisy = not noisy
        kept = {k: v for k, v in mark.items() if k != "origin"}
        lesions.append({**kept, "flag_reason": "not_a_lesion" if noisy else None, "flag_note": ""})
    added = []
    # A missed lesion in the upper left quarter; false adds in the lower right, one corner per reader.
    if truth_rng.random() < truth.missed_rate and rng.random() < model.find_rate:
        x, y = (truth_rng.uniform(10, image_size / 2 - 40) for _ in range(2))
        added.append({"recist": None, "box": _box(x, y, rng, JITTER_PX), "lesion_type": 4})
    if rng.random() < model.false_add_rate:
        corner = image_size / 2 + (image_size / 4 if reader_seed % 2 else 0)
        x, y = (corner + rng.uniform(0, image_size / 4 - ADDED_SIDE_PX - 5) for _ in range(2))
        added.append({"recist": None, "box": _box(x, y, rng, 0.0), "lesion_type": 4})
    return {"lesions": lesions, "added": added}


def simulate_readers(
    *,
    session: Session,
    admin: UserInfo,
    readers: list[tuple[UserInfo, ReaderModel]],
    truth: TruthModel,
    flt: WorklistFilter,
    seed: int = 0,
) -> dict[str, Any]:
    """Create a double read of the filter for two simulated readers, replay both, answer the report."""
    (ua, ma), (ub, mb) = readers
    a = service.create_assignment(
        session=session,
        user=admin,
        name=f"simulated readers (seed {seed})",
        mode="double",
        flt=flt,
        readers=[ua.name, ub.name],
    )
    for who, model, reader_seed in ((ua, ma, 1), (ub, mb, 2)):
        while (read := service.next_for_me(session=session, user=who, assignment_id=a["id"])) is not None:
            ks = corrections.get_key_slice(session, read["file_name"])
            size = min(ks.image_width, ks.image_height)
            marks = simulated_marks(read, model, truth, seed, reader_seed, size)
            saved = service.save_read(
                session=session, user=who, read_id=read["id"], version=read["version"], marks=marks
            )["read"]
            service.finish_read(session=session, user=who, read_id=read["id"], version=saved["version"])
    report = agreement_report(session=session, assignment_id=a["id"])
    return {
        "assignment_id": a["id"],
        "expected_kappa": expected_kappa(truth, ma, mb),
        "expected_f1": expected_f1(truth, ma, mb),
        "report": report,
    }
