"""DL_info.csv as the dataset authors' own detectors read it: 3DCE's and MULAN's loaders, rewritten here.

The point of these readers is parity: an export is only good if the code people train with loads it and
gets the lesions the app shows. So they follow the authors' parsing line by line, quirks included (cells are
split on ',' and each part goes through float() or int(); the header row is dropped by position; coordinates
are shifted by -1 because "coordinates in info file start from 1"), and never use app code.

Sources (public, rsummers11/CADLab on GitHub):
- 3DCE: lesion_detector_3DCE/rcnn/dataset/DeepLesion.py (DeepLesion.loadinfo, load_image_set_index,
  _load_annotation) and lesion_detector_3DCE/rcnn/utils/load_data.py (filter_roidb: noisy boxes removed,
  then images left without boxes).
- MULAN: MULAN_universal_lesion_analysis/maskrcnn/data/datasets/DeepLesion.py (DeepLesionDataset.loadinfo,
  load_split_index: noisy lesions left out of every split; __getitem__: age / 100, NaN or 0 -> 0.5).
Both are Python 2/3 numpy code; a cell their float() or int() cannot read raises, as it would there.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ["train", "val", "test"]


def _rows(path: Path | str) -> list[list[str]]:
    # Both loaders: csv.reader over the file, File_name's LAST '_' replaced by the path separator, then
    # `info = info[1:]` drops the header.
    info = []
    with open(path, newline="") as csvfile:
        reader = csv.reader(csvfile)
        for row in reader:
            filename = row[0]
            idx = filename.rindex("_")
            row[0] = filename[:idx] + os.sep + filename[idx + 1 :]
            info.append(row)
    return info[1:]


@dataclass
class Info3DCE:
    """What 3DCE's DeepLesion.loadinfo keeps (it comments the other columns out)."""

    filenames: np.ndarray
    slice_idx: np.ndarray
    boxes: np.ndarray
    noisy: np.ndarray
    spacing: np.ndarray
    slice_intv: np.ndarray
    train_val_test: np.ndarray


def read_dl_info_3dce(path: Path | str) -> Info3DCE:
    """3DCE's DeepLesion.loadinfo: boxes -= 1, noisy = int(cell) > 0, spacing/interval from column 13."""
    info = _rows(path)
    boxes = np.array([[float(x) for x in row[6].split(",")] for row in info])
    boxes -= 1  # coordinates in info file start from 1
    spacing3d = np.array([[float(x) for x in row[12].split(",")] for row in info])
    return Info3DCE(
        filenames=np.array([row[0] for row in info]),
        slice_idx=np.array([int(row[4]) for row in info]),
        boxes=boxes,
        noisy=np.array([int(row[10]) > 0 for row in info]),
        spacing=spacing3d[:, 0],
        slice_intv=spacing3d[:, 2],
        train_val_test=np.array([int(row[17]) for row in info]),
    )


def gt_roidb_3dce(info: Info3DCE, split: str) -> list[dict[str, Any]]:
    """3DCE's load_image_set_index, _load_annotation and filter_roidb: per image, noisy boxes dropped."""
    image_set_index = np.unique(info.filenames[info.train_val_test == SPLITS.index(split) + 1])
    roidb = []
    for filename in image_set_index:
        idx = np.where(info.filenames == filename)[0]
        i = idx[0]
        roidb.append(
            {
                "boxes": info.boxes[idx, :],
                "image": filename,
                "slice_no": info.slice_idx[i],
                "spacing": info.spacing[i],
                "slice_intv": info.slice_intv[i],
                "noisy": info.noisy[idx],
            }
        )
    filtered = []
    for r in roidb:
        boxes: np.ndarray = r["boxes"]
        r["boxes"] = boxes = boxes[r["noisy"] == 0]
        if boxes.shape[0] > 0:
            filtered.append(r)
    return filtered


@dataclass
class InfoMULAN:
    """What MULAN's DeepLesionDataset.loadinfo keeps."""

    filenames: np.ndarray
    slice_idx: np.ndarray
    d_coordinate: np.ndarray
    boxes: np.ndarray
    diameter: np.ndarray
    norm_location: np.ndarray
    noisy: np.ndarray
    spacing: np.ndarray
    slice_intv: np.ndarray
    dicom_window: np.ndarray
    gender: np.ndarray
    age: np.ndarray
    train_val_test: np.ndarray


def read_dl_info_mulan(path: Path | str) -> InfoMULAN:
    """MULAN's loadinfo: RECIST and boxes -= 1, `float(row[16])` for the age (NaN allowed, '' raises)."""
    info = _rows(path)
    d_coordinate = np.array([[float(x) for x in row[5].split(",")] for row in info])
    d_coordinate -= 1
    boxes = np.array([[float(x) for x in row[6].split(",")] for row in info])
    boxes -= 1  # coordinates in info file start from 1
    spacing3d = np.array([[float(x) for x in row[12].split(",")] for row in info])
    return InfoMULAN(
        filenames=np.array([row[0] for row in info]),
        slice_idx=np.array([int(row[4]) for row in info]),
        d_coordinate=d_coordinate,
        boxes=boxes,
        diameter=np.array([[float(x) for x in row[7].split(",")] for row in info]),
        norm_location=np.array([[float(x) for x in row[8].split(",")] for row in info]),
        noisy=np.array([int(row[10]) > 0 for row in info]),
        spacing=spacing3d[:, 0],
        slice_intv=spacing3d[:, 2],
        dicom_window=np.array([[float(x) for x in row[14].split(",")] for row in info]),
        gender=np.array([row[15] for row in info]),
        age=np.array([float(row[16]) for row in info]),  # may be NaN
        train_val_test=np.array([int(row[17]) for row in info]),
    )


def split_index_mulan(info: InfoMULAN, split: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """MULAN's load_split_index: the split's non-noisy lesions grouped by image (np.unique order)."""
    lesion_idx_list = np.where((info.train_val_test == SPLITS.index(split) + 1) & ~info.noisy)[0]
    fn_list = info.filenames[lesion_idx_list]
    fn_list_unique, inv_ind = np.unique(fn_list, return_inverse=True)
    grouped = [lesion_idx_list[inv_ind == i] for i in range(len(fn_list_unique))]
    return fn_list_unique, grouped


def mulan_age_feature(info: InfoMULAN, lesion_idx_grouped: np.ndarray) -> float:
    """MULAN's __getitem__ age input: age / 100, and 0.5 when it is NaN or 0."""
    age = info.age[lesion_idx_grouped][0] / 100
    if np.isnan(age) or age == 0:
        age = 0.5
    return float(age)
