"""Predictions: 503 without a model, cached per model version, IoU matching, missed score, accept/reject."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.api.conftest import Api

KS = "000001_01_01_108.png"


@dataclass
class Det:
    box: tuple[float, float, float, float]
    score: float
    recist: tuple[float, ...] | None = None


# The RECIST the fake detector proposes for its 0.07 box (1, 1, 9, 9): long axis 6 px, short 4 px.
PROPOSAL = (2.0, 5.0, 8.0, 5.0, 5.0, 3.0, 5.0, 7.0)


@dataclass
class FakeDetector:
    """Counts calls; returns one box on the first lesion and one far from every lesion."""

    lesion_box: list[float]
    model_version: str = "fake-1"
    provider: str = "CPUExecutionProvider"
    synthetic: bool = True
    calls: list[str] = field(default_factory=list)
    found_nothing: bool = False
    proposal: tuple[float, ...] | None = PROPOSAL

    def predict(self, file_name: str, store: Any, *, spacing_mm: Any, threshold: float = 0.05) -> list[Det]:
        self.calls.append(file_name)
        if self.found_nothing:
            return []
        found = [
            Det(tuple(self.lesion_box), 0.9),
            Det((100.0, 5.0, 120.0, 25.0), 0.6),
            Det((1, 1, 9, 9), 0.07, self.proposal),
        ]  # type: ignore[arg-type]
        return [d for d in found if d.score >= threshold]


def predict(api: Api, threshold: float | None = None) -> dict[str, Any]:
    """POST .../predict; the answer's run and key slice."""
    query = "" if threshold is None else f"?threshold={threshold}"
    r = api.write("POST", f"/api/key-slices/{KS}/predict{query}")
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    return r.json()  # type: ignore[attr-defined,no-any-return]


def stored(api: Api, threshold: float = 0.0) -> list[dict[str, Any]]:
    """GET .../predictions above a threshold, best first."""
    r = api.client.get(f"/api/key-slices/{KS}/predictions", params={"threshold": threshold})
    assert r.status_code == 200, r.text
    return r.json()["predictions"]  # type: ignore[no-any-return]


@pytest.fixture
def model_api(app_settings: Settings, database_url: str) -> Iterator[tuple[Api, FakeDetector]]:
    with TestClient(create_app(app_settings, detector=None)) as plain:
        box = (
            Api(plain, database_url).login("reader").client.get(f"/api/key-slices/{KS}").json()["lesions"][0]
        )
    detector = FakeDetector(lesion_box=box["current"]["box"])
    with TestClient(create_app(app_settings, detector=detector)) as c:
        yield Api(c, database_url).login("pia"), detector


def test_predict_without_a_model_is_503_no_model(api: Api) -> None:
    api.login("q1")
    r = api.write("POST", f"/api/key-slices/{KS}/predict")
    assert r.status_code == 503 and r.json()["code"] == "no_model"  # type: ignore[attr-defined]


def test_predict_stores_matches_and_caches_per_model_version(model_api: tuple[Api, FakeDetector]) -> None:
    api, detector = model_api
    first = api.write("POST", f"/api/key-slices/{KS}/predict?threshold=0.1")
    assert first.status_code == 200, first.text  # type: ignore[attr-defined]
    body = first.json()  # type: ignore[attr-defined]
    run = body["run"]
    assert run["cached"] is False and run["model_version"] == "fake-1" and run["threshold"] == 0.1
    assert run["provider"] == "CPUExecutionProvider" and run["elapsed_ms"] >= 0
    assert first.headers["cache-control"] == "no-store"  # type: ignore[attr-defined]
    # Stored down to the store threshold (0.05), whatever the asked threshold; the viewer filters by score.
    assert [p["score"] for p in body["key_slice"]["predictions"]] == [0.9, 0.6, 0.07]
    assert body["key_slice"] == api.client.get(f"/api/key-slices/{KS}").json()
    assert [p["score"] for p in stored(api, 0.1)] == [0.9, 0.6]
    assert [p["matches_annotation"] for p in stored(api, 0.1)] == [True, False]
    again = predict(api, 0.05)
    assert again["run"]["cached"] is True and len(again["key_slice"]["predictions"]) == 3
    assert detector.calls == [KS]


