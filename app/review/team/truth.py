"""Which truth an export or an evaluation reads: original, corrected, one reader's reads, or the consensus.

A reader's truth is the corrected state with that reader's latest done read laid over each key slice they
read; the consensus is the corrected state with each adjudicated key slice's consensus (or, where the two
reads agreed, their common read) laid over it. Key slices nobody read keep the corrected state.
"""

from __future__ import annotations

from collections.abc import Sequence, Set

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import KeySlice, Lesion, TeamAdjudication, TeamRead, User
from app.deeplesion.geometry import lesion_diameters
from app.review.errors import InvalidInputError, NotFoundError
from app.review.team.rules import CONSENSUS_TRUTH, READER_TRUTH_PREFIX, Mark, Read
from app.review.vocabulary import EXPORT_STATES, ORIGIN_DRAWN

READER_PREFIX = READER_TRUTH_PREFIX
CONSENSUS = CONSENSUS_TRUTH
# The truths by name; "reader:NAME" names one reader.
TRUTHS: dict[str, str] = {
    **EXPORT_STATES,
    CONSENSUS: "consensus of double reads",
    f"{READER_PREFIX}NAME": "one reader's reads",
}


def check_truth(truth: str) -> str:
    """The truth, or InvalidInputError when it names none."""
    if truth in EXPORT_STATES or truth == CONSENSUS:
        return truth
    if truth.startswith(READER_PREFIX) and truth[len(READER_PREFIX) :]:
        return truth
    raise InvalidInputError(f"truth must be one of {', '.join(TRUTHS)}, got {truth!r}")


def check_truth_known(session: Session, truth: str) -> None:
    """check_truth, and NotFoundError when a reader truth names nobody."""
    check_truth(truth)
    if truth.startswith(READER_PREFIX):
        _reader_id(session, truth[len(READER_PREFIX) :])


def file_label(truth: str) -> str:
    """A file-name-safe form of a truth ("reader:ann" -> "reader-ann")."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in truth)


def _reader_id(session: Session, name: str) -> int:
    uid = session.execute(select(User.id).where(User.name == name)).scalar_one_or_none()
    if uid is None:
        raise NotFoundError(f"no reader named {name!r}")
    return int(uid)


def _reader_overlays(
    session: Session, name: str, key_slice_ids: Set[int] | None
) -> tuple[dict[int, Read], int]:
    uid = _reader_id(session, name)
    query = (
        select(TeamRead.key_slice_id, TeamRead.marks)
        .where(TeamRead.reader_id == uid, TeamRead.status == "done")
        .order_by(TeamRead.finished_at, TeamRead.id)
    )
    if key_slice_ids is not None:
        query = query.where(TeamRead.key_slice_id.in_(key_slice_ids))
    return {ks: Read.from_dict(marks or {}) for ks, marks in session.execute(query)}, uid


def _consensus_overlays(session: Session, key_slice_ids: Set[int] | None) -> dict[int, Read]:
    out: dict[int, Read] = {}
    query = select(TeamAdjudication).order_by(TeamAdjudication.id)
    if key_slice_ids is not None:
        query = query.where(TeamAdjudication.key_slice_id.in_(key_slice_ids))
    for adj in session.execute(query).scalars():
        if adj.status == "resolved" and adj.consensus is not None:
            out[adj.key_slice_id] = Read.from_dict(adj.consensus)
        elif adj.status == "agreed":
            first = session.execute(
                select(TeamRead.marks)
                .where(TeamRead.assignment_id == adj.assignment_id, TeamRead.key_slice_id == adj.key_slice_id)
                .order_by(TeamRead.slot)
                .limit(1)
            ).scalar_one()
            out[adj.key_slice_id] = Read.from_dict(first or {})
    return out


def _copy(lesion: Lesion) -> Lesion:
    """A detached copy (never added to a session) that a truth may change without touching the row."""
    return Lesion(**{c.key: getattr(lesion, c.key) for c in Lesion.__table__.columns})


def _marked(lesion: Lesion, mark: Mark, spacing_x: float, by: int | None) -> Lesion:
    out = _copy(lesion)
    out.recist = list(mark.recist) if mark.recist is not None else None
    out.box = list(mark.box)
    out.lesion_type = mark.lesion_type
    out.size_mm = lesion_diameters(mark.recist, mark.box)[0] * spacing_x
    out.deleted = mark.deleted
    if mark.flag_reason != lesion.flag_reason:
        out.flag_reason, out.flag_note, out.flagged_by_id = mark.flag_reason, mark.flag_note or None, by
    if not mark.noisy and out.confirmed_by_id is None:
        out.confirmed_by_id = by
    return out


def truth_lesions(
    session: Session,
    truth: str,
    lesions: Sequence[Lesion],
    *,
    key_slice_ids: Set[int] | None = None,
    added_for: Set[int] | None = None,
) -> list[Lesion]:
    """The current lesions as the truth has them (detached copies where it differs), in the same order.

    `key_slice_ids` limits the reads looked at to the lesions' key slices, `added_for` the key slices whose
    added marks are wanted (a streamed export adds them with a key slice's last row); None means all.
    """
    check_truth(truth)
    if truth in EXPORT_STATES:
        return list(lesions)
    if truth == CONSENSUS:
        overlays, by = _consensus_overlays(session, key_slice_ids), None
    else:
        overlays, by = _reader_overlays(session, truth[len(READER_PREFIX) :], key_slice_ids)
    geometry = {
        ks: (sx, key_index)
        for ks, sx, key_index in session.execute(
            select(KeySlice.id, KeySlice.spacing_x, KeySlice.key_slice_index).where(
                KeySlice.id.in_(list(overlays))
            )
        )
    }
    out: list[Lesion] = []
    for lesion in lesions:
        read = overlays.get(lesion.key_slice_id)
        mark = read.lesions.get(lesion.id) if read is not None else None
        changed = _marked(lesion, mark, geometry[lesion.key_slice_id][0], by) if mark is not None else lesion
        if not changed.deleted:
            out.append(changed)
    # The added marks as new detached lesions on their key slice (the exports place them after its rows).
    for ks_id, read in overlays.items():
        if added_for is not None and ks_id not in added_for:
            continue
        spacing_x, key_index = geometry[ks_id]
        out += [
            Lesion(
                key_slice_id=ks_id,
                origin=ORIGIN_DRAWN,
                recist=list(m.recist) if m.recist is not None else None,
                box=list(m.box),
                slice_index=key_index,
                lesion_type=m.lesion_type,
                size_mm=lesion_diameters(m.recist, m.box)[0] * spacing_x,
                deleted=False,
                confirmed_by_id=by,
                created_by_id=by,
            )
            for m in read.added
            if not m.deleted
        ]
    return out
