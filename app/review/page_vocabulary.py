"""Every domain word a page needs, assembled once from its home module for templates and the JS modules."""

from __future__ import annotations

from functools import cache
from typing import Any

from app.deeplesion.geometry import HIT_IOU
from app.deeplesion.schema import ALL_SPLITS, BOX_PADDING_PX, LESION_TYPES, SPLITS
from app.deeplesion.windowing import DEFAULT_PRESET, DETECTOR_PRESET, DETECTOR_WINDOW, DICOM_PRESET, PRESETS
from app.detection.froc import FP_RATES
from app.review import vocabulary as v
from app.review.team import rules as team

# The viewer's key for the slice's own DICOM window; the fixed presets take 1, 2, ... in PRESETS order.
DICOM_KEY = "0"


def _presets() -> list[dict[str, Any]]:
    """Window presets in menu order: the fixed ones (keys 1..n), then the slice's DICOM window."""
    fixed = [
        {"name": name, "label": name.replace("_", " "), "key": str(i), "center": c, "width": w}
        for i, (name, (c, w)) in enumerate(PRESETS.items(), start=1)
    ]
    dicom = {"name": DICOM_PRESET, "label": "DICOM", "key": DICOM_KEY, "center": None, "width": None}
    return [*fixed, dicom]


@cache
def page_vocabulary() -> dict[str, Any]:
    """The vocabulary as JSON-ready data: base.html writes it into every page as #lr-vocabulary."""
    return {
        "lesion_types": [
            {"id": t, "name": name, "colour": v.LESION_TYPE_COLOURS[t]} for t, name in LESION_TYPES.items()
        ],
        "splits": [{"id": i, "name": name} for i, name in SPLITS.items()],
        "all_splits": ALL_SPLITS,
        "presets": _presets(),
        "default_preset": DEFAULT_PRESET,
        "detector_window": {"name": DETECTOR_PRESET, "min": DETECTOR_WINDOW[0], "max": DETECTOR_WINDOW[1]},
        "origins": v.ORIGINS,
        "review_states": v.REVIEW_STATES,
        "flag_reasons": v.FLAG_REASONS,
        "all_flag_reasons": v.ALL_FLAG_REASONS,
        "note_required_reasons": list(v.NOTE_REQUIRED_REASONS),
        "note_max_chars": v.NOTE_MAX_CHARS,
        "statuses": v.STATUSES,
        "layers": v.LAYERS,
        "palette": v.PALETTE,
        "export_states": v.EXPORT_STATES,
        "box_padding_px": BOX_PADDING_PX,
        "hit_iou": HIT_IOU,
        # The FROC curve's reporting points, false positives per image.
        "froc_fp_rates": list(FP_RATES),
        "link_statuses": v.LINK_STATUSES,
        # Volume screening candidates (app.review.volume): their states and the layer they are drawn in.
        "candidate_statuses": v.CANDIDATE_STATUSES,
        "candidate_layer": v.CANDIDATE_LAYER,
        # Team review (app.review.team.rules): modes, read and adjudication states, disagreement rules.
        "team": {
            "modes": team.MODES,
            "read_statuses": team.READ_STATUSES,
            "adjudication_statuses": team.ADJUDICATION_STATUSES,
            "disagreement_kinds": team.DISAGREEMENT_KINDS,
            "long_axis_tolerance_mm": team.LONG_AXIS_TOLERANCE_MM,
            "consensus_truth": team.CONSENSUS_TRUTH,
            "reader_truth_prefix": team.READER_TRUTH_PREFIX,
        },
    }
