"""The volume benchmark's mechanics on a small synthetic dataset, with a detector that sees every lesion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.deeplesion.synth import generator
from app.detection.decode import Detection
from app.detection.volume_truth import cut_box
from bench.bench_volume import compare, imported_database_at
from tests.synth_fast import empty_slices

# The sub-volume model of missed lesions leaves lesions out on stored slices that no CSV key slice shows.
MISSED_OFF_KEY = 0.5
SEED = 19
FALSE_BOX = (4.0, 4.0, 24.0, 24.0)  # a corner of the image, on every tenth slice: a false candidate


class TruthDetector:
    """Every lesion's cut on every stored slice showing it (from synth_truth.json), plus one false box."""

    model_version = "truth-1"
    provider = "truth"

    def __init__(self, truth: dict[str, Any]) -> None:
        series = {}
        for p in truth["patients"]:
            for st in p["studies"]:
                for s in st["series"]:
                    series[(p["patient_index"], st["study_index"], s["series_id"])] = s
        self.boxes: dict[str, list[Detection]] = {}
        for lesion in truth["lesions"]:
            for obs in lesion["studies"]:
                s = series.get((lesion["patient_index"], obs["study_index"], obs["series_id"]))
                for k in obs["stored_slices_showing_it"] if s else []:
                    z = s["z_first_mm"] + (k - 1) * s["slice_interval_mm"]
                    box = cut_box(obs, lesion, z, s["pixel_spacing_mm"])
                    if box is not None:
                        self.boxes.setdefault(f"{s['folder']}_{k:03d}.png", []).append(Detection(box, 0.9))

    def predict(
        self, file_name: str, store: Any, *, spacing_mm: Any, threshold: float = 0.05
    ) -> list[Detection]:
        """The lesions' boxes on this slice, and the false box on every tenth."""
        extra = [Detection(FALSE_BOX, 0.5)] if int(file_name[-7:-4]) % 10 == 0 else []
        return self.boxes.get(file_name, []) + extra


def test_volume_benchmark_counts_what_each_screen_can_find(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generator, "_render_job", empty_slices)
    data = tmp_path / "synth"
    generator.generate_dataset(
        data, patients=4, seed=SEED, progress=False, workers=1, missed_off_key=MISSED_OFF_KEY
    )
    truth = json.loads((data / "synth_truth.json").read_text())
    url = imported_database_at(data, data)
    res = compare(database_url=url, data_dir=data, detector=TruthDetector(truth))
    assert res["missed_off_key"] == MISSED_OFF_KEY
    # The check needs left-out lesions of both kinds: on a CSV key slice, and on other stored slices only.
    assert res["left_out_lesions"] > res["on_key_slices"] >= 1, res
    # A detector seeing every lesion: the volume queue finds every left-out lesion; the key-slice queue
    # only those a CSV key slice shows.
    assert res["found_anywhere"] == {"volume": res["left_out_lesions"], "key_slice": res["on_key_slices"]}
    assert res["volume"]["precision"] >= res["key_slice"]["precision"]
    assert res["ratio"] == res["volume"]["found"] / res["key_slice"]["found"]
    # The false candidates (score 0.5) rank below the lesions (0.9): at equal precision all are found.
    assert res["volume"]["found"] == res["left_out_lesions"] and res["volume"]["threshold"] == 0.9


def test_runs_on_the_missed_off_key_model_are_recorded_under_their_own_section() -> None:
    from bench.bench_volume import HEADING, heading
    from bench.common import PERFORMANCE_MD

    text = PERFORMANCE_MD.read_text()
    assert heading(None) == HEADING
    assert heading(MISSED_OFF_KEY) != HEADING
    # Each heading names a section that is already in docs/performance.md, so a run extends its own series.
    assert f"\n{heading(None)}\n" in text
    assert f"\n{heading(MISSED_OFF_KEY)}\n" in text
    assert "--missed-off-key" in heading(MISSED_OFF_KEY)
