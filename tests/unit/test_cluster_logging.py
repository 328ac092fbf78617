"""The Ray runner keeps Ray Data's INFO lines off the terminal, where they would interleave with progress."""

from __future__ import annotations

import logging

import pytest

from app.detection.cluster import _ray


def test_ray_data_info_stays_off_stderr_and_warnings_still_show(capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray.data")
    ray = _ray()
    assert ray.data is not None
    log = logging.getLogger("ray.data.lesion_review_probe")
    capfd.readouterr()
    log.info("probe-info-line")
    log.warning("probe-warning-line")
    err = capfd.readouterr().err
    assert "probe-warning-line" in err
    assert "probe-info-line" not in err
