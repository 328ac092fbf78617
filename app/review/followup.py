"""Follow-up in the database: run matching, correct links (confirm, break, add, undo), tracks, response."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from app.db.models import AuditEntry, KeySlice, Lesion, LesionLink, OriginalLesion, utcnow
from app.deeplesion.followup import (
    LesionObs,
    choose_targets,
    match_patient,
    patch_descriptor,
    recist_response,
    scan_position,
    tracks_from_links,
)
from app.deeplesion.geometry import lesion_diameters
from app.deeplesion.store import SliceStore
from app.review.corrections import bump_version, finish_step, review_result
from app.review.errors import EditConflictError, InvalidInputError, NotFoundError
from app.review.serialize import key_slice_dict
from app.review.users import UserInfo
from app.review.vocabulary import LINK_ACTIVE


@dataclass(frozen=True)
class _Row:
    """A current lesion with what follow-up needs of its key slice and original row."""

    lesion: Lesion
    ks: KeySlice
    norm: tuple[float | None, float | None, float | None]

    @property
    def diameters_mm(self) -> tuple[float, float]:
        long_px, short_px = lesion_diameters(self.lesion.recist, self.lesion.box)
        return long_px * self.ks.spacing_x, short_px * self.ks.spacing_x


def _rows(session: Session, patient: int | None = None) -> list[_Row]:
    """Current lesions (not deleted) with key slice and normalised location, by patient and study."""
    q = (
        select(Lesion, KeySlice, OriginalLesion.normalized_location)
        .join(KeySlice, Lesion.key_slice_id == KeySlice.id)
        .outerjoin(OriginalLesion, Lesion.original_id == OriginalLesion.id)
        .where(Lesion.deleted.is_(False))
    )
    if patient is not None:
        q = q.where(KeySlice.patient_index == patient)
    out: list[_Row] = []
    for lesion, ks, norm in session.execute(
        q.order_by(KeySlice.patient_index, KeySlice.study_index, Lesion.id)
    ):
        loc = tuple(None if v is None else float(v) for v in (norm or (None, None, None)))
        out.append(_Row(lesion, ks, loc))  # type: ignore[arg-type]
    return out


def _descriptor(row: _Row, store: SliceStore) -> tuple[float, ...] | None:
    """The appearance of the lesion's box on its slice, when that slice is stored."""
    name = f"{row.ks.file_name.rsplit('_', 1)[0]}_{row.lesion.slice_index:03d}.png"
    if not store.exists(name):
        return None
    hu = store.read_hu(name)
    x1, y1, x2, y2 = (int(round(v)) for v in row.lesion.box)
    patch = hu[max(0, y1) : y2 + 1, max(0, x1) : x2 + 1]
    return patch_descriptor(patch.astype(float)) if patch.size else None


def _obs(row: _Row, store: SliceStore | None = None) -> LesionObs:
    ks, lesion = row.ks, row.lesion
    return LesionObs(
        key=lesion.id,
        patient=ks.patient_index,
        study=ks.study_index,
        norm=row.norm,
        scan_mm=scan_position(lesion.box, (ks.spacing_x, ks.spacing_y, ks.spacing_z), lesion.slice_index),
        long_mm=row.diameters_mm[0],
        lesion_type=lesion.lesion_type,
        descriptor=_descriptor(row, store) if store is not None else None,
    )


def run_matching(
    *, session: Session, patient: int | None = None, store: SliceStore | None = None
) -> dict[str, Any]:
    """Replace the matcher's proposed links (of one patient or all); reviewer decisions stay and win."""
    for attempt in range(2):
        try:
            return _run_matching(session, patient, store)
        except (StaleDataError, IntegrityError):
            # A reviewer decided a proposed link while it was being replaced: start again from their state.
            session.rollback()
            if attempt:
                raise EditConflictError("links changed during matching; run it again", current={}) from None
    raise AssertionError("unreachable")