def test_predict_caches_an_empty_result_without_running_the_detector_again(
    model_api: tuple[Api, FakeDetector],
) -> None:
    api, detector = model_api
    detector.model_version = "fake-empty-1"
    detector.found_nothing = True
    first = predict(api)
    assert first["run"]["cached"] is False and first["key_slice"]["predictions"] == []
    again = predict(api)
    assert again["run"]["cached"] is True and again["key_slice"]["predictions"] == []
    assert detector.calls == [KS]


def test_unmatched_prediction_puts_the_slice_in_the_screening_queue(
    model_api: tuple[Api, FakeDetector],
) -> None:
    api, _ = model_api
    predict(api)
    items = api.client.get("/api/key-slices", params={"possible_missed": "true"}).json()["items"]
    assert [i["file_name"] for i in items] == [KS]
    assert items[0]["missed_score"] == 0.6 and items[0]["prediction_count"] == 3


def test_accept_creates_a_prediction_lesion_and_undo_reverts_it(model_api: tuple[Api, FakeDetector]) -> None:
    api, _ = model_api
    preds = predict(api, 0.05)["key_slice"]["predictions"]
    missed = next(p for p in preds if not p["matches_annotation"])
    r = api.write(
        "POST",
        f"/api/predictions/{missed['id']}/accept",
        json={"version": missed["version"], "lesion_type": 5},
    )
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    result = r.json()  # type: ignore[attr-defined]
    assert result["prediction_id"] == missed["id"] and result["entry"]["action"] == "accept_prediction"
    lesion = next(le for le in result["key_slice"]["lesions"] if le["id"] == result["lesion_id"])
    assert lesion["origin"] == "prediction" and lesion["layer"] == "added"
    assert lesion["prediction"] == {"id": missed["id"], "model_version": "fake-1", "score": 0.6}
    assert lesion["measured"] is False and lesion["current"]["recist"] is None
    assert lesion["confirmed"]["by"] == "pia" and lesion["current"]["lesion_type"] == 5
    assert lesion["current"]["box"] == missed["box"]
    detail = api.client.get(f"/api/key-slices/{KS}").json()
    assert detail == result["key_slice"]
    accepted = next(p for p in detail["predictions"] if p["id"] == missed["id"])
    assert accepted["status"] == "accepted" and accepted["lesion_id"] == lesion["id"]
    # Accepted: the missed score falls to the best remaining pending unmatched prediction.
    rest = [p["score"] for p in preds if not p["matches_annotation"] and p["id"] != missed["id"]]
    items = api.client.get("/api/key-slices", params={"possible_missed": "true"}).json()["items"]
    assert items[0]["missed_score"] == max(rest) < missed["score"]
    undone = api.write("POST", f"/api/key-slices/{KS}/undo").json()["key_slice"]  # type: ignore[attr-defined]
    assert lesion["id"] not in [le["id"] for le in undone["lesions"]]
    assert next(p for p in undone["predictions"] if p["id"] == missed["id"])["status"] == "pending"


def test_an_accepted_prediction_is_measured_by_its_recist_proposal(
    model_api: tuple[Api, FakeDetector],
) -> None:
    api, _ = model_api
    preds = predict(api, 0.05)["key_slice"]["predictions"]
    small = next(p for p in preds if p["score"] == 0.07)
    assert small["recist"] == list(PROPOSAL)
    assert [p["recist"] for p in preds if p["score"] != 0.07] == [None, None]
    r = api.write("POST", f"/api/predictions/{small['id']}/accept", json={"version": small["version"]})
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    result = r.json()  # type: ignore[attr-defined]
    lesion = next(le for le in result["key_slice"]["lesions"] if le["id"] == result["lesion_id"])
    assert lesion["measured"] is True and lesion["current"]["recist"] == list(PROPOSAL)
    assert lesion["current"]["box"] == small["box"]
    spacing = result["key_slice"]["spacing_mm"][0]
    assert lesion["current"]["long_axis_mm"] == pytest.approx(6.0 * spacing, abs=0.01)


