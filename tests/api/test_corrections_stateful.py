"""A model-based test of the review API: random sessions of two reviewers against a small reference model.

After every step the key slice the API answers with must equal the model's. At the end of each example the
corrected DL_info.csv export (with extras) re-imported into an empty database must give the same lesions,
the COCO export must agree, and replaying the audit log must reproduce every lesion's final state.
The model is written from docs/api.md alone: no app.review code computes an expected value here.

Examples per backend: LESION_REVIEW_STATEFUL_EXAMPLES (default 10) of LESION_REVIEW_STATEFUL_STEPS steps
(default 30); CI can raise both. The test also checks that every kind of write really ran (MIN_RUNS each).
A failing example is printed as the list of steps; LESION_REVIEW_STATEFUL_SHRINK=1 shrinks it first (slow).
"""

from __future__ import annotations

import collections
import functools
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db.session import make_engine, upgrade_database
from app.deeplesion.schema import LesionRecord
from app.review.importer import import_dataset
from app.review.vocabulary import FLAG_REASONS
from tests.api.conftest import Api, Template, _pg_execute, _pg_url, add_user
from tests.api.lesion_api import (
    KS_A,
    KS_C,
    ScriptedDetector,
    body,
    csv_rows,
    export_coco,
    export_csv,
    history,
    key_slice,
    numbers,
    open_api,
)
from tests.api.review_data import review_records

EXAMPLES = int(os.environ.get("LESION_REVIEW_STATEFUL_EXAMPLES", "10"))
STEPS = int(os.environ.get("LESION_REVIEW_STATEFUL_STEPS", "30"))
MIN_RUNS = int(os.environ.get("LESION_REVIEW_STATEFUL_MIN_RUNS", "3"))
# Shrinking a failing session of API calls can take many minutes: on when asked (=1), e.g. to debug locally.
SHRINK = os.environ.get("LESION_REVIEW_STATEFUL_SHRINK", "0") == "1"
# The same examples every run (so the every-rule check cannot flake) unless asked to explore (=1).
RANDOM = os.environ.get("LESION_REVIEW_STATEFUL_RANDOM", "0") == "1"

USERS = ("anna", "ben")
ADMIN = "boss"
PLAY = (KS_A, KS_C)
TYPES = (-1, 1, 2, 3, 4, 5, 6, 7, 8)
NOTES = ("see prior study", 'two "lesions", merged', "ünïcödé ✓", "a,b;c\tend")
PAD = 5.0  # the dataset's box rule: the RECIST end points' extent padded 5 px on each side

# Places for drawn and moved lesions (centre x, centre y, long and short half axes; 0-based px), apart from
# each other and from every lesion of the dataset, so any two boxes overlap either by far (same slot) or not
# at all: whether a prediction matches a lesion is never a close call.
SLOTS = {"s0": (20, 100, 8, 5), "s1": (100, 20, 8, 5), "s2": (60, 112, 8, 4)}
# Predictions the scripted detector finds: two slots per key slice and one on a csv lesion (a duplicate).
PREDICTED_SLOTS = {KS_A: ("s0", "s1"), KS_C: ("s0", "s2")}

Geometry = tuple[tuple[float, ...] | None, tuple[float, ...]]


def box_of(recist: tuple[float, ...]) -> tuple[float, ...]:
    xs, ys = recist[0::2], recist[1::2]
    return (min(xs) - PAD, min(ys) - PAD, max(xs) + PAD, max(ys) + PAD)


def slot_geometry(slot: str, variant: str) -> Geometry:
    """A slot's geometry: a RECIST cross, the same with one end point dragged 2 px, or its box alone."""
    cx, cy, a, b = SLOTS[slot]
    recist = (cx - a, cy, cx + a + (2 if variant == "nudged" else 0), cy, cx, cy - b, cx, cy + b)
    recist_f = tuple(float(v) for v in recist)
    return (None, box_of(recist_f)) if variant == "box" else (recist_f, box_of(recist_f))


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _t(values: Any) -> tuple[float, ...] | None:
    return None if values is None else tuple(round(float(v), 6) for v in values)


# --- the reference model ------------------------------------------------------------------------


@dataclass
class MLesion:
    id: int
    ks: str
    origin: str  # csv | drawn | prediction
    recist: tuple[float, ...] | None
    box: tuple[float, ...]
    lesion_type: int
    slice_index: int
    flag: tuple[str, str, str | None] | None  # reason, note, by (None: the dataset's own)
    confirmed_by: str | None
    created_by: str | None
    prediction_id: int | None
    original: tuple[Any, ...] | None  # (recist, box, lesion_type, slice_index) as imported
    alive: bool = True
    mods: int = 0  # successful changes so far (any user): the model's notion of "changed since"
    version: int = 0  # the client's knowledge of the API version (what a browser would send)

    def geometry_key(self) -> tuple[Any, ...]:
        return (self.recist, self.box, self.lesion_type, self.slice_index)

    def content(self) -> tuple[Any, ...]:
        return (self.alive, *self.geometry_key(), self.flag, self.confirmed_by)

    def set_content(self, content: tuple[Any, ...]) -> None:
        (
            self.alive,
            self.recist,
            self.box,
            self.lesion_type,
            self.slice_index,
            self.flag,
            self.confirmed_by,
        ) = content

    @property
    def edited(self) -> bool:
        return self.origin == "csv" and self.geometry_key() != self.original

    @property
    def review(self) -> str:
        if self.flag is not None:
            return "flagged"
        if self.edited:
            return "edited"
        return "confirmed" if self.confirmed_by is not None else "unreviewed"


@dataclass
class MPrediction:
    id: int
    ks: str
    box: tuple[float, ...]
    score: float
    status: str = "pending"
    lesion_id: int | None = None
    mods: int = 0
    version: int = 0

    def content(self) -> tuple[Any, ...]:
        return (self.status, self.lesion_id)


@dataclass
class Step:
    """One undoable step: what it touched, their contents before and after, and their change counters."""

    action: str
    ks: str
    lesion_id: int | None
    prediction_id: int | None
    lesion_before: tuple[Any, ...] | None
    lesion_after: tuple[Any, ...] | None
    pred_before: tuple[Any, ...] | None
    pred_after: tuple[Any, ...] | None
    mods: tuple[int, int] = (0, 0)  # (lesion, prediction) counters when the step was last applied/undone


