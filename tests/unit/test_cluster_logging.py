"""The Ray runner keeps Ray Data's INFO lines off the terminal, where they would interleave with progress."""

from __future__ import annotations

import io
import logging

import pytest

from app.detection.cluster import _ray


def test_ray_data_info_stays_off_the_terminal_and_warnings_still_show() -> None:
    pytest.importorskip("ray.data")
    _ray()
    # Ray's console handler writes to the stream it was built with (sys.stderr at `import ray.data`), which
    # under pytest may be an earlier test's capture: read what it writes through a stream of our own.
    console = [
        h
        for h in logging.getLogger("ray.data").handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    assert console, "Ray Data has no console handler to quieten"
    buf = io.StringIO()
    old = [h.setStream(buf) for h in console]
    try:
        log = logging.getLogger("ray.data.lesion_review_probe")
        log.info("probe-info-line")
        log.warning("probe-warning-line")
    finally:
        for h, stream in zip(console, old, strict=True):
            h.setStream(stream)
    assert "probe-warning-line" in buf.getvalue()
    assert "probe-info-line" not in buf.getvalue()