def test_a_proposal_outside_the_image_leaves_the_accepted_lesion_box_only(
    model_api: tuple[Api, FakeDetector],
) -> None:
    api, detector = model_api
    detector.model_version = "fake-outside-1"
    detector.proposal = (-40.0, 5.0, 8.0, 5.0, 5.0, 3.0, 5.0, 7.0)
    small = next(p for p in predict(api, 0.05)["key_slice"]["predictions"] if p["score"] == 0.07)
    r = api.write("POST", f"/api/predictions/{small['id']}/accept", json={"version": small["version"]})
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    result = r.json()  # type: ignore[attr-defined]
    lesion = next(le for le in result["key_slice"]["lesions"] if le["id"] == result["lesion_id"])
    assert lesion["measured"] is False and lesion["current"]["recist"] is None


def test_reject_and_stale_accept(model_api: tuple[Api, FakeDetector]) -> None:
    api, _ = model_api
    pred = predict(api)["key_slice"]["predictions"][1]
    rejected = api.write("POST", f"/api/predictions/{pred['id']}/reject", json={"version": pred["version"]})
    result = rejected.json()  # type: ignore[attr-defined]
    assert result["prediction_id"] == pred["id"] and result["lesion_id"] is None
    assert result["entry"]["action"] == "reject_prediction"
    now = next(p for p in result["key_slice"]["predictions"] if p["id"] == pred["id"])
    assert now["status"] == "rejected" and now["version"] > pred["version"]
    stale = api.write("POST", f"/api/predictions/{pred['id']}/accept", json={"version": pred["version"]})
    assert stale.status_code == 409  # type: ignore[attr-defined]
    assert stored(api, 0.5)[1]["status"] == "rejected"


def test_unknown_prediction_is_404(model_api: tuple[Api, FakeDetector]) -> None:
    api, _ = model_api
    assert api.write("POST", "/api/predictions/999999/reject", json={"version": 1}).status_code == 404  # type: ignore[attr-defined]


def test_a_hand_drawn_lesion_over_a_missed_prediction_leaves_the_screening_queue(
    model_api: tuple[Api, FakeDetector],
) -> None:
    api, _ = model_api
    predict(api, 0.5)
    missed = next(p for p in stored(api, 0.5) if not p["matches_annotation"])
    before = api.client.get("/api/key-slices", params={"possible_missed": "true"}).json()["items"]
    assert [i["missed_score"] for i in before] == [missed["score"]]
    api.write("POST", f"/api/key-slices/{KS}/lesions", json={"box": missed["box"], "lesion_type": 5})
    after = api.client.get("/api/key-slices", params={"possible_missed": "true"}).json()["items"]
    # Only the weak 0.07 box is left unmatched.
    assert [i["missed_score"] for i in after] == [0.07]
    # The prediction now shows as matching an annotation (it was stored as not matching).
    for listed in (
        api.client.get(f"/api/key-slices/{KS}").json()["predictions"],
        api.client.get(f"/api/key-slices/{KS}/predictions").json()["predictions"],
    ):
        assert next(p for p in listed if p["id"] == missed["id"])["matches_annotation"] is True


def test_a_failing_detector_is_a_503_and_nothing_is_stored(model_api: tuple[Api, FakeDetector]) -> None:
    api, detector = model_api

    def broken(*args: Any, **kwargs: Any) -> list[Det]:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : boom")

    detector.predict = broken  # type: ignore[method-assign]
    r = api.write("POST", f"/api/key-slices/{KS}/predict")
    assert r.status_code == 503, r.text  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert body["code"] == "detector_failed" and "boom" in body["detail"]
    # Nothing was cached: the stored list is empty and the server keeps serving.
    assert stored(api) == []
    assert api.client.get("/api/health").status_code == 200
