"""A key slice's lesions as burnt-in overlay marks, each in its layer's PALETTE colour (the viewer's too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.deeplesion.render import OverlayMark
from app.review.vocabulary import palette_rgb


def overlay_marks(lesions: list[Mapping[str, Any]]) -> list[OverlayMark]:
    """API lesions (not deleted) as marks in the colour of the layer the server gave them, labelled by id."""
    marks = []
    for lesion in lesions:
        if lesion.get("review") == "deleted":
            continue
        current = lesion.get("current") or {}
        recist, box = current.get("recist"), current.get("box")
        marks.append(
            OverlayMark(
                recist=tuple(recist) if recist else None,
                box=tuple(box) if box else None,
                label=f"#{lesion['id']}" + (" flagged" if lesion.get("flag") else ""),
                # app.review.lesion_state.layer decided it; the viewer's canvas and legend use the same key.
                color=palette_rgb(lesion["layer"]),
            )
        )
    return marks
