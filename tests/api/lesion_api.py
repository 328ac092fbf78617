"""Helpers for the correction tests: the review calls of docs/api.md, a scripted detector, export parsing."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.api.conftest import Api

# The review dataset's key slices (tests/api/review_data.py).
KS_A = "000001_01_01_108.png"  # test split, two lesions (the second noisy), slices 106..110 stored
KS_B = "000001_01_01_112.png"  # test split, one lesion with real-file digits, range 110..114
KS_C = "000002_01_01_050.png"  # train split, two unlabelled lesions, age NaN, slices 49..51 stored
KS_D = "000001_02_01_020.png"  # val split, nothing stored on disk


@contextmanager
def open_api(settings: Settings, database_url: str, detector: object | None = None) -> Iterator[Api]:
    """A browser of its own (cookie jar, app instance) on the database; `detector` serves predictions."""
    with TestClient(create_app(settings, detector=detector)) as client:
        yield Api(client, database_url)


def body(response: Any, status: int = 200) -> dict[str, Any]:
    """The JSON of a response that must have this status (the message shows the body otherwise)."""
    assert response.status_code == status, (
        f"{response.status_code} (expected {status}): {response.text[:800]}"
    )
    out: dict[str, Any] = response.json()
    return out


def key_slice(api: Api, file_name: str) -> dict[str, Any]:
    """GET the key slice."""
    return body(api.client.get(f"/api/key-slices/{file_name}"))


def lesion_in(ks: dict[str, Any], lesion_id: int) -> dict[str, Any]:
    """One lesion of a KeySlice by id."""
    found = [le for le in ks["lesions"] if le["id"] == lesion_id]
    assert len(found) == 1, f"lesion {lesion_id} is not (once) in {[le['id'] for le in ks['lesions']]}"
    return found[0]


def prediction_in(ks: dict[str, Any], prediction_id: int) -> dict[str, Any]:
    """One prediction of a KeySlice by id."""
    return next(p for p in ks["predictions"] if p["id"] == prediction_id)


def csv_lesion(
    ks: dict[str, Any], original_recist: list[float] | None = None, *, noisy: bool = False
) -> dict:
    """A csv lesion of the key slice: the one with this original RECIST, or the (not) dataset-noisy one."""
    for le in ks["lesions"]:
        if le["origin"] != "csv":
            continue
        if original_recist is not None:
            if le["original"]["recist"] == original_recist:
                return le
        elif (le["flag"] is not None and le["flag"]["reason"] == "dataset") == noisy:
            return le
    raise AssertionError(f"no such csv lesion on {ks['file_name']}")


def confirm(api: Api, lesion: dict[str, Any]) -> Any:
    return api.write("POST", f"/api/lesions/{lesion['id']}/confirm", json={"version": lesion["version"]})


def flag(api: Api, lesion: dict[str, Any], reason: str = "not_a_lesion", note: str = "") -> Any:
    return api.write(
        "POST",
        f"/api/lesions/{lesion['id']}/flag",
        json={"version": lesion["version"], "reason": reason, "note": note},
    )


def unflag(api: Api, lesion: dict[str, Any]) -> Any:
    return api.write("POST", f"/api/lesions/{lesion['id']}/unflag", json={"version": lesion["version"]})


def edit(api: Api, lesion: dict[str, Any], **change: Any) -> Any:
    """PUT geometry: any of recist, box, lesion_type."""
    return api.write(
        "PUT", f"/api/lesions/{lesion['id']}/geometry", json={"version": lesion["version"], **change}
    )


def add(api: Api, file_name: str, **lesion: Any) -> Any:
    """POST a drawn lesion: recist and/or box, lesion_type, slice_index."""
    return api.write("POST", f"/api/key-slices/{file_name}/lesions", json=lesion)


def delete(api: Api, lesion: dict[str, Any]) -> Any:
    return api.write("DELETE", f"/api/lesions/{lesion['id']}?version={lesion['version']}")


def undo(api: Api, file_name: str) -> Any:
    return api.write("POST", f"/api/key-slices/{file_name}/undo")


def redo(api: Api, file_name: str) -> Any:
    return api.write("POST", f"/api/key-slices/{file_name}/redo")


def predict(api: Api, file_name: str, threshold: float = 0.05) -> dict[str, Any]:
    """POST predict; the KeySlice it answers with."""
    ks: dict[str, Any] = body(
        api.write("POST", f"/api/key-slices/{file_name}/predict?threshold={threshold}")
    )["key_slice"]
    return ks


def accept(api: Api, prediction: dict[str, Any], lesion_type: int | None = None, **extra: Any) -> Any:
    payload: dict[str, Any] = {"version": prediction["version"], **extra}
    if lesion_type is not None:
        payload["lesion_type"] = lesion_type
    return api.write("POST", f"/api/predictions/{prediction['id']}/accept", json=payload)


def reject(api: Api, prediction: dict[str, Any]) -> Any:
    return api.write(
        "POST", f"/api/predictions/{prediction['id']}/reject", json={"version": prediction["version"]}
    )


def history(api: Api, file_name: str) -> list[dict[str, Any]]:
    r = api.client.get(f"/api/key-slices/{file_name}/history")
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()
    return out


@dataclass
class Det:
    """A detection as the detector interface returns it."""

    box: tuple[float, float, float, float]
    score: float


@dataclass
class ScriptedDetector:
    """A detector finding the boxes it is given per slice (0-based app frame); it counts its calls."""

    boxes: dict[str, list[tuple[list[float], float]]] = field(default_factory=dict)
    model_version: str = "scripted-1"
    provider: str = "CPUExecutionProvider"
    synthetic: bool = True
    calls: list[str] = field(default_factory=list)

    def predict(self, file_name: str, store: Any, *, spacing_mm: Any, threshold: float = 0.05) -> list[Det]:
        self.calls.append(file_name)
        found = [Det(tuple(b), s) for b, s in self.boxes.get(file_name, [])]  # type: ignore[arg-type]
        return [d for d in found if d.score >= threshold]


# --- exports -------------------------------------------------------------------------------------------


def export_csv(admin: Api, *, state: str = "corrected", extras: int = 0, box_only: str = "nan") -> str:
    """The DL_info.csv export as text."""
    r = admin.client.get(
        "/api/exports/dl_info.csv", params={"state": state, "extras": extras, "box_only": box_only}
    )
    assert r.status_code == 200, r.text[:500]
    return r.text


def export_coco(admin: Api, *, state: str = "corrected") -> dict[str, Any]:
    r = admin.client.get("/api/exports/coco.json", params={"state": state})
    assert r.status_code == 200, r.text[:500]
    out: dict[str, Any] = json.loads(r.content)
    return out


def csv_rows(text: str) -> list[dict[str, str]]:
    """The rows of a CSV text as {header: cell text}."""
    return list(csv.DictReader(io.StringIO(text, newline="")))


def numbers(cell: str) -> list[float]:
    """A multi-value cell as the authors' readers take it: split on ',', float() each part (NaN allowed)."""
    return [float(x) for x in cell.split(",")]


def plus_one(values: list[float] | None) -> list[float] | None:
    return None if values is None else [v + 1 for v in values]


def all_nan(values: list[float]) -> bool:
    return all(math.isnan(v) for v in values)


def slice_name(ks: dict[str, Any], slice_index: int) -> str:
    """The DL_info-style File_name of a slice of the key slice's series."""
    return f"{ks['series_folder']}_{slice_index:03d}.png"


def coco_slice_name(image: dict[str, Any]) -> str:
    """`Images_png/000001_01_01/110.png` -> `000001_01_01_110.png`."""
    prefix, folder, png = image["file_name"].split("/")
    assert prefix == "Images_png", image["file_name"]
    return f"{folder}_{png}"
