"""The vocabulary: one home per word, handed to the pages as data, and the overlay's layer colours."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from app.deeplesion.schema import BOX_PADDING_PX, LESION_TYPES, SPLITS
from app.deeplesion.windowing import PRESETS
from app.detection.froc import FP_RATES
from app.review.overlay import overlay_marks
from app.review.page_vocabulary import page_vocabulary
from app.review.summary import MATCH_IOU
from app.review.vocabulary import FLAG_REASONS, LESION_TYPE_COLOURS, PALETTE, STATUSES, palette_rgb

ROOT = Path(__file__).resolve().parents[2]
# What the browser gets: every JS module, stylesheet and template.
FRONT_END = sorted(
    p
    for folder in ("static", "templates")
    for p in (ROOT / folder).rglob("*")
    if p.suffix in (".js", ".css", ".html")
)


def test_page_vocabulary_is_json_and_takes_every_word_from_its_home() -> None:
    vocab = json.loads(json.dumps(page_vocabulary()))
    assert [(t["id"], t["name"]) for t in vocab["lesion_types"]] == list(LESION_TYPES.items())
    assert [t["colour"] for t in vocab["lesion_types"]] == [LESION_TYPE_COLOURS[t] for t in LESION_TYPES]
    assert [s["name"] for s in vocab["splits"]] == list(SPLITS.values())
    fixed = [p for p in vocab["presets"] if p["center"] is not None]
    assert [(p["name"], (p["center"], p["width"])) for p in fixed] == list(PRESETS.items())
    keys = [p["key"] for p in vocab["presets"]]
    assert len(set(keys)) == len(keys) and all(len(k) == 1 for k in keys)
    assert vocab["flag_reasons"] == FLAG_REASONS and vocab["statuses"] == STATUSES
    assert vocab["palette"] == PALETTE
    assert vocab["hit_iou"] == MATCH_IOU and vocab["box_padding_px"] == BOX_PADDING_PX
    assert vocab["froc_fp_rates"] == list(FP_RATES)


def test_every_lesion_type_has_one_colour() -> None:
    assert set(LESION_TYPE_COLOURS) == set(LESION_TYPES)
    assert len(set(LESION_TYPE_COLOURS.values())) == len(LESION_TYPES)


def test_palette_rgb_reads_the_hex_colour() -> None:
    for name, hex_colour in PALETTE.items():
        assert "#" + "".join(f"{c:02x}" for c in palette_rgb(name)) == hex_colour.lower()


def _words_typed_again() -> list[str]:
    """Vocabulary values that would only appear in the front end if someone typed them again."""
    colours = [*PALETTE.values(), *LESION_TYPE_COLOURS.values()]
    # Type names that are not also a preset or a plain English word a page might use ("lung", "bone", ...).
    type_names = [name for name in LESION_TYPES.values() if name.replace(" ", "_") not in PRESETS]
    reasons = [r for r in FLAG_REASONS if "_" in r]  # "other" and "duplicate" are ordinary words too
    return [*{c.lower() for c in colours}, *reasons, *type_names]


@pytest.mark.parametrize("path", FRONT_END, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_front_end_file_types_a_vocabulary_word_again(path: Path) -> None:
    text = path.read_text(encoding="utf-8").lower()
    copies = [w for w in _words_typed_again() if re.search(rf"(?<![\w#-]){re.escape(w)}(?![\w-])", text)]
    assert not copies, f"{path.name} repeats {copies}: take them from the vocabulary block instead"
    # Split names as option values or as a list of names.
    assert not re.search(r'value="(train|val|test)"', text), path.name


def _lesion(lesion_id: int, layer: str, **over: Any) -> dict[str, Any]:
    recist = [1.0, 2.0, 9.0, 2.0, 5.0, 0.0, 5.0, 4.0]
    current = {"recist": recist, "box": [1.0, 0.0, 9.0, 4.0], "slice_index": 7, "lesion_type": 4}
    return {"id": lesion_id, "review": "unreviewed", "layer": layer, "current": current, "flag": None, **over}


def test_overlay_marks_take_their_colour_from_the_palette_by_layer_and_skip_deleted() -> None:
    lesions = [
        _lesion(1, "original"),
        _lesion(2, "corrected", flag={"reason": "other", "note": "x"}),
        _lesion(3, "added"),
        _lesion(4, "original", review="deleted"),
    ]
    marks = overlay_marks(lesions)
    assert [m.color for m in marks] == [palette_rgb(k) for k in ("original", "corrected", "added")]
    assert [m.label for m in marks] == ["#1", "#2 flagged", "#3"]
