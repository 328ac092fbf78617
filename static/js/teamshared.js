// Shared by the team review pages: a read's marks as table rows, and the long axis rule of the server.
import { LESION_TYPES, ALL_FLAG_REASONS } from "./vocabulary.js";

export const $ = (id) => document.getElementById(id);

export function cell(text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  return td;
}

export function row(...cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(c instanceof Node ? c : cell(c));
  return tr;
}

export function fixed(v, digits = 2) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(digits);
}

// Long axis in px: RECIST's first two points, else the box's longer side less the dataset's padding.
export function longAxisPx(mark, padding) {
  const r = mark.recist;
  if (r) return Math.hypot(r[2] - r[0], r[3] - r[1]);
  const [x1, y1, x2, y2] = mark.box;
  return Math.max(0, Math.max(x2 - x1, y2 - y1) - 2 * padding);
}

export function typeName(id) { return LESION_TYPES[id] ?? String(id); }
export function flagName(reason) { return reason ? (ALL_FLAG_REASONS[reason] ?? reason) : "not noisy"; }

// A read's marks as one list: existing lesions ("#id") then added ones ("+n").
export function markRows(marks) {
  return [
    ...marks.lesions.map((m) => ({ key: `#${m.id}`, mark: m, added: false })),
    ...marks.added.map((m, i) => ({ key: `+${i + 1}`, mark: m, added: true, index: i })),
  ];
}