def _run_matching(session: Session, patient: int | None, store: SliceStore | None) -> dict[str, Any]:
    """One matching run (see run_matching)."""
    # With a store, each lesion whose slice is on disk also gets its appearance descriptor: one PNG read per
    # lesion, minutes for the whole real dataset, so import leaves it out.
    start = time.perf_counter()
    rows = _rows(session, patient)
    by_patient: dict[int, list[LesionObs]] = {}
    for row in rows:
        by_patient.setdefault(row.ks.patient_index, []).append(_obs(row, store))
    seen = sum(1 for obs in by_patient.values() for o in obs if o.descriptor is not None)
    q = select(LesionLink)
    if patient is not None:
        q = q.where(LesionLink.patient_index == patient)
    existing = {(lk.from_lesion_id, lk.to_lesion_id): lk for lk in session.execute(q).scalars()}
    kept = {pair for pair, lk in existing.items() if not (lk.origin == "matched" and lk.status == "proposed")}
    for pair, lk in existing.items():
        if pair not in kept:
            session.delete(lk)
    session.flush()
    added = 0
    for p, obs in by_patient.items():
        for link in match_patient(obs).links:
            if (link.a, link.b) in kept or (link.b, link.a) in kept:
                continue
            session.add(
                LesionLink(
                    patient_index=p,
                    from_lesion_id=link.a,
                    to_lesion_id=link.b,
                    origin="matched",
                    status="proposed",
                    cost=link.cost,
                )
            )
            added += 1
    session.commit()
    return {
        "patients": len(by_patient),
        "lesions": len(rows),
        "proposed": added,
        "kept": len(kept),
        "appearance": seen,
        "seconds": round(time.perf_counter() - start, 3),
    }


def link_dict(lk: LesionLink) -> dict[str, Any]:
    """A link as the API shows it."""
    return {
        "id": lk.id,
        "patient_index": lk.patient_index,
        "from_lesion_id": lk.from_lesion_id,
        "to_lesion_id": lk.to_lesion_id,
        "origin": lk.origin,
        "status": lk.status,
        "cost": lk.cost,
        "version": lk.version,
    }


def _snap(lk: LesionLink) -> dict[str, Any]:
    return {"link_id": lk.id, "status": lk.status, "version": lk.version}


def _get_link(session: Session, link_id: int) -> LesionLink:
    lk = session.get(LesionLink, link_id)
    if lk is None:
        raise NotFoundError(f"no link {link_id}")
    return lk


def _link_conflict(session: Session, lk: LesionLink, user: UserInfo) -> EditConflictError:
    session.rollback()
    fresh = _get_link(session, lk.id)
    ks = _key_slice_of(session, fresh.from_lesion_id)
    return EditConflictError(
        f"link {fresh.id} was changed by someone else first (now version {fresh.version})",
        current=link_dict(fresh),
        changed_at=fresh.updated_at,
        key_slice=key_slice_dict(session, ks, user.id),
    )


def _key_slice_of(session: Session, lesion_id: int) -> KeySlice:
    lesion = session.get(Lesion, lesion_id)
    if lesion is None:
        raise NotFoundError(f"no lesion {lesion_id}")
    return session.get_one(KeySlice, lesion.key_slice_id)


def _set_status(
    session: Session, user: UserInfo, lk: LesionLink, status: str, action: str, before: dict[str, Any] | None
) -> dict[str, Any]:
    """One undoable step on a link, recorded on the key slice of its earlier lesion."""
    ks = _key_slice_of(session, lk.from_lesion_id)
    bump_version(session, ks)
    lk.status = status
    lk.updated_by_id = user.id
    lk.updated_at = utcnow()
    try:
        session.flush()
    except StaleDataError:
        raise _link_conflict(session, lk, user) from None
    return finish_step(
        session, user, ks, action=action, lesion_id=lk.from_lesion_id, before=before, after=_snap(lk)
    )


