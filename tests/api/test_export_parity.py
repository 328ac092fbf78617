"""Exports as the code people train with reads them: 3DCE and MULAN (tests/readers.py), pycocotools."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.config import Settings
from tests.api.conftest import Api
from tests.api.lesion_api import (
    KS_A,
    KS_B,
    KS_C,
    KS_D,
    ScriptedDetector,
    accept,
    add,
    body,
    confirm,
    csv_lesion,
    edit,
    export_coco,
    export_csv,
    flag,
    key_slice,
    open_api,
    predict,
    slice_name,
)
from tests.readers import gt_roidb_3dce, read_dl_info_3dce, read_dl_info_mulan, split_index_mulan

SPLITS = {1: "train", 2: "val", 3: "test"}
KEY_SLICES = (KS_A, KS_B, KS_C, KS_D)


@pytest.fixture
def reviewed(app_settings: Settings, database_url: str) -> Iterator[Api]:
    """A database after a typical review session; yields an admin to export with."""
    detector = ScriptedDetector(boxes={KS_C: [([10.0, 100.0, 40.0, 120.0], 0.8)]})
    with open_api(app_settings, database_url, detector) as anna:
        anna.login("anna")
        a = key_slice(anna, KS_A)
        # A fractional edit, a confirmation, a flag with a note, a type change on the real-file-digits row.
        body(edit(anna, csv_lesion(a), recist=[12.25, 100.5, 28.75, 100.5, 20.5, 95.25, 20.5, 105.75]))
        body(confirm(anna, csv_lesion(key_slice(anna, KS_A))))
        body(flag(anna, csv_lesion(key_slice(anna, KS_C)), "other", 'looks like "bowel", not a node'))
        body(edit(anna, csv_lesion(key_slice(anna, KS_B)), lesion_type=7))
        # Drawn lesions: on the key slice, on a context slice, box only; an accepted prediction (box only).
        body(add(anna, KS_A, recist=[90.0, 20.0, 110.0, 20.0, 100.0, 14.0, 100.0, 26.0], lesion_type=5), 201)
        context = a["key_slice_index"] + 2
        body(
            add(
                anna,
                KS_A,
                recist=[40.0, 100.0, 60.0, 100.0, 50.0, 95.0, 50.0, 105.0],
                lesion_type=4,
                slice_index=context,
            ),
            201,
        )
        body(add(anna, KS_B, box=[60.0, 90.0, 80.0, 104.0], lesion_type=3), 201)
        pred = predict(anna, KS_C)["predictions"][0]
        body(accept(anna, pred, lesion_type=6))
    with open_api(app_settings, database_url) as admin:
        yield admin.login("boss", "admin")


def _api_lesions(api: Api) -> list[dict[str, Any]]:
    """Every current lesion as the readers should see it: slice file, 0-based geometry, noisy, split, age."""
    out = []
    for name in KEY_SLICES:
        ks = key_slice(api, name)
        for le in ks["lesions"]:
            cur = le["current"]
            out.append(
                {
                    "file": slice_name(ks, cur["slice_index"]),
                    "box": cur["box"],
                    "recist": cur["recist"],
                    "noisy": le["flag"] is not None,
                    "split": ks["split"],
                    "age": ks["age"],
                    "id": le["id"],
                }
            )
    return out


def _reader_name(file_name: str) -> str:
    """How both loaders name an image: the File_name's last '_' replaced by the path separator."""
    i = file_name.rindex("_")
    return file_name[:i] + os.sep + file_name[i + 1 :]


def _key(box: Any) -> tuple[float, ...]:
    return tuple(round(float(v), 6) for v in box)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_3dce_reads_the_corrected_export_as_the_apis_lesions(reviewed: Api, tmp_path: Path) -> None:
    lesions = _api_lesions(reviewed)
    info = read_dl_info_3dce(_write(tmp_path, "DL_info.csv", export_csv(reviewed)))
    got = sorted(
        (str(f), _key(b), bool(n)) for f, b, n in zip(info.filenames, info.boxes, info.noisy, strict=True)
    )
    assert got == sorted((_reader_name(le["file"]), _key(le["box"]), le["noisy"]) for le in lesions)
    # Training and evaluation images: per split, noisy boxes dropped, images left empty dropped.
    for split in ("train", "val", "test"):
        roidb = {r["image"]: sorted(_key(b) for b in r["boxes"]) for r in gt_roidb_3dce(info, split)}
        expected: dict[str, list[tuple[float, ...]]] = {}
        for le in lesions:
            if le["split"] == split and not le["noisy"]:
                expected.setdefault(_reader_name(le["file"]), []).append(_key(le["box"]))
        assert roidb == {k: sorted(v) for k, v in expected.items()}, split


