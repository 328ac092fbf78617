// The domain words, defined once in Python (app/review/page_vocabulary.py) and written into every page by
// base.html as the JSON block #lr-vocabulary: no module types a lesion type, status, preset or colour again.

export const vocabulary = Object.freeze(JSON.parse(document.getElementById("lr-vocabulary").textContent));

// Lesion type id -> name and -> colour (ids as the API sends them; object keys are strings).
export const LESION_TYPES = Object.fromEntries(vocabulary.lesion_types.map((t) => [t.id, t.name]));
export const TYPE_COLORS = Object.fromEntries(vocabulary.lesion_types.map((t) => [t.id, t.colour]));

// Overlay colours by layer (original, corrected, added, predicted) plus selected and pending marks.
export const PALETTE = vocabulary.palette;
export const LAYERS = vocabulary.layers;

// Window presets by their key ("1".."5", "0" for the slice's DICOM window): {name, label, key, center, width}.
export const PRESETS = Object.fromEntries(vocabulary.presets.map((p) => [p.key, p]));
export const DEFAULT_PRESET = vocabulary.presets.find((p) => p.name === vocabulary.default_preset);
export const DICOM_PRESET = vocabulary.presets.find((p) => p.center === null);

// Key slice status -> label, in progress order (unreviewed, in progress, done).
export const STATUSES = vocabulary.statuses;

// Flag reason -> label, including "dataset" (the Possibly_noisy flag of DL_info.csv).
export const ALL_FLAG_REASONS = vocabulary.all_flag_reasons;

// Volume-screening candidate status -> label, and the overlay layer its box is drawn in.
export const CANDIDATE_STATUSES = vocabulary.candidate_statuses;
export const CANDIDATE_LAYER = vocabulary.candidate_layer;

// Pixels the dataset pads a lesion's box by around its RECIST end points.
export const BOX_PADDING_PX = vocabulary.box_padding_px;

// Stylesheet swatches (.sw-original, ...) read the palette through custom properties set here.
for (const [name, colour] of Object.entries(PALETTE)) {
  document.documentElement.style.setProperty(`--c-${name}`, colour);
}