def _decide(
    session: Session, user: UserInfo, link_id: int, version: int, status: str, action: str
) -> dict[str, Any]:
    lk = _get_link(session, link_id)
    if lk.version != version:
        raise _link_conflict(session, lk, user)
    if lk.status == "removed":
        raise InvalidInputError(f"link {link_id} was removed; add it again instead")
    if lk.status == status:
        return review_result(
            session, user, _key_slice_of(session, lk.from_lesion_id), lesion_id=lk.from_lesion_id
        )
    return _set_status(session, user, lk, status, action, _snap(lk))


def confirm_link(*, session: Session, user: UserInfo, link_id: int, version: int) -> dict[str, Any]:
    """A reviewer says the two lesions are the same lesion."""
    return _decide(session, user, link_id, version, "confirmed", "link_confirm")


def break_link(*, session: Session, user: UserInfo, link_id: int, version: int) -> dict[str, Any]:
    """A reviewer says the two lesions are not the same lesion; matching never proposes the pair again."""
    return _decide(session, user, link_id, version, "broken", "link_break")


def add_link(*, session: Session, user: UserInfo, from_lesion_id: int, to_lesion_id: int) -> dict[str, Any]:
    """A reviewer links two current lesions of one patient's different studies (earlier study first)."""
    if from_lesion_id == to_lesion_id:
        raise InvalidInputError("a lesion cannot be linked to itself")
    a, b = session.get(Lesion, from_lesion_id), session.get(Lesion, to_lesion_id)
    for lid, lesion in ((from_lesion_id, a), (to_lesion_id, b)):
        if lesion is None:
            raise NotFoundError(f"no lesion {lid}")
        if lesion.deleted:
            raise InvalidInputError(f"lesion {lid} is deleted")
    assert a is not None and b is not None
    ka, kb = session.get_one(KeySlice, a.key_slice_id), session.get_one(KeySlice, b.key_slice_id)
    if ka.patient_index != kb.patient_index:
        raise InvalidInputError("the two lesions belong to different patients")
    if ka.study_index == kb.study_index:
        raise InvalidInputError("the two lesions are in the same study; a link joins different studies")
    if ka.study_index > kb.study_index:
        a, b = b, a
    _check_one_lesion_per_study(session, ka.patient_index, a.id, b.id)
    lk = session.execute(
        select(LesionLink).where(LesionLink.from_lesion_id == a.id, LesionLink.to_lesion_id == b.id)
    ).scalar_one_or_none()
    if lk is not None:
        if lk.status == "confirmed":
            return review_result(session, user, _key_slice_of(session, a.id), lesion_id=a.id)
        return _set_status(session, user, lk, "confirmed", "link_add", _snap(lk))
    lk = LesionLink(
        patient_index=ka.patient_index,
        from_lesion_id=a.id,
        to_lesion_id=b.id,
        origin="reviewer",
        status="removed",
    )
    session.add(lk)
    try:
        session.flush()
    except IntegrityError:  # the same pair was added (or proposed) by someone else a moment ago
        session.rollback()
        raise EditConflictError("this link was just added by someone else", current={}) from None
    return _set_status(session, user, lk, "confirmed", "link_add", {**_snap(lk), "status": "removed"})


def _check_one_lesion_per_study(session: Session, patient: int, a: int, b: int) -> None:
    """Joining two tracks must not give one track two lesions of a study: break the wrong link first."""
    rows = {r.lesion.id: r for r in _rows(session, patient)}
    tracks = track_ids(session, patient)
    if tracks[a] == tracks[b]:
        return
    studies_a = {r.ks.study_index: lid for lid, r in rows.items() if tracks[lid] == tracks[a]}
    for lid, r in rows.items():
        other = studies_a.get(r.ks.study_index)
        if tracks[lid] == tracks[b] and other is not None:
            raise InvalidInputError(
                f"study {r.ks.study_index} would hold two lesions of one track ({other} and {lid}): "
                "break the wrong link first",
                code="track_conflict",
            )


