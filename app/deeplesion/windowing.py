"""HU windowing: presets, a validated Window, a reference formula and a fast lookup-table path."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from app.deeplesion.errors import InvalidWindowError

# Centre / width in HU, in the viewer's menu order (keys 1..5); the OHIF defaults.
PRESETS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "liver": (90.0, 150.0),
    "bone": (480.0, 2500.0),
    "brain": (40.0, 80.0),
}
# The published detectors' single input window, as min / max HU.
DETECTOR_WINDOW: tuple[float, float] = (-1024.0, 3071.0)
DEFAULT_PRESET = "soft_tissue"
# Presets that are not fixed numbers: the slice's own DICOM window and the detector window.
DICOM_PRESET, DETECTOR_PRESET = "dicom", "detector"
SPECIAL_PRESETS: tuple[str, ...] = (DICOM_PRESET, DETECTOR_PRESET)
MIN_WIDTH = 1.0
MAX_WIDTH = 65535.0


@dataclass(frozen=True)
class Window:
    """A display window in HU: `center` and `width`, so that [lo, hi] maps to 0..255."""

    center: float
    width: float

    def __post_init__(self) -> None:
        if not (isinstance(self.center, int | float) and isinstance(self.width, int | float)):
            raise InvalidWindowError("window centre and width must be numbers")
        if not (math.isfinite(self.center) and math.isfinite(self.width)):
            raise InvalidWindowError(
                f"window centre and width must be finite, got {self.center}/{self.width}"
            )
        if not (MIN_WIDTH <= self.width <= MAX_WIDTH):
            raise InvalidWindowError(
                f"window width must be between {MIN_WIDTH:g} and {MAX_WIDTH:g} HU, got {self.width:g}"
            )
        if abs(self.center) > 2 * MAX_WIDTH:
            raise InvalidWindowError(f"window centre {self.center:g} HU is out of range")

    @classmethod
    def from_min_max(cls, lo: float, hi: float) -> Window:
        """The window spanning [lo, hi] HU."""
        lo_f, hi_f = float(lo), float(hi)
        if not (math.isfinite(lo_f) and math.isfinite(hi_f)):
            raise InvalidWindowError(f"window min and max must be finite, got {lo}/{hi}")
        if hi_f <= lo_f:
            raise InvalidWindowError(f"window max must be greater than min, got min={lo_f:g} max={hi_f:g}")
        return cls(center=(lo_f + hi_f) / 2.0, width=hi_f - lo_f)

    @classmethod
    def preset(cls, name: str) -> Window:
        """A fixed preset by name (see PRESETS, plus 'detector')."""
        if name == DETECTOR_PRESET:
            return cls.from_min_max(*DETECTOR_WINDOW)
        if name not in PRESETS:
            raise InvalidWindowError(
                f"unknown window preset {name!r}; expected one of {', '.join([*PRESETS, *SPECIAL_PRESETS])}"
            )
        center, width = PRESETS[name]
        return cls(center=center, width=width)

    @property
    def lo(self) -> float:
        """Lowest HU shown (maps to 0)."""
        return self.center - self.width / 2.0

    @property
    def hi(self) -> float:
        """Highest HU shown (maps to 255)."""
        return self.center + self.width / 2.0


def window_reference(hu: npt.ArrayLike, window: Window) -> npt.NDArray[np.uint8]:
    """The windowing rule: clip(floor((hu - lo) / (hi - lo) * 255 + 0.5), 0, 255) in float64 (half up)."""
    values = np.asarray(hu, dtype=np.float64)
    # The browser's LUT (static/js/lut.js windowGrey) repeats these float64 steps in this order, so every
    # int16 HU gets the same grey on both sides (tests/e2e/test_parity.py); floor(x + 0.5) rounds halves up,
    # unlike np.rint's banker's rounding, and unlike truncation.
    scaled = (values - window.lo) / (window.hi - window.lo) * 255.0
    return np.clip(np.floor(scaled + 0.5), 0.0, 255.0).astype(np.uint8)


@lru_cache(maxsize=64)
def _lut(center: float, width: float) -> npt.NDArray[np.uint8]:
    """Lookup table over all 65536 int16 values, indexed by the value's uint16 bit pattern."""
    every_hu = np.arange(65536, dtype=np.uint16).view(np.int16)
    table = window_reference(every_hu, Window(center, width))
    table.setflags(write=False)
    return table


def apply_window(hu: npt.ArrayLike, window: Window) -> npt.NDArray[np.uint8]:
    """Window an int16 HU array to uint8 through a cached lookup table (same result as window_reference)."""
    arr = np.asarray(hu)
    if arr.dtype != np.int16:
        if arr.size and (arr.min() < -32768 or arr.max() > 32767):
            raise InvalidWindowError("apply_window needs HU values in the int16 range")
        arr = arr.astype(np.int16)
    table = _lut(float(window.center), float(window.width))
    # ndarray.take is about twice as fast as fancy indexing for this 1-D table lookup.
    return table.take(arr.view(np.uint16))


def _number(name: str, value: float | None) -> float | None:
    """A request parameter as float, refusing NaN and infinities."""
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InvalidWindowError(f"window {name} must be a number, got {value!r}") from None
    if not math.isfinite(f):
        raise InvalidWindowError(f"window {name} must be finite, got {value!r}")
    return f


def resolve_window(
    preset: str | None = None,
    center: float | None = None,
    width: float | None = None,
    lo: float | None = None,
    hi: float | None = None,
    dicom_window: Sequence[float] | None = None,
) -> Window:
    """Request parameters (preset, centre+width or min+max) -> Window; default DICOM, else soft tissue."""
    c, w = _number("center", center), _number("width", width)
    lo_f, hi_f = _number("min", lo), _number("max", hi)
    has_cw = c is not None or w is not None
    has_mm = lo_f is not None or hi_f is not None
    options = (("preset", preset is not None), ("center/width", has_cw), ("min/max", has_mm))
    given = [name for name, used in options if used]
    if len(given) > 1:
        raise InvalidWindowError(
            f"give only one of preset, center+width or min+max; got {' and '.join(given)}"
        )
    if has_cw:
        if c is None or w is None:
            raise InvalidWindowError("center and width must be given together")
        return Window(c, w)
    if has_mm:
        if lo_f is None or hi_f is None:
            raise InvalidWindowError("min and max must be given together")
        return Window.from_min_max(lo_f, hi_f)
    if preset == DICOM_PRESET:
        if dicom_window is None:
            raise InvalidWindowError("this slice has no DICOM window; choose another preset")
        return _dicom(dicom_window)
    if preset is not None:
        return Window.preset(preset)
    if dicom_window is not None:
        try:
            return _dicom(dicom_window)
        except InvalidWindowError:
            pass  # a malformed DICOM window in the CSV must not stop the image from showing
    return Window.preset(DEFAULT_PRESET)


def _dicom(dicom_window: Sequence[float]) -> Window:
    """The window from a DL_info DICOM_windows cell (min, max)."""
    if len(dicom_window) != 2:
        raise InvalidWindowError(f"DICOM window must be 2 numbers (min, max), got {len(dicom_window)}")
    return Window.from_min_max(dicom_window[0], dicom_window[1])