@dataclass
class Expect:
    """What one write should do: its status, and for a change its audit action."""

    status: int
    action: str | None = None  # None: nothing changes (entry null)
    code: str | None = None
    either: bool = False  # undo/redo where docs/api.md allows both outcomes (see _undo_outcome)


RULE_RUNS: collections.Counter[str] = collections.Counter()
# Every kind of step the test must have taken, and seen succeed or be refused, MIN_RUNS times or more.
REQUIRED_OUTCOMES = (
    "write: confirm",
    "write: flag",
    "write: unflag",
    "write: edit geometry",
    "write: change type",
    "add: key slice, recist",
    "add: context slice, recist",
    "add: key slice, box",
    "write: delete",
    "accept: duplicate, allow_duplicate=False",
    "accept: new, allow_duplicate=False",
    "write: reject",
    "undo: ok",
    "redo: ok",
    "refused: delete_csv",
    "refused: confirm_flagged",
    "refused: other_without_note",
    "stale: lesion",
    "stale: prediction",
)
OUTCOMES: collections.Counter[str] = collections.Counter()


def note_outcome(what: str) -> None:
    """A Hypothesis event, also counted for LESION_REVIEW_STATEFUL_VERBOSE=1."""
    OUTCOMES[what] += 1
    event(what)


def counted(fn: Callable[..., None]) -> Callable[..., None]:
    """Count the rule's runs (the test asserts that every rule ran)."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        RULE_RUNS[fn.__name__] += 1
        try:
            fn(self, *args, **kwargs)
        except BaseException:
            self.failed = True  # teardown's final checks would only repeat the failure less clearly
            raise

    return wrapper


@dataclass
class World:
    """What the machine needs from the fixtures."""

    template: Template
    data_dir: Path
    empty_sqlite: Path
    tmp: Path


class ReviewMachine(RuleBasedStateMachine):
    """Two reviewers at work on two key slices; the model says what the API must answer."""

    world: World

    def __init__(self) -> None:
        super().__init__()
        self.stack = ExitStack()
        self.lesions: dict[int, MLesion] = {}
        self.predictions: dict[int, MPrediction] = {}
        self.undo_stack: dict[tuple[str, str], list[Step]] = collections.defaultdict(list)
        self.redo_stack: dict[tuple[str, str], list[Step]] = collections.defaultdict(list)
        self.status: dict[tuple[str, str], str] = {}
        self.ks_version: dict[str, int] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.apis: dict[str, Api] = {}
        self.database_url = ""
        self.failed = False
        self.work = self.world.tmp / uuid.uuid4().hex[:8]
        self.work.mkdir()

    # --- set-up and tear-down --------------------------------------------------------------------

    @initialize()
    @counted
    def start(self) -> None:
        self.database_url = self.stack.enter_context(_fresh_database(self.world.template, self.work))
        settings_ = Settings(data_dir=self.world.data_dir, database_url=self.database_url, model_path=None)
        for name in (*USERS, ADMIN):
            api = self.stack.enter_context(open_api(settings_, self.database_url))
            self.apis[name] = api.login(name, create=False)
        self._load_initial_state()

    def teardown(self) -> None:
        try:
            if self.apis and not self.failed:
                self._check_final_state()
        finally:
            self.stack.close()
            shutil.rmtree(self.work, ignore_errors=True)

    def _load_initial_state(self) -> None:
        """The model starts from review_records() (1-based CSV minus 1); the API's ids are matched by box."""
        records = [r for r in review_records() if r.file_name in PLAY]
        for name in PLAY:
            ks = key_slice(self.apis[USERS[0]], name)
            self.meta[name] = ks
            self.ks_version[name] = ks["version"]
            for user in USERS:
                self.status[(user, name)] = "unreviewed"
            for le in ks["lesions"]:
                box_ = _t(le["original"]["box"])
                rec = next(
                    r for r in records if r.file_name == name and _t(v - 1 for v in r.bounding_box) == box_
                )
                recist = tuple(float(v) - 1 for v in rec.measurement_coordinates)
                box = tuple(float(v) - 1 for v in rec.bounding_box)
                original = (_t(recist), _t(box), rec.coarse_lesion_type, rec.key_slice_index)
                self.lesions[le["id"]] = MLesion(
                    id=le["id"],
                    ks=name,
                    origin="csv",
                    recist=original[0],
                    box=original[1],  # type: ignore[arg-type]
                    lesion_type=rec.coarse_lesion_type,
                    slice_index=rec.key_slice_index,
                    flag=("dataset", "", None) if rec.possibly_noisy else None,
                    confirmed_by=None,
                    created_by=None,
                    prediction_id=None,
                    original=original,
                    version=le["version"],
                )
            for p in ks["predictions"]:
                self.predictions[p["id"]] = MPrediction(
                    p["id"],
                    name,
                    _t(p["box"]) or (),
                    p["score"],
                    version=p["version"],
                )
            assert len(ks["predictions"]) == len(PREDICTED_SLOTS[name]) + 1
            self._check_key_slice(name, ks, USERS[0])

    # --- checks ----------------------------------------------------------------------------------

    def _check_key_slice(self, name: str, ks: dict[str, Any], user: str) -> None:
        """The API's KeySlice equals the model's (and the client learns the current versions)."""
        alive = {le.id: le for le in self.lesions.values() if le.ks == name and le.alive}
        got = {le["id"]: le for le in ks["lesions"]}
        assert set(got) == set(alive), f"{name}: lesions {sorted(got)} != model {sorted(alive)}"
        for lesion_id, m in alive.items():
            a = got[lesion_id]
            cur = a["current"]
            where = f"lesion {lesion_id} ({m.origin}) on {name}"
            assert a["origin"] == m.origin, where
            assert (_t(cur["recist"]), _t(cur["box"]), cur["lesion_type"], cur["slice_index"]) == (
                m.geometry_key()
            ), where
            assert a["measured"] is (m.recist is not None), where
            flag = (
                None if a["flag"] is None else (a["flag"]["reason"], a["flag"]["note"] or "", a["flag"]["by"])
            )
            assert flag == m.flag, where
            assert (a["confirmed"] or {}).get("by") == m.confirmed_by, where
            assert (a["created"] or {}).get("by") == m.created_by, where
            assert (a["prediction"] or {}).get("id") == m.prediction_id, where
            assert a["edited"] is m.edited, where
            assert a["review"] == m.review, where
            if m.origin != "csv":
                assert a["layer"] == "added", where
            elif m.edited:
                assert a["layer"] == "corrected", where
            elif m.review == "unreviewed":
                assert a["layer"] == "original", where
            if m.original is not None:
                orig = a["original"]
                assert (_t(orig["recist"]), _t(orig["box"]), orig["lesion_type"], orig["slice_index"]) == (
                    m.original
                ), where
            m.version = a["version"]
        preds = {p["id"]: p for p in ks["predictions"]}
        model_preds = {p.id: p for p in self.predictions.values() if p.ks == name}
        assert set(preds) == set(model_preds), name
        for pid, mp in model_preds.items():
            assert (preds[pid]["status"], preds[pid]["lesion_id"]) == mp.content(), f"prediction {pid}"
            mp.version = preds[pid]["version"]
        assert ks["status"] == self.status[(user, name)], f"{user}'s status of {name}"

    def _versions(self, name: str) -> dict[tuple[str, int], int]:
        """The client's known versions of the key slice's current lesions and its predictions."""
        out = {("l", le.id): le.version for le in self.lesions.values() if le.ks == name and le.alive}
        out.update({("p", p.id): p.version for p in self.predictions.values() if p.ks == name})
        return out

    def _all_mods(self, name: str) -> dict[tuple[str, int], int]:
        out = {("l", le.id): le.mods for le in self.lesions.values() if le.ks == name}
        out.update({("p", p.id): p.mods for p in self.predictions.values() if p.ks == name})
        return out

    def _write(
        self, user: str, name: str, call: Callable[[Api], Any], expect: Expect, apply: Callable[[dict], None]
    ) -> dict[str, Any]:
        """Send a write; on the expected success apply it to the model; check the answer against the model."""
        versions, mods = self._versions(name), self._all_mods(name)
        response = call(self.apis[user])
        if expect.either:
            note_outcome(f"changed back by someone else, then {expect.action}: {response.status_code}")
            expect = (
                Expect(409, code="edit_conflict")
                if response.status_code == 409
                else replace(expect, either=False)
            )
        out = body(response, expect.status)
        if expect.status >= 400:
            if expect.code is not None:
                assert out.get("code") == expect.code, out
            if out.get("key_slice") is not None:  # its presence on every 409: test_corrections_defects.py
                self._check_key_slice(name, out["key_slice"], user)
            again = key_slice(self.apis[user], name)
            assert again["version"] == self.ks_version[name], "a refused write moved the key slice version"
            self._check_key_slice(name, again, user)
            assert self._versions(name) == versions, "a refused write changed a version"
            return out
        apply(out)
        if expect.action is not None:
            self.status[(user, name)] = "in_progress"
        ks, entry = out["key_slice"], out["entry"]
        if expect.action is None:
            assert entry is None, f"nothing changed, yet an audit entry: {entry}"
            assert ks["version"] == self.ks_version[name], "nothing changed, yet the key slice version moved"
        else:
            assert entry is not None and entry["action"] == expect.action and entry["user"] == user, entry
            assert ks["version"] > self.ks_version[name], "a change must move the key slice version"
        self.ks_version[name] = ks["version"]
        self._check_key_slice(name, ks, user)
        changed = {k for k, n in self._all_mods(name).items() if n != mods.get(k, 0)}
        for k, version in self._versions(name).items():
            if k in versions:
                if k in changed:
                    assert version > versions[k], f"{k} changed but kept version {version}"
                else:
                    assert version == versions[k], f"{k} did not change but its version moved"
        return out

    # --- helpers over the model ------------------------------------------------------------------

    def _alive(self, pred: Callable[[MLesion], bool] = lambda le: True) -> list[int]:
        return sorted(le.id for le in self.lesions.values() if le.alive and pred(le))

    def _push(self, user: str, step: Step) -> None:
        key = (user, step.ks)
        self.undo_stack[key].append(step)
        self.redo_stack[key].clear()

    def _touch(self, le: MLesion | None = None, p: MPrediction | None = None) -> None:
        if le is not None:
            le.mods += 1
        if p is not None:
            p.mods += 1

    def _mods(self, step: Step) -> tuple[int, int]:
        le = self.lesions.get(step.lesion_id) if step.lesion_id is not None else None
        p = self.predictions.get(step.prediction_id) if step.prediction_id is not None else None
        return (le.mods if le else 0, p.mods if p else 0)

    def _lesion_step(
        self, user: str, action: str, le: MLesion, change: Callable[[], None]
    ) -> Callable[[dict], None]:
        """An `apply` for a one-lesion step: change the model, count it, push it for undo."""

        def apply(out: dict[str, Any]) -> None:
            before = le.content()
            change()
            self._touch(le)
            step = Step(action, le.ks, le.id, None, before, le.content(), None, None)
            step.mods = self._mods(step)
            self._push(user, step)
            assert out["lesion_id"] == le.id

        return apply

    # --- rules: lesion writes --------------------------------------------------------------------

    def do_confirm(self, user: str, data: st.DataObject) -> None:
        le = self.lesions[
            data.draw(st.sampled_from(self._alive(lambda x: x.flag is None and x.confirmed_by is None)))
        ]
        self._write(
            user,
            le.ks,
            lambda api: api.write("POST", f"/api/lesions/{le.id}/confirm", json={"version": le.version}),
            Expect(200, "confirm"),
            self._lesion_step(user, "confirm", le, lambda: setattr(le, "confirmed_by", user)),
        )

    def do_flag(self, user: str, data: st.DataObject) -> None:
        reason = data.draw(st.sampled_from(sorted(FLAG_REASONS)))
        le = self.lesions[data.draw(st.sampled_from(self._alive(lambda x: x.flag is None)))]
        note = data.draw(st.sampled_from(NOTES) if reason == "other" else st.sampled_from(("", *NOTES)))
        self._write(
            user,
            le.ks,
            lambda api: api.write(
                "POST",
                f"/api/lesions/{le.id}/flag",
                json={"version": le.version, "reason": reason, "note": note},
            ),
            Expect(200, "flag"),
            self._lesion_step(user, "flag", le, lambda: setattr(le, "flag", (reason, note, user))),
        )

    def do_unflag(self, user: str, data: st.DataObject) -> None:
        le = self.lesions[data.draw(st.sampled_from(self._alive(lambda x: x.flag is not None)))]
        self._write(
            user,
            le.ks,
            lambda api: api.write("POST", f"/api/lesions/{le.id}/unflag", json={"version": le.version}),
            Expect(200, "unflag"),
            self._lesion_step(user, "unflag", le, lambda: setattr(le, "flag", None)),
        )

    def do_edit_geometry(self, user: str, data: st.DataObject) -> None:
        place = data.draw(st.sampled_from(["s0", "s1", "s2", "original", "same"]))
        variant = data.draw(st.sampled_from(["recist", "nudged", "box", "recist+box"]))
        le = self.lesions[data.draw(st.sampled_from(self._alive()))]
        recist: tuple[float, ...] | None
        if place == "same" or (place == "original" and le.original is None):
            recist, box = le.recist, le.box
        elif place == "original":
            assert le.original is not None
            recist, box = le.original[0], le.original[1]
        else:
            recist, box = slot_geometry(place, "box" if variant == "box" else variant.split("+")[0])
        payload: dict[str, Any] = {"box": list(box)}
        if recist is not None:
            derived = _t(box_of(recist)) == _t(box)
            only_recist = variant in ("recist", "nudged") and derived and place != "original"
            payload = {"recist": list(recist)} if only_recist else {"recist": list(recist), "box": list(box)}
        new_recist, new_box = _t(recist), _t(box)
        assert new_box is not None
        same = (new_recist, new_box) == (le.recist, le.box)

        def change() -> None:
            le.recist, le.box = new_recist, new_box

        if same:
            self._write(
                user,
                le.ks,
                lambda api: api.write(
                    "PUT", f"/api/lesions/{le.id}/geometry", json={"version": le.version, **payload}
                ),
                Expect(200),
                lambda out: None,
            )
            return
        self._write(
            user,
            le.ks,
            lambda api: api.write(
                "PUT", f"/api/lesions/{le.id}/geometry", json={"version": le.version, **payload}
            ),
            Expect(200, "edit"),
            self._lesion_step(user, "edit", le, change),
        )

    def do_change_type(self, user: str, data: st.DataObject) -> None:
        lesion_type = data.draw(st.sampled_from(TYPES))
        le = self.lesions[data.draw(st.sampled_from(self._alive()))]
        same = lesion_type == le.lesion_type

        def call(api: Api) -> Any:
            return api.write(
                "PUT",
                f"/api/lesions/{le.id}/geometry",
                json={"version": le.version, "lesion_type": lesion_type},
            )

        if same:
            self._write(user, le.ks, call, Expect(200), lambda out: None)
            return
        self._write(
            user,
            le.ks,
            call,
            Expect(200, "edit"),
            self._lesion_step(user, "edit", le, lambda: setattr(le, "lesion_type", lesion_type)),
        )

    def do_add(self, user: str, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(PLAY))
        slot = data.draw(st.sampled_from(sorted(SLOTS)))
        variant = data.draw(st.sampled_from(["recist", "nudged", "box"]))
        lesion_type = data.draw(st.sampled_from(TYPES))
        on_context = data.draw(st.booleans())
        note_outcome(f"add: {'context slice' if on_context else 'key slice'}, {variant}")
        ks = self.meta[name]
        key = ks["key_slice_index"]
        first, last = ks["slice_range"]
        slice_index = key
        if on_context:
            slice_index = data.draw(st.sampled_from([i for i in range(first, last + 1) if i != key]))
        recist, box = slot_geometry(slot, variant)
        payload: dict[str, Any] = {"lesion_type": lesion_type}
        payload.update({"box": list(box)} if recist is None else {"recist": list(recist)})
        if slice_index != key or data.draw(st.booleans()):
            payload["slice_index"] = slice_index

        def apply(out: dict[str, Any]) -> None:
            lesion_id = out["lesion_id"]
            assert lesion_id not in self.lesions, "a new lesion must get a new id"
            le = MLesion(
                id=lesion_id,
                ks=name,
                origin="drawn",
                recist=_t(recist),
                box=_t(box),  # type: ignore[arg-type]
                lesion_type=lesion_type,
                slice_index=slice_index,
                flag=None,
                confirmed_by=user,
                created_by=user,
                prediction_id=None,
                original=None,
                alive=False,
            )
            before = le.content()
            le.alive = True
            self.lesions[lesion_id] = le
            self._touch(le)
            step = Step("add", name, lesion_id, None, before, le.content(), None, None)
            step.mods = self._mods(step)
            self._push(user, step)

        self._write(
            user,
            name,
            lambda api: api.write("POST", f"/api/key-slices/{name}/lesions", json=payload),
            Expect(201, "add"),
            apply,
        )

    def do_delete(self, user: str, data: st.DataObject) -> None:
        le = self.lesions[data.draw(st.sampled_from(self._alive(lambda x: x.origin != "csv")))]
        self._write(
            user,
            le.ks,
            lambda api: api.write("DELETE", f"/api/lesions/{le.id}?version={le.version}"),
            Expect(200, "delete"),
            self._lesion_step(user, "delete", le, lambda: setattr(le, "alive", False)),
        )

    # --- rules: predictions ----------------------------------------------------------------------

    def _pending(self) -> list[int]:
        return sorted(p.id for p in self.predictions.values() if p.status == "pending")

    def do_accept(self, user: str, data: st.DataObject) -> None:
        lesion_type = data.draw(st.sampled_from(TYPES))
        allow = data.draw(st.booleans())
        p = self.predictions[data.draw(st.sampled_from(self._pending()))]
        key = self.meta[p.ks]["key_slice_index"]
        overlapping = [
            le for le in self.lesions.values() if le.ks == p.ks and le.alive and iou(p.box, le.box) >= 0.5
        ]
        for le in self.lesions.values():
            if le.ks == p.ks and le.alive:
                assert iou(p.box, le.box) == 0.0 or iou(p.box, le.box) > 0.8, (
                    "a close call the model cannot judge"
                )
        on_key = [le.id for le in overlapping if le.slice_index == key]
        if overlapping and not on_key:
            allow = True  # a match on another slice: docs/api.md does not say; either way allowed
        body_: dict[str, Any] = {"version": p.version, "lesion_type": lesion_type}
        if allow or data.draw(st.booleans()):
            body_["allow_duplicate"] = allow

        def call(api: Api) -> Any:
            return api.write("POST", f"/api/predictions/{p.id}/accept", json=body_)

        note_outcome(f"accept: {'duplicate' if on_key else 'new'}, allow_duplicate={allow}")
        if on_key and not allow:
            out = self._write(user, p.ks, call, Expect(409, code="duplicate_lesion"), lambda out: None)
            assert out["lesion_id"] in on_key, out
            return

        def apply(out: dict[str, Any]) -> None:
            lesion_id = out["lesion_id"]
            assert out["prediction_id"] == p.id and lesion_id not in self.lesions
            le = MLesion(
                id=lesion_id,
                ks=p.ks,
                origin="prediction",
                recist=None,
                box=p.box,
                lesion_type=lesion_type,
                slice_index=key,
                flag=None,
                confirmed_by=user,
                created_by=user,
                prediction_id=p.id,
                original=None,
                alive=False,
            )
            lesion_before, pred_before = le.content(), p.content()
            le.alive = True
            p.status, p.lesion_id = "accepted", lesion_id
            self.lesions[lesion_id] = le
            self._touch(le, p)
            step = Step(
                "accept_prediction",
                p.ks,
                lesion_id,
                p.id,
                lesion_before,
                le.content(),
                pred_before,
                p.content(),
            )
            step.mods = self._mods(step)
            self._push(user, step)

        self._write(user, p.ks, call, Expect(200, "accept_prediction"), apply)

    def do_reject(self, user: str, data: st.DataObject) -> None:
        p = self.predictions[data.draw(st.sampled_from(self._pending()))]

        def apply(out: dict[str, Any]) -> None:
            assert out["prediction_id"] == p.id
            before = p.content()
            p.status = "rejected"
            self._touch(p=p)
            step = Step("reject_prediction", p.ks, None, p.id, None, None, before, p.content())
            step.mods = self._mods(step)
            self._push(user, step)

        self._write(
            user,
            p.ks,
            lambda api: api.write("POST", f"/api/predictions/{p.id}/reject", json={"version": p.version}),
            Expect(200, "reject_prediction"),
            apply,
        )

    # --- rules: stale versions -------------------------------------------------------------------

    # --- rules: refused writes and stale versions -------------------------------------------------
    # (one rule each, whatever the write: so that every kind gets its share of the examples)

    def do_invalid_write_is_refused(self, user: str, data: st.DataObject) -> None:
        """Confirming a flagged lesion, flagging 'other' without a note, deleting a csv lesion: 422."""
        kinds = ["delete_csv"] if self._alive(lambda x: x.origin == "csv") else []
        kinds += ["confirm_flagged"] if self._alive(lambda x: x.flag is not None) else []
        kinds += ["other_without_note"] if self._alive(lambda x: x.flag is None) else []
        kind = data.draw(st.sampled_from(kinds))
        note_outcome(f"refused: {kind}")
        if kind == "delete_csv":
            le = self.lesions[data.draw(st.sampled_from(self._alive(lambda x: x.origin == "csv")))]
            method, url, payload, code = "DELETE", f"/api/lesions/{le.id}?version={le.version}", None, None
        elif kind == "confirm_flagged":
            le = self.lesions[data.draw(st.sampled_from(self._alive(lambda x: x.flag is not None)))]
            method, url, code = "POST", f"/api/lesions/{le.id}/confirm", "lesion_flagged"
            payload = {"version": le.version}
        else:
            le = self.lesions[data.draw(st.sampled_from(self._alive(lambda x: x.flag is None)))]
            method, url, code = "POST", f"/api/lesions/{le.id}/flag", None
            payload = {"version": le.version, "reason": "other", "note": ""}
        self._write(
            user,
            le.ks,
            lambda api: (
                api.write(method, url, json=payload) if payload is not None else api.write(method, url)
            ),
            Expect(422, code=code),
            lambda out: None,
        )

    def do_stale_write_is_a_conflict(self, user: str, data: st.DataObject) -> None:
        """Any lesion or prediction write with an old version: 409, nothing changes."""
        on_prediction = bool(self._pending()) and data.draw(st.booleans())
        if on_prediction:
            p = self.predictions[data.draw(st.sampled_from(self._pending()))]
            accept = data.draw(st.booleans())
            note_outcome("stale: prediction")
            note_outcome(f"stale: {'accept' if accept else 'reject'}")
            body_: dict[str, Any] = {"version": p.version - 1}
            if accept:
                body_.update(lesion_type=3, allow_duplicate=True)
            url = f"/api/predictions/{p.id}/{'accept' if accept else 'reject'}"
            out = self._write(
                user,
                p.ks,
                lambda api: api.write("POST", url, json=body_),
                Expect(409, code="edit_conflict"),
                lambda out: None,
            )
            assert out["current"]["id"] == p.id and out["current"]["version"] == p.version, out
            return
        le = self.lesions[data.draw(st.sampled_from(self._alive()))]
        stale = le.version - 1
        other_type = 8 if le.lesion_type != 8 else 1
        ops: list[tuple[str, str, dict[str, Any] | None]] = [
            ("PUT", f"/api/lesions/{le.id}/geometry", {"version": stale, "lesion_type": other_type})
        ]
        if le.flag is None:
            flag_body = {"version": stale, "reason": "duplicate", "note": ""}
            ops.append(("POST", f"/api/lesions/{le.id}/flag", flag_body))
            if le.confirmed_by is None:
                ops.append(("POST", f"/api/lesions/{le.id}/confirm", {"version": stale}))
        else:
            ops.append(("POST", f"/api/lesions/{le.id}/unflag", {"version": stale}))
        if le.origin != "csv":
            ops.append(("DELETE", f"/api/lesions/{le.id}?version={stale}", None))
        method, url, payload = data.draw(st.sampled_from(ops))
        note_outcome("stale: lesion")
        note_outcome(f"stale: {method} {url.rsplit('/', 1)[-1].split('?')[0]}")
        out = self._write(
            user,
            le.ks,
            lambda api: (
                api.write(method, url, json=payload) if payload is not None else api.write(method, url)
            ),
            Expect(409, code="edit_conflict"),
            lambda out: None,
        )
        assert out["current"]["id"] == le.id and out["current"]["version"] == le.version, out

    # --- rules: undo and redo --------------------------------------------------------------------

    def _apply_content(
        self, step: Step, lesion: tuple[Any, ...] | None, pred: tuple[Any, ...] | None
    ) -> None:
        if step.lesion_id is not None and lesion is not None:
            le = self.lesions[step.lesion_id]
            le.set_content(lesion)
            self._touch(le)
        if step.prediction_id is not None and pred is not None:
            p = self.predictions[step.prediction_id]
            p.status, p.lesion_id = pred
            self._touch(p=p)

    def _outcome(self, step: Step, lesion: tuple[Any, ...] | None, pred: tuple[Any, ...] | None) -> str:
        """'ok', 'conflict', or 'either': a step can be undone (redone) while its objects are as it left them.

        Changed-and-changed-back by someone else is the one case docs/api.md leaves open ("something someone
        else has since changed again"): by content it may go ahead, by version it is a conflict.
        """
        same_content = (step.lesion_id is None or self.lesions[step.lesion_id].content() == lesion) and (
            step.prediction_id is None or self.predictions[step.prediction_id].content() == pred
        )
        if not same_content:
            return "conflict"
        return "ok" if self._mods(step) == step.mods else "either"

    def _who_and_where(
        self, stacks: dict[tuple[str, str], list[Step]], data: st.DataObject
    ) -> tuple[str, str]:
        """Mostly a user with something to undo (redo) on that key slice; sometimes anyone, anywhere."""
        ready = sorted(k for k, v in stacks.items() if v)
        if ready and data.draw(st.integers(0, 3)) > 0:
            return data.draw(st.sampled_from(ready))
        return data.draw(st.sampled_from(USERS)), data.draw(st.sampled_from(PLAY))

    def do_undo(self, data: st.DataObject) -> None:
        user, name = self._who_and_where(self.undo_stack, data)
        stack = self.undo_stack[(user, name)]
        call = lambda api: api.write("POST", f"/api/key-slices/{name}/undo")  # noqa: E731
        if not stack:
            note_outcome("undo: nothing to undo")
            self._write(user, name, call, Expect(200), lambda out: None)
            return
        step = stack[-1]
        outcome = self._outcome(step, step.lesion_after, step.pred_after)
        note_outcome(f"undo: {outcome}")
        if outcome == "conflict":
            self._write(user, name, call, Expect(409, code="edit_conflict"), lambda out: None)
            return

        def apply(out: dict[str, Any]) -> None:
            self._apply_content(step, step.lesion_before, step.pred_before)
            step.mods = self._mods(step)
            stack.pop()
            self.redo_stack[(user, name)].append(step)

        self._write(user, name, call, Expect(200, "undo", either=outcome == "either"), apply)

    def do_redo(self, data: st.DataObject) -> None:
        user, name = self._who_and_where(self.redo_stack, data)
        stack = self.redo_stack[(user, name)]
        call = lambda api: api.write("POST", f"/api/key-slices/{name}/redo")  # noqa: E731
        if not stack:
            note_outcome("redo: nothing to redo")
            self._write(user, name, call, Expect(200), lambda out: None)
            return
        step = stack[-1]
        outcome = self._outcome(step, step.lesion_before, step.pred_before)
        note_outcome(f"redo: {outcome}")
        if outcome == "conflict":
            self._write(user, name, call, Expect(409, code="edit_conflict"), lambda out: None)
            return

        def apply(out: dict[str, Any]) -> None:
            self._apply_content(step, step.lesion_after, step.pred_after)
            step.mods = self._mods(step)
            stack.pop()
            self.undo_stack[(user, name)].append(step)

        self._write(user, name, call, Expect(200, "redo", either=outcome == "either"), apply)

    # --- the rules: a few, each choosing among related writes, so every write gets its share -----
    # (Hypothesis switches some rules off in each example; with many small rules, some went unrun)

    @rule(user=st.sampled_from(USERS), data=st.data())
    @counted
    def review_a_lesion(self, user: str, data: st.DataObject) -> None:
        """Confirm, flag with a reason, or unflag."""
        kinds = ["confirm"] if self._alive(lambda x: x.flag is None and x.confirmed_by is None) else []
        kinds += ["flag"] if self._alive(lambda x: x.flag is None) else []
        kinds += ["unflag"] if self._alive(lambda x: x.flag is not None) else []
        kind = data.draw(st.sampled_from(kinds))
        note_outcome(f"write: {kind}")
        {"confirm": self.do_confirm, "flag": self.do_flag, "unflag": self.do_unflag}[kind](user, data)

    @rule(user=st.sampled_from(USERS), data=st.data())
    @counted
    def edit_a_lesion(self, user: str, data: st.DataObject) -> None:
        """Move or reshape a lesion (RECIST, dragged end point, box only, original); or retype it."""
        if data.draw(st.booleans()):
            note_outcome("write: edit geometry")
            self.do_edit_geometry(user, data)
        else:
            note_outcome("write: change type")
            self.do_change_type(user, data)

    @rule(user=st.sampled_from(USERS), data=st.data())
    @counted
    def add_or_delete(self, user: str, data: st.DataObject) -> None:
        """Draw a lesion (key or context slice, RECIST or box only), or delete a drawn or accepted one."""
        if self._alive(lambda x: x.origin != "csv") and data.draw(st.integers(0, 2)) == 0:
            note_outcome("write: delete")
            self.do_delete(user, data)
        else:
            note_outcome("write: add")
            self.do_add(user, data)

    @precondition(lambda self: self._pending())
    @rule(user=st.sampled_from(USERS), data=st.data())
    @counted
    def review_a_prediction(self, user: str, data: st.DataObject) -> None:
        """Accept (refused as a duplicate unless allowed) or reject a pending prediction."""
        if data.draw(st.integers(0, 2)) > 0:
            note_outcome("write: accept")
            self.do_accept(user, data)
        else:
            note_outcome("write: reject")
            self.do_reject(user, data)

    @rule(data=st.data())
    @counted
    def undo_or_redo(self, data: st.DataObject) -> None:
        """Undo a user's last step on a key slice, or redo their last undone one."""
        if any(self.redo_stack.values()) and data.draw(st.booleans()):
            self.do_redo(data)
        else:
            self.do_undo(data)

    @rule(user=st.sampled_from(USERS), data=st.data())
    @counted
    def bad_write(self, user: str, data: st.DataObject) -> None:
        """A write with a stale version (409) or one the rules refuse (422): nothing changes."""
        if data.draw(st.booleans()):
            self.do_stale_write_is_a_conflict(user, data)
        else:
            self.do_invalid_write_is_refused(user, data)

    # --- the end of an example: exports, re-import, audit replay ---------------------------------

    def _expected_rows(self) -> list[tuple[Any, ...]]:
        """Every current lesion as (slice file, box, recist, type, noisy, flag reason, flag note): the model's
        lesions of the key slices in play, and the other key slices' rows as review_records() wrote them."""
        out: list[tuple[Any, ...]] = []
        for le in self.lesions.values():
            if le.alive:
                folder = self.meta[le.ks]["series_folder"]
                reason, note = (le.flag[0], le.flag[1]) if le.flag else ("", "")
                noisy = le.flag is not None
                out.append(
                    (
                        f"{folder}_{le.slice_index:03d}.png",
                        le.box,
                        le.recist,
                        le.lesion_type,
                        noisy,
                        reason,
                        note,
                    )
                )
        for r in review_records():
            if r.file_name not in PLAY:
                box, recist = _t(v - 1 for v in r.bounding_box), _t(v - 1 for v in r.measurement_coordinates)
                noisy = bool(r.possibly_noisy)
                out.append(
                    (r.file_name, box, recist, r.coarse_lesion_type, noisy, "dataset" if noisy else "", "")
                )
        return sorted(out, key=repr)

    def _check_final_state(self) -> None:
        admin = self.apis[ADMIN]
        for name in PLAY:
            for user in USERS:
                self._check_key_slice(name, key_slice(self.apis[user], name), user)
        expected = self._expected_rows()

        # The corrected CSV with extras: one row per current lesion, +1 coordinates, flags and notes.
        text = export_csv(admin, extras=1)
        got = []
        for r in csv_rows(text):
            recist = numbers(r["Measurement_coordinates"])
            got.append(
                (
                    r["File_name"],
                    _t(v - 1 for v in numbers(r["Bounding_boxes"])),
                    None if all(v != v for v in recist) else _t(v - 1 for v in recist),
                    int(r["Coarse_lesion_type"]),
                    r["Possibly_noisy"] == "1",
                    r["Flag_reason"],
                    r["Flag_note"],
                )
            )
        assert sorted(got, key=repr) == expected, "corrected DL_info.csv != model"

        # Re-imported into an empty database, the export gives the same lesions back.
        assert sorted(self._reimport(text), key=repr) == expected, "re-imported export != model"

        # COCO agrees.
        coco = export_coco(admin)
        images = {i["id"]: i for i in coco["images"]}
        unlabelled = {c["id"] for c in coco["categories"] if c["name"] == "unlabelled"}
        coco_rows = []
        for a in coco["annotations"]:
            attrs = a["attributes"]
            _, folder, png = images[a["image_id"]]["file_name"].split("/")
            x, y, w, h = a["bbox"]
            coco_rows.append(
                (
                    f"{folder}_{png}",
                    _t((x, y, x + w, y + h)),
                    _t(a["recist"]),
                    -1 if a["category_id"] in unlabelled else a["category_id"],
                    bool(attrs["possibly_noisy"]),
                    attrs["flag_reason"] or "",
                    attrs["flag_note"] or "",
                )
            )
        assert sorted(coco_rows, key=repr) == expected, "COCO != model"

        # Replaying the audit log's `after` states in order gives every touched lesion's current state.
        for name in PLAY:
            replay: dict[int, tuple[Any, ...] | None] = {}
            for entry in history(admin, name):
                if entry["lesion_id"] is None:
                    continue
                after = entry["after"]
                if entry["action"] in ("undo", "redo") and isinstance(after, dict) and "state" in after:
                    after = after["state"]
                replay[entry["lesion_id"]] = _replayed(after)
            for lesion_id, state in replay.items():
                le = self.lesions[lesion_id]
                reason, note = (le.flag[0], le.flag[1]) if le.flag else (None, None)
                confirmed = le.confirmed_by is not None
                now = (le.box, le.recist, le.lesion_type, le.slice_index, reason, note, confirmed)
                now = now if le.alive else None
                assert state == now, f"audit replay of lesion {lesion_id}: {state} != {now}"
            for le in self.lesions.values():
                if le.ks == name and le.id not in replay:
                    assert le.origin == "csv" and le.mods == 0, (
                        f"lesion {le.id} changed without an audit entry"
                    )

    def _reimport(self, text: str) -> list[tuple[Any, ...]]:
        """Import the export into an empty database and read every lesion back through the API."""
        data = self.work / "reimport"
        data.mkdir()
        (data / "DL_info.csv").write_text(text, encoding="utf-8")
        (data / "Images_png").symlink_to(self.world.data_dir / "Images_png")
        db = self.work / "reimport.db"
        shutil.copy(self.world.empty_sqlite, db)
        url = f"sqlite:///{db}"
        engine = make_engine(url)
        try:
            import_dataset(engine=engine, data_dir=data)
        finally:
            engine.dispose()
        add_user(url, "reader")
        out = []
        with open_api(Settings(data_dir=data, database_url=url, model_path=None), url) as api:
            api.login("reader", create=False)
            listing = body(api.client.get("/api/key-slices", params={"page_size": 500}))
            for item in listing["items"]:
                ks = key_slice(api, item["file_name"])
                for le in ks["lesions"]:
                    cur = le["current"]
                    flag = le["flag"]
                    out.append(
                        (
                            f"{ks['series_folder']}_{cur['slice_index']:03d}.png",
                            _t(cur["box"]),
                            _t(cur["recist"]),
                            cur["lesion_type"],
                            flag is not None,
                            flag["reason"] if flag else "",
                            (flag["note"] or "") if flag else "",
                        )
                    )
        return out