def restore_link(
    session: Session, entry: AuditEntry, target: dict[str, Any] | None, expected: dict[str, Any] | None
) -> dict[str, Any]:
    """Undo/redo of a link step: put the link's status back, unless someone changed it since (409)."""
    assert target is not None and expected is not None
    lk = _get_link(session, int(target["link_id"]))
    if lk.status != expected["status"]:
        session.rollback()
        raise EditConflictError(
            f"link {lk.id} was changed since", current=link_dict(_get_link(session, lk.id))
        )
    lk.status = target["status"]
    lk.updated_at = utcnow()
    try:
        session.flush()
    except StaleDataError:
        session.rollback()
        raise EditConflictError(f"link {lk.id} was changed since", current={}) from None
    return _snap(lk)


# -- the graph, tracks, timeline and response ---------------------------------------------------------------


def _active_links(session: Session, patient: int | None) -> list[LesionLink]:
    q = select(LesionLink).where(LesionLink.status.in_(LINK_ACTIVE))
    if patient is not None:
        q = q.where(LesionLink.patient_index == patient)
    return list(session.execute(q.order_by(LesionLink.id)).scalars())


def track_name(patient: int, smallest_lesion_id: int) -> str:
    """A track's id: its patient and its smallest lesion id (stable while its links stay)."""
    return f"{patient:06d}-T{smallest_lesion_id}"


def track_ids(session: Session, patient: int | None = None) -> dict[int, str]:
    """Track id of every current lesion (a lesion without links is a track of its own)."""
    rows = _rows(session, patient)
    links = [(lk.from_lesion_id, lk.to_lesion_id) for lk in _active_links(session, patient)]
    comp = tracks_from_links([r.lesion.id for r in rows], links)
    patient_of = {r.lesion.id: r.ks.patient_index for r in rows}
    return {k: track_name(patient_of[k], root) for k, root in comp.items()}


def graph(session: Session) -> dict[str, Any]:
    """The lesion graph: nodes (current lesions with their track) and edges (every non-removed link)."""
    rows = _rows(session)
    tracks = track_ids(session)
    links = session.execute(
        select(LesionLink).where(LesionLink.status != "removed").order_by(LesionLink.id)
    ).scalars()
    return {
        "nodes": [
            {
                "lesion_id": r.lesion.id,
                "file_name": r.ks.file_name,
                "patient_index": r.ks.patient_index,
                "study_index": r.ks.study_index,
                "track_id": tracks[r.lesion.id],
            }
            for r in rows
        ],
        "edges": [link_dict(lk) for lk in links],
    }


def patient_followup(*, session: Session, patient: int, baseline: int | None = None) -> dict[str, Any]:
    """Studies, lesions with tracks, links, each track's axes over time and the RECIST response."""
    rows = _rows(session, patient)
    if not rows:
        raise NotFoundError(f"no lesions of patient {patient}")
    tracks = track_ids(session, patient)
    studies = sorted({r.ks.study_index for r in rows})
    if baseline is not None and baseline not in studies:
        raise InvalidInputError(f"patient {patient} has no study {baseline}; studies: {studies}")
    lesions = []
    by_track: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        long_mm, short_mm = r.diameters_mm
        box = r.lesion.box
        item: dict[str, Any] = {
            "lesion_id": r.lesion.id,
            "file_name": r.ks.file_name,
            "study_index": r.ks.study_index,
            "slice_index": r.lesion.slice_index,
            "slice_name": f"{r.ks.file_name.rsplit('_', 1)[0]}_{r.lesion.slice_index:03d}",
            "lesion_type": r.lesion.lesion_type,
            "long_mm": round(long_mm, 2),
            "short_mm": round(short_mm, 2),
            "centre_px": [round((box[0] + box[2]) / 2, 2), round((box[1] + box[3]) / 2, 2)],
            "box": list(box),
            "image_size": [r.ks.image_width, r.ks.image_height],
            "track_id": tracks[r.lesion.id],
        }
        lesions.append(item)
        by_track.setdefault(item["track_id"], []).append(item)
    timeline = [_track_timeline(tid, items) for tid, items in sorted(by_track.items())]
    links = session.execute(
        select(LesionLink)
        .where(LesionLink.patient_index == patient, LesionLink.status != "removed")
        .order_by(LesionLink.id)
    ).scalars()
    base = baseline if baseline is not None else studies[0]
    return {
        "patient_index": patient,
        "studies": studies,
        "lesions": lesions,
        "links": [link_dict(lk) for lk in links],
        "tracks": timeline,
        "response": response_table(timeline, studies, base),
    }