@pytest.mark.parametrize("box_only", ["nan", "omit"])
def test_mulan_reads_the_corrected_export_as_the_apis_lesions(
    reviewed: Api, tmp_path: Path, box_only: str
) -> None:
    lesions = _api_lesions(reviewed)
    if box_only == "omit":
        lesions = [le for le in lesions if le["recist"] is not None]
    info = read_dl_info_mulan(_write(tmp_path, "DL_info.csv", export_csv(reviewed, box_only=box_only)))
    assert len(info.filenames) == len(lesions)
    rows = {(str(f), _key(b)): i for i, (f, b) in enumerate(zip(info.filenames, info.boxes, strict=True))}
    assert len(rows) == len(lesions)
    for le in lesions:
        i = rows[(_reader_name(le["file"]), _key(le["box"]))]
        assert bool(info.noisy[i]) == le["noisy"]
        if le["recist"] is None:
            assert np.isnan(info.d_coordinate[i]).all() and np.isnan(info.diameter[i]).all()
        else:
            assert info.d_coordinate[i].tolist() == pytest.approx(le["recist"], abs=1e-9)
            assert not np.isnan(info.diameter[i]).any()
        age = info.age[i]
        assert (math.isnan(age) and le["age"] is None) or age == le["age"]
        assert SPLITS[int(info.train_val_test[i])] == le["split"]
    for split in ("train", "val", "test"):
        names, grouped = split_index_mulan(info, split)
        got = {str(n): sorted(_key(info.boxes[i]) for i in g) for n, g in zip(names, grouped, strict=True)}
        expected: dict[str, list[tuple[float, ...]]] = {}
        for le in lesions:
            if le["split"] == split and not le["noisy"]:
                expected.setdefault(_reader_name(le["file"]), []).append(_key(le["box"]))
        assert got == {k: sorted(v) for k, v in expected.items()}, split


def test_pycocotools_loads_the_coco_export_with_the_apis_boxes_and_recist(
    reviewed: Api, tmp_path: Path
) -> None:
    from pycocotools.coco import COCO

    lesions = _api_lesions(reviewed)
    path = _write(tmp_path, "coco.json", json.dumps(export_coco(reviewed)))
    coco = COCO(str(path))
    by_file: dict[str, list[tuple[tuple[float, ...], Any, bool]]] = {}
    for img in coco.loadImgs(coco.getImgIds()):
        folder, png = img["file_name"].split("/")[1:]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        for a in anns:
            x, y, w, h = a["bbox"]
            assert a["category_id"] in coco.getCatIds()
            recist = a["recist"]
            if recist is None:
                assert a["num_keypoints"] == 0 and a["keypoints"][2::3] == [0, 0, 0, 0]
            else:
                assert a["num_keypoints"] == 4 and a["keypoints"][2::3] == [2, 2, 2, 2]
                assert [v for i, v in enumerate(a["keypoints"]) if i % 3 != 2] == pytest.approx(recist)
            noisy = bool(a["attributes"]["possibly_noisy"])
            recist_key = None if recist is None else _key(recist)
            by_file.setdefault(f"{folder}_{png}", []).append((_key([x, y, x + w, y + h]), recist_key, noisy))
    expected: dict[str, list[tuple[tuple[float, ...], Any, bool]]] = {}
    for le in lesions:
        recist = None if le["recist"] is None else _key(le["recist"])
        expected.setdefault(le["file"], []).append((_key(le["box"]), recist, le["noisy"]))
    assert {k: sorted(v, key=repr) for k, v in by_file.items()} == {
        k: sorted(v, key=repr) for k, v in expected.items()
    }
