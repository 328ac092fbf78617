"""The possible-missed queue: ranking, recall of hidden lesions in its top N, synth_truth.json reading."""

from __future__ import annotations

import json
from pathlib import Path

from app.detection.screening import HiddenLesion, QueueItem, hidden_recall, load_hidden_lesions, rank_queue


def test_queue_ranks_by_score_then_file_name() -> None:
    items = [
        QueueItem("b.png", (0, 0, 1, 1), 0.5),
        QueueItem("a.png", (0, 0, 1, 1), 0.5),
        QueueItem("c.png", (0, 0, 1, 1), 0.9),
    ]
    assert [q.file_name for q in rank_queue(items)] == ["c.png", "a.png", "b.png"]


def test_hidden_recall_counts_only_the_top_n_and_both_iou_levels() -> None:
    hidden = [HiddenLesion("x.png", (0, 0, 9, 9)), HiddenLesion("y.png", (0, 0, 9, 9))]
    queue = [
        QueueItem("x.png", (0, 0, 9, 9), 0.9),  # exact: IoU 1
        QueueItem("z.png", (0, 0, 9, 9), 0.8),  # another slice: no match
        # y: [0,0,9,14] vs [0,0,9,9] -> 100/150 = 0.67 but ranked third, outside the top 2
        QueueItem("y.png", (0, 0, 9, 14), 0.7),
    ]
    top2 = hidden_recall(queue, hidden)
    assert top2["top_n"] == 2 and top2["found_top_n_iou_0_3"] == 1 and top2["recall_top_n_iou_0_5"] == 0.5
    top3 = hidden_recall(queue, hidden, top_n=3)
    assert top3["found_top_n_iou_0_5"] == 2
    assert top2["ranks_iou_0_3"] == [1, 3]


def test_hidden_recall_separates_iou_0_3_from_0_5() -> None:
    # [0,0,9,9] vs [5,0,14,9]: IoU 1/3, found at 0.3 only.
    res = hidden_recall([QueueItem("x.png", (5, 0, 14, 9), 0.9)], [HiddenLesion("x.png", (0, 0, 9, 9))])
    assert (res["found_top_n_iou_0_3"], res["found_top_n_iou_0_5"]) == (1, 0)


def test_load_hidden_lesions_reads_the_generators_unannotated_list(tmp_path: Path) -> None:
    assert load_hidden_lesions(tmp_path) is None
    doc = {
        "unannotated": [
            {"lesion_id": "1", "file_name": "000001_01_01_010.png", "box": [1, 2, 3, 4]},
            {"lesion_id": "2", "file_name": "000001_01_01_011.png", "box": None},
        ]
    }
    (tmp_path / "synth_truth.json").write_text(json.dumps(doc))
    assert load_hidden_lesions(tmp_path) == [HiddenLesion("000001_01_01_010.png", (1.0, 2.0, 3.0, 4.0))]