def _track_timeline(track_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """One track's long and short axes per study with % change from its first study."""
    items = sorted(items, key=lambda i: (i["study_index"], i["lesion_id"]))
    per_study: dict[int, dict[str, Any]] = {}
    for i in items:
        per_study.setdefault(i["study_index"], i)  # two lesions of one study in a track: the first counts
    first = next(iter(per_study.values()))
    points = [
        {
            "study_index": s,
            "lesion_id": i["lesion_id"],
            "long_mm": i["long_mm"],
            "short_mm": i["short_mm"],
            "long_change_pct": _pct(i["long_mm"], first["long_mm"]),
            "short_change_pct": _pct(i["short_mm"], first["short_mm"]),
        }
        for s, i in per_study.items()
    ]
    return {"track_id": track_id, "lesion_type": first["lesion_type"], "points": points}


def _pct(value: float, ref: float) -> float | None:
    return None if ref <= 0 else round((value - ref) / ref * 100.0, 1)


def response_table(timeline: Iterable[dict[str, Any]], studies: list[int], baseline: int) -> dict[str, Any]:
    """Targets chosen at the baseline study, their sum per later study, and its RECIST 1.1 category."""
    timeline = list(timeline)
    at_base = [
        (t["track_id"], t["lesion_type"], p["long_mm"])
        for t in timeline
        for p in t["points"]
        if p["study_index"] == baseline
    ]
    order = {t["track_id"]: n for n, t in enumerate(timeline)}
    targets = choose_targets([(order[tid], ltype, mm) for tid, ltype, mm in at_base])
    target_ids = [timeline[n]["track_id"] for n in targets]
    out: dict[str, Any] = {"baseline_study": baseline, "targets": target_ids, "studies": []}
    if not target_ids:
        out["note"] = "no measurable target lesion (long axis >= 10 mm) at the baseline study"
        return out
    sums: dict[int, float] = {}
    for s in studies:
        if s < baseline:
            continue
        sums[s] = round(
            sum(
                p["long_mm"]
                for t in timeline
                if t["track_id"] in target_ids
                for p in t["points"]
                if p["study_index"] == s
            ),
            2,
        )
    known_before = {t["track_id"] for t in timeline if any(p["study_index"] <= baseline for p in t["points"])}
    nadir = sums[baseline]
    for s, total in sums.items():
        row: dict[str, Any] = {"study_index": s, "sum_mm": total}
        if s != baseline:
            new = any(
                t["track_id"] not in known_before and min(p["study_index"] for p in t["points"]) == s
                for t in timeline
            )
            resp = recist_response(sums[baseline], nadir, total, new_lesion=new)
            row.update(
                category=resp.category,
                rule=resp.rule,
                change_from_baseline_pct=_round_pct(resp.change_from_baseline),
                change_from_nadir_pct=_round_pct(resp.change_from_nadir),
                nadir_mm=nadir,
            )
            nadir = min(nadir, total)
        out["studies"].append(row)
    return out


def _round_pct(v: float | None) -> float | None:
    return None if v is None else round(v * 100.0, 1)
