"""The one RenderingParams dependency: how a slice is windowed and drawn, validated once per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Query

from app.deeplesion.windowing import MAX_WIDTH, MIN_WIDTH, PRESETS, SPECIAL_PRESETS, Window, resolve_window

# Only used to check a request's combination of parameters before the slice's own window is known.
_PROBE_DICOM_WINDOW = (-160.0, 240.0)

PRESET_NAMES: tuple[str, ...] = (*PRESETS, *SPECIAL_PRESETS)


@dataclass(frozen=True)
class RenderingParams:
    """Window (preset | centre+width | min+max) and the overlay flag of one image request."""

    preset: str | None = None
    center: float | None = None
    width: float | None = None
    lo: float | None = None
    hi: float | None = None
    overlay: bool = False

    def window(self, dicom_window: tuple[float, float] | None) -> Window:
        """The display window for a slice whose DICOM window is `dicom_window` (None when unknown)."""
        return resolve_window(self.preset, self.center, self.width, self.lo, self.hi, dicom_window)


async def rendering_params(
    preset: Annotated[
        str | None,
        Query(description=f"Window preset: {', '.join(PRESET_NAMES)}.", max_length=32),
    ] = None,
    center: Annotated[float | None, Query(description="Window centre in HU (with width).")] = None,
    width: Annotated[
        float | None,
        Query(
            ge=MIN_WIDTH,
            le=MAX_WIDTH,
            description=f"Window width in HU, {MIN_WIDTH:g}..{MAX_WIDTH:g} (with center).",
        ),
    ] = None,
    min: Annotated[float | None, Query(description="Lowest HU shown black (with max).")] = None,  # noqa: A002
    max: Annotated[float | None, Query(description="Highest HU shown white (with min).")] = None,  # noqa: A002
    overlay: Annotated[bool, Query(description="Burn in the key slice's current lesions.")] = False,
) -> RenderingParams:
    """Parse and validate the window query parameters; InvalidWindowError (422) on a bad combination."""
    params = RenderingParams(preset=preset, center=center, width=width, lo=min, hi=max, overlay=overlay)
    # Resolving once against a placeholder window rejects bad combinations before any file is read.
    params.window(_PROBE_DICOM_WINDOW)
    return params
