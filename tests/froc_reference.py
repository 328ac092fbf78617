"""The dataset authors' FROC, reimplemented from their code for the parity test (never used by the app).

3DCE: rsummers11/CADLab lesion_detector_3DCE/rcnn/utils/evaluation.py (IOU, FROC, sens_at_FP).
MULAN: rsummers11/CADLab MULAN_universal_lesion_analysis/maskrcnn/data/datasets/evaluation/DeepLesion/
detection_eval.py (IOU, FROC, sens_at_FP) and DL_eval.py (eval_DL_detection: slices in sorted file-name
order), with the ground truth of maskrcnn/data/datasets/DeepLesion.py (load_split_index: only lesions with
Possibly_noisy = 0, grouped by file name with np.unique, so a slice without such a lesion is never loaded;
loadinfo: `boxes -= 1`, done here by the caller, the app's boxes being 0-based already).
Kept as written, tabs aside. Two changes, both needed to run it at all on today's numpy: `argsort(...,
kind="stable")` (their default quicksort leaves tied scores in an unspecified order, so no test could pin
it) and, in 3DCE, `img_idxs.astype(int)` as MULAN has it (3DCE's hstack turns float when a slice has no box).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import interpolate

from app.detection.froc import ImageCase


def authors_inputs(cases: Sequence[ImageCase]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """boxes_all (rows x1,y1,x2,y2,score) and gts_all as MULAN's loader and eval_DL_detection build them."""
    clean = {c.key: [g.box for g in c.lesions if not g.noisy] for c in cases}
    fn_list = np.array([c.key for c in cases for _ in clean[c.key]])
    fns = list(np.unique(fn_list)) if len(fn_list) else []
    by_key = {c.key: c for c in cases}
    boxes_all = []
    gts_all = []
    for fn in fns:
        c = by_key[str(fn)]
        b = np.asarray(c.boxes, dtype=float).reshape(-1, 4)
        s = np.asarray(c.scores, dtype=float).reshape(-1, 1)
        boxes_all.append(np.hstack((b, s)))
        gts_all.append(np.array(clean[str(fn)], dtype=float).reshape(-1, 4))
    return boxes_all, gts_all


def IOU(box1: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """compute overlaps over intersection"""
    ixmin = np.maximum(gts[:, 0], box1[0])
    iymin = np.maximum(gts[:, 1], box1[1])
    ixmax = np.minimum(gts[:, 2], box1[2])
    iymax = np.minimum(gts[:, 3], box1[3])
    iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
    ih = np.maximum(iymax - iymin + 1.0, 0.0)
    inters = iw * ih
    uni = (
        (box1[2] - box1[0] + 1.0) * (box1[3] - box1[1] + 1.0)
        + (gts[:, 2] - gts[:, 0] + 1.0) * (gts[:, 3] - gts[:, 1] + 1.0)
        - inters
    )
    overlaps = inters / uni
    return overlaps


def FROC_3dce(boxes_all, gts_all, iou_th):  # type: ignore[no-untyped-def]
    """3DCE evaluation.py FROC."""
    nImg = len(boxes_all)
    img_idxs = np.hstack([[i] * len(boxes_all[i]) for i in range(nImg)]).astype(int)
    boxes_cat = np.vstack(boxes_all)
    scores = boxes_cat[:, -1]
    ord = np.argsort(scores, kind="stable")[::-1]
    boxes_cat = boxes_cat[ord, :4]
    img_idxs = img_idxs[ord]

    hits = [np.zeros((len(gts),), dtype=bool) for gts in gts_all]
    nHits = 0
    nMiss = 0
    tps = []
    fps = []
    for i in range(len(boxes_cat)):
        overlaps = IOU(boxes_cat[i, :], gts_all[img_idxs[i]])
        if overlaps.max() < iou_th:
            nMiss += 1
        else:
            for j in range(len(overlaps)):
                if overlaps[j] >= iou_th and not hits[img_idxs[i]][j]:
                    hits[img_idxs[i]][j] = True
                    nHits += 1

        tps.append(nHits)
        fps.append(nMiss)

    nGt = len(np.vstack(gts_all))
    sens = np.array(tps, dtype=float) / nGt
    fp_per_img = np.array(fps, dtype=float) / nImg

    return sens, fp_per_img


def sens_at_FP_3dce(boxes_all, gts_all, avgFP, iou_th):  # type: ignore[no-untyped-def]
    """3DCE evaluation.py sens_at_FP."""
    sens, fp_per_img = FROC_3dce(boxes_all, gts_all, iou_th)
    f = interpolate.interp1d(fp_per_img, sens, fill_value="extrapolate")
    res = f(np.array(avgFP))
    return res


def FROC_mulan(boxes_all, gts_all, iou_th):  # type: ignore[no-untyped-def]
    """MULAN detection_eval.py FROC."""
    nImg = len(boxes_all)
    img_idxs = np.hstack([[i] * len(boxes_all[i]) for i in range(nImg)]).astype(int)
    boxes_cat = np.vstack(boxes_all)
    scores = boxes_cat[:, -1]
    ord = np.argsort(scores, kind="stable")[::-1]
    boxes_cat = boxes_cat[ord, :4]
    img_idxs = img_idxs[ord]

    hits = [np.zeros((len(gts),), dtype=bool) for gts in gts_all]
    nHits = 0
    nMiss = 0
    tps = []
    fps = []
    for i in range(len(boxes_cat)):
        overlaps = IOU(boxes_cat[i, :], gts_all[img_idxs[i]])
        if len(overlaps) == 0 or overlaps.max() < iou_th:
            nMiss += 1
        else:
            for j in range(len(overlaps)):
                if overlaps[j] >= iou_th and not hits[img_idxs[i]][j]:
                    hits[img_idxs[i]][j] = True
                    nHits += 1

        tps.append(nHits)
        fps.append(nMiss)

    nGt = len(np.vstack(gts_all))
    sens = np.array(tps, dtype=float) / nGt
    fp_per_img = np.array(fps, dtype=float) / nImg

    return sens, fp_per_img


def sens_at_FP_mulan(boxes_all, gts_all, avgFP, iou_th):  # type: ignore[no-untyped-def]
    """MULAN detection_eval.py sens_at_FP."""
    sens, fp_per_img = FROC_mulan(boxes_all, gts_all, iou_th)
    avgFP_in = [a for a in avgFP if a <= fp_per_img[-1]]
    avgFP_out = [a for a in avgFP if a > fp_per_img[-1]]
    f = interpolate.interp1d(fp_per_img, sens)
    res = np.hstack([f(np.array(avgFP_in)), np.ones((len(avgFP_out),)) * sens[-1]])
    return res
