"""The review vocabulary, defined once: origins, review states, flag reasons, statuses, layers, palette."""

from __future__ import annotations

# Where a lesion came from: a DL_info.csv row, drawn by a reviewer, or an accepted detector prediction.
ORIGINS: dict[str, str] = {
    "csv": "DL_info.csv",
    "drawn": "drawn by a reviewer",
    "prediction": "accepted prediction",
}
ORIGIN_CSV, ORIGIN_DRAWN, ORIGIN_PREDICTION = "csv", "drawn", "prediction"

# A lesion's review summary, derived from its independent facts (see app.review.lesion_state.review_state),
# in the order the rule tests them: a deleted lesion is only deleted, a flag outranks an edit, and so on.
REVIEW_STATES: dict[str, str] = {
    "deleted": "deleted",
    "flagged": "flagged noisy",
    "edited": "edited",
    "confirmed": "confirmed",
    "unreviewed": "unreviewed",
}

# Reasons a reviewer may give for a noisy flag; "dataset" is the flag DL_info.csv set (Possibly_noisy = 1).
FLAG_REASONS: dict[str, str] = {
    "not_a_lesion": "Not a lesion",
    "wrong_measurement": "Wrong measurement",
    "duplicate": "Duplicate",
    "other": "Other",
}
DATASET_FLAG_REASON = "dataset"
ALL_FLAG_REASONS: dict[str, str] = {**FLAG_REASONS, DATASET_FLAG_REASON: "Possibly_noisy in DL_info.csv"}
# A reason that needs a note to mean anything.
NOTE_REQUIRED_REASONS: tuple[str, ...] = ("other",)
NOTE_MAX_CHARS = 2000

# A reviewer's status of a key slice.
STATUSES: dict[str, str] = {"unreviewed": "unreviewed", "in_progress": "in progress", "done": "done"}

# Overlay layers (which one a lesion is drawn in: app.review.lesion_state.layer) and their colours,
# shared by the server's burnt-in overlays and the viewer's canvas and legend.
LAYERS: dict[str, str] = {
    "original": "original (DL_info.csv)",
    "corrected": "corrected",
    "added": "added",
    "predicted": "predicted",
}
PALETTE: dict[str, str] = {
    "original": "#ffd400",
    "corrected": "#00e5ff",
    "added": "#39ff14",
    "predicted": "#ff4fd8",
    "selected": "#ffffff",
    # A mark drawn but not yet saved (the viewer's "saving…" outline).
    "pending": "#ffffff",
    # The viewer's own measurements (ROI statistics, probes): never saved, never exported.
    "measure": "#ffa94d",
}


def palette_rgb(name: str) -> tuple[int, int, int]:
    """A PALETTE colour as an (r, g, b) triple, for drawing into images."""
    hex_colour = PALETTE[name].lstrip("#")
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (0, 2, 4))
    return r, g, b


# One colour per DL_info lesion type (app.deeplesion.schema.LESION_TYPES), distinguishable on white and dark:
# the overview's body map and histograms.
LESION_TYPE_COLOURS: dict[int, str] = {
    -1: "#9e9e9e",
    1: "#e6194b",
    2: "#f58231",
    3: "#911eb4",
    4: "#3cb44b",
    5: "#4363d8",
    6: "#bfa100",
    7: "#f032e6",
    8: "#469990",
}

# Which annotations an export or an evaluation reads.
EXPORT_STATES: dict[str, str] = {"original": "as imported", "corrected": "as reviewed"}
# What a corrected DL_info.csv does with a lesion known only by its box: NaN measurements, or leave it out.
BOX_ONLY_CHOICES: tuple[str, ...] = ("nan", "omit")

# A follow-up link (same lesion in two studies): proposed by matching, confirmed or broken by a reviewer;
# "removed" is a reviewer-added link taken back (undo). Only proposed and confirmed links join a track.
LINK_STATUSES: dict[str, str] = {
    "proposed": "proposed by matching",
    "confirmed": "confirmed by a reviewer",
    "broken": "broken by a reviewer",
    "removed": "removed",
}
LINK_ACTIVE: tuple[str, ...] = ("proposed", "confirmed")
LINK_ORIGINS: dict[str, str] = {"matched": "matching", "reviewer": "added by a reviewer"}

# A volume-screening candidate (app.review.volume): waiting for a reviewer, added as a lesion, or dismissed.
CANDIDATE_STATUSES: dict[str, str] = {
    "pending": "to review",
    "added": "added as a lesion",
    "dismissed": "dismissed",
}
CANDIDATE_PENDING = "pending"
CANDIDATE_ADDED = "added"
# The volume candidate's outline in the viewer: a detector's proposal, so the predicted colour.
CANDIDATE_LAYER = "predicted"