def _replayed(after: Any) -> tuple[Any, ...] | None:
    """An audit `after` as (box, recist, type, slice, flag reason, flag note, confirmed); None: deleted.

    Read either as a Lesion (docs/api.md's shape) or as flat fields (flag_reason, confirmed_by_id...).
    """
    if after is None or not isinstance(after, dict):
        return None
    if after.get("deleted") or after.get("review") == "deleted" or after.get("alive") is False:
        return None
    geometry = after.get("current", after)
    flag = after.get("flag")
    reason = flag.get("reason") if isinstance(flag, dict) else after.get("flag_reason")
    note = flag.get("note") if isinstance(flag, dict) else after.get("flag_note")
    confirmed = after.get("confirmed") is not None or after.get("confirmed_by_id") is not None
    return (
        _t(geometry["box"]),
        _t(geometry.get("recist")),
        geometry["lesion_type"],
        geometry["slice_index"],
        reason,
        (note or "") if reason is not None else None,
        confirmed,
    )


# --- fixtures and the test ----------------------------------------------------------------------


def _database_copy(template: Template, where: Path) -> Any:
    """A context manager: a fresh copy of the template database, dropped afterwards."""

    @contextmanager
    def copy() -> Iterator[str]:
        if template.kind == "sqlite":
            dst = where / "review.db"
            shutil.copy(make_url(template.url).database or "", dst)
            yield f"sqlite:///{dst}"
            return
        assert template.server_url is not None
        source = make_url(template.url).database
        name = f"lr_sm_{uuid.uuid4().hex[:10]}"
        _pg_execute(template.server_url, f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        try:
            yield _pg_url(template.server_url, name)
        finally:
            _pg_execute(template.server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return copy()


def _pg_run(url: str, *statements: str) -> list[Any]:
    """Run statements on the database of `url` in autocommit; the last one's rows."""
    import psycopg

    u = make_url(url)
    conninfo: dict[str, Any] = {"host": u.host or "127.0.0.1", "port": u.port or 5432}
    conninfo.update(user=u.username or "postgres", dbname=u.database, password=u.password or None)
    rows: list[Any] = []
    with psycopg.connect(**{k: v for k, v in conninfo.items() if v is not None}, autocommit=True) as conn:
        for sql in statements:
            cur = conn.execute(sql)  # type: ignore[arg-type]
            rows = cur.fetchall() if cur.description else []
    return rows


def _pg_tables(url: str) -> list[str]:
    rows = _pg_run(
        url,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version' "
        "ORDER BY tablename",
    )
    return [r[0] for r in rows]


def _pg_snapshot(url: str) -> None:
    """Keep a copy of every table in a schema `snap`, for _pg_reset."""
    tables = _pg_tables(url)
    _pg_run(url, "CREATE SCHEMA snap", *(f'CREATE TABLE snap."{t}" AS TABLE public."{t}"' for t in tables))


def _pg_reset(url: str, tables: list[str]) -> None:
    """Put every table back as _pg_snapshot found it: seconds cheaper than a new database per example.

    DELETE, not TRUNCATE: these tables are tiny, and TRUNCATE makes new files for each. Sequences are not
    reset, so an example's new rows get ids no earlier example used.
    """
    statements = [
        "SET session_replication_role = replica",  # the rows come back in any order: no FK checks meanwhile
        *(f'DELETE FROM public."{t}"' for t in tables),
        *(f'INSERT INTO public."{t}" SELECT * FROM snap."{t}"' for t in tables),
    ]
    _pg_run(url, "BEGIN; " + "; ".join(statements) + "; COMMIT")


def _fresh_database(template: Template, where: Path) -> Any:
    """A context manager: the machine template's state for one example (file copy; PostgreSQL: reset)."""

    @contextmanager
    def fresh() -> Iterator[str]:
        if template.kind == "sqlite":
            with _database_copy(template, where) as url:
                yield url
            return
        _pg_reset(template.url, _pg_tables(template.url))
        yield template.url

    return fresh()


@pytest.fixture(scope="module")
def machine_template(
    db_template: Template,
    review_dataset: tuple[Path, list[LesionRecord]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Template]:
    """The imported dataset, the users and the scripted detector's predictions: copied for each example."""
    root = tmp_path_factory.mktemp("machine")
    with _database_copy(db_template, root) as url:
        for name in USERS:
            add_user(url, name)
        add_user(url, ADMIN, "admin")
        boxes: dict[str, list[tuple[list[float], float]]] = {}
        for i, name in enumerate(PLAY):
            slots = [list(slot_geometry(s, "recist")[1]) for s in PREDICTED_SLOTS[name]]
            first_csv = next(r for r in review_records() if r.file_name == name)
            on_lesion = [v - 1 for v in first_csv.bounding_box]
            boxes[name] = [(slots[0], 0.9 - i / 10), (slots[1], 0.6 - i / 10), (on_lesion, 0.8 - i / 10)]
        detector = ScriptedDetector(boxes=boxes)
        settings_ = Settings(data_dir=review_dataset[0], database_url=url, model_path=None)
        with open_api(settings_, url, detector) as admin:
            admin.login(ADMIN, create=False)
            for name in PLAY:
                r = admin.write("POST", f"/api/key-slices/{name}/predict?threshold=0.05")
                assert r.status_code == 200, r.text  # type: ignore[attr-defined]
        if db_template.kind == "sqlite":
            yield Template("sqlite", url)
        else:
            _pg_snapshot(url)
            yield Template("postgresql", url, db_template.server_url)


@pytest.fixture(scope="module")
def empty_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite database to import exports into."""
    path = tmp_path_factory.mktemp("empty") / "empty.db"
    upgrade_database(f"sqlite:///{path}")
    return path


def test_random_review_sessions_keep_api_exports_and_audit_log_equal_to_a_reference_model(
    machine_template: Template,
    review_dataset: tuple[Path, list[LesionRecord]],
    empty_sqlite: Path,
    tmp_path: Path,
) -> None:
    RULE_RUNS.clear()
    OUTCOMES.clear()
    world = World(machine_template, review_dataset[0], empty_sqlite, tmp_path)

    class Machine(ReviewMachine):
        pass

    Machine.world = world
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            derandomize=not RANDOM,
            suppress_health_check=list(HealthCheck),
            phases=[p for p in Phase if SHRINK or p not in (Phase.shrink, Phase.explain)],
        ),
    )
    if os.environ.get("LESION_REVIEW_STATEFUL_VERBOSE") == "1":
        print(f"\nrules: {dict(RULE_RUNS)}\noutcomes: {dict(sorted(OUTCOMES.items()))}")
    rare = {what: OUTCOMES[what] for what in REQUIRED_OUTCOMES if OUTCOMES[what] < MIN_RUNS}
    assert not rare, f"ran fewer than {MIN_RUNS} times: {rare} (all: {dict(sorted(OUTCOMES.items()))})"
