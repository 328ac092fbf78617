// The side panels and readouts: key-slice facts, the measurement panel (the key slice's lesions, CSV, history),
// predictions, the reader's measurements, the status bar and corner text, and the patient's thumbnails.
import { describeError, get, showError } from "../api.js";
import { boxCorners } from "../geometry.js";
import { ALL_FLAG_REASONS, DICOM_PRESET, LESION_TYPES, STATUSES, vocabulary } from "../vocabulary.js";

const REVIEW_STATES = vocabulary.review_states;

// One row per lesion, exactly the API's values: the panel shows them and the CSV download writes them.
export const PANEL_COLUMNS = [
  "lesion_id", "slice", "type", "long_mm", "short_mm", "state", "flag_reason", "flag_note", "by", "at",
];

function lastChange(lesion) {
  const candidates = [
    lesion.updated_by ? { by: lesion.updated_by, at: lesion.updated_at } : null,
    lesion.flag && lesion.flag.by ? lesion.flag : null,
    lesion.confirmed,
    lesion.created,
  ].filter((c) => c && c.at);
  candidates.sort((a, b) => String(b.at).localeCompare(String(a.at)));
  return candidates[0] || { by: null, at: null };
}

export function csvCell(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

// `app`: state, stats, root, fileName, seriesFolder, keyIndex, $, marks, view, slices, edits, select, setSlice, redraw.
export function createPanels(app) {
  const { state, marks, keyIndex, fileName, $ } = app;
  let messageTimer = null;

  function setMessage(text) {
    const el = $("info-bl");
    el.textContent = text;
    clearTimeout(messageTimer);
    messageTimer = setTimeout(() => { el.textContent = ""; }, 4000);
  }

  // Position along the series relative to the key slice, from the slice interval (Spacing_mm_px_ z).
  function slicePositionLabel() {
    const dz = state.ks && state.ks.spacing_mm ? state.ks.spacing_mm[2] : null;
    const rel = state.current - keyIndex;
    if (!dz) return rel === 0 ? "z 0" : `z ${rel > 0 ? "+" : ""}${rel} slices`;
    const mm = rel * dz;
    return `z ${mm > 0 ? "+" : ""}${mm.toFixed(1)} mm`;
  }

  function updateReadouts() {
    const { center, width } = state.window;
    $("sb-wl").textContent = `W ${Math.round(width)} / L ${Math.round(center)} (${state.windowName})${state.invert ? " inverted" : ""}`;
    const [first, last] = app.slices.sliceRange();
    const rel = state.current - keyIndex;
    const z = slicePositionLabel();
    $("sb-slice").textContent = `slice ${state.current} [${first}–${last}]${rel === 0 ? " KEY" : ` (${rel > 0 ? "+" : ""}${rel}, ${z})`}`;
    const sp = state.ks && state.ks.spacing_mm;
    $("sb-spacing").textContent = sp ? `${sp[0]} × ${sp[1]} mm/px, ${sp[2]} mm slices` : "spacing unknown";
    const turned = [state.rotation ? `${state.rotation * 90}°` : "", state.flipH ? "H flip" : "", state.flipV ? "V flip" : ""].filter(Boolean);
    $("sb-zoom").textContent = `zoom ${app.view.scale().toFixed(2)}×${turned.length ? ` · ${turned.join(" ")}` : ""}`;
    const provider = state.provider || (window.__health && window.__health.detector && window.__health.detector.provider);
    $("sb-provider").textContent = provider ? `detector ${provider}` : "no detector";
    // "study N/M": which of the patient's studies this is (DeepLesion has no study date to show instead).
    const study = state.studyOf ? ` · study ${state.studyOf}` : "";
    $("info-tl").textContent = `${app.seriesFolder}${study} · ${state.current === keyIndex ? "KEY " : ""}slice ${state.current} · ${slicePositionLabel()}`;
    $("info-tr").textContent = `W ${Math.round(width)} L ${Math.round(center)}`;
    app.root.dataset.window = `${Math.round(center)},${Math.round(width)}`;
    app.root.dataset.view = `${state.rotation},${state.flipH ? 1 : 0},${state.flipV ? 1 : 0}`;
    if (app.stats.shown) app.root.dataset.shownStatus = app.stats.shown.status;
  }

  function panelRows(ks) {
    return ks.lesions.map((lesion) => {
      const g = lesion.current;
      const d = g.diameters_mm;
      const who = lastChange(lesion);
      return {
        lesion,
        values: {
          lesion_id: lesion.id,
          slice: marks.lesionSlice(lesion),
          type: LESION_TYPES[g.lesion_type] ?? String(g.lesion_type),
          long_mm: d ? d[0] : null,
          short_mm: d ? d[1] : null,
          state: REVIEW_STATES[lesion.review] ?? lesion.review,
          flag_reason: lesion.flag ? (ALL_FLAG_REASONS[lesion.flag.reason] ?? lesion.flag.reason) : "",
          flag_note: lesion.flag ? lesion.flag.note || "" : "",
          by: who.by || "",
          at: who.at || "",
        },
      };
    });
  }

  // Pans (zoom unchanged) so that the mark's box centre is in the middle of the viewport, when the mark is not
  // wholly in view already: a mark the reader can see stays where it is.
  function centreOn(g) {
    const b = g.box;
    const rect = app.viewport.getBoundingClientRect();
    const inView = boxCorners(b).every((c) => {
      const p = app.view.toScreen(c.x, c.y);
      return p.x >= 0 && p.y >= 0 && p.x <= rect.width && p.y <= rect.height;
    });
    if (inView) return;
    app.view.pinImagePoint({ x: (b[0] + b[2]) / 2, y: (b[1] + b[3]) / 2 }, rect.left + rect.width / 2, rect.top + rect.height / 2);
    app.view.apply();
  }

  function panelItem({ lesion, values: v }) {
    const li = document.createElement("li");
    const layer = marks.layerOf(lesion);
    li.dataset.lesionId = String(lesion.id);
    for (const key of PANEL_COLUMNS) li.dataset[key.replace(/_(.)/g, (_, c) => c.toUpperCase())] = v[key] ?? "";
    li.className = `item layer-${layer}${marks.isSelected("lesion", lesion.id) ? " selected" : ""}`;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "item-button";
    button.setAttribute("aria-label", `Select lesion ${lesion.id}`);
    const size = v.long_mm === null ? marks.diametersLabel(lesion.current) : `${v.long_mm.toFixed(1)} × ${v.short_mm.toFixed(1)} mm`;
    const line1 = document.createElement("span");
    line1.className = "panel-main";
    line1.textContent = `#${lesion.id} ${v.type} · ${size} · ${v.state}` +
      `${v.flag_reason ? ` · ⚑ ${v.flag_reason}${v.flag_note ? `: ${v.flag_note}` : ""}` : ""}` +
      `${v.slice !== keyIndex ? ` · slice ${v.slice}` : ""}${lesion.prediction ? ` · AI ${lesion.prediction.score?.toFixed(2) ?? ""}` : ""}`;
    const line2 = document.createElement("span");
    line2.className = "panel-who muted small";
    line2.textContent = v.by ? `${v.by} · ${new Date(v.at).toLocaleString()}` : "as imported";
    button.append(line1, line2);
    button.addEventListener("click", () => {
      if (v.slice !== state.current) app.setSlice(v.slice);
      app.select({ kind: "lesion", id: lesion.id });
      centreOn(lesion.current);
    });
    const sw = document.createElement("span");
    sw.className = `swatch sw-${layer}`;
    li.append(sw, button);
    return li;
  }

  function updatePanels() {
    const ks = state.ks;
    if (!ks) return;
    const typeNames = [...new Set(ks.lesions.map((l) => LESION_TYPES[l.current.lesion_type]))].join(", ");
    $("ks-meta").textContent = `patient ${ks.patient_index} · study ${ks.study_index} · series ${ks.series_id} · ${ks.split} · ` +
      `${ks.gender || "?"} ${ks.age ?? "?"} y · ${ks.image_size[0]}×${ks.image_size[1]} · ${typeNames}`;
    $("status-text").textContent = STATUSES[ks.status] ?? ks.status;
    app.root.dataset.status = ks.status;

    $("lesion-list").replaceChildren(...panelRows(ks).map(panelItem));

    const predList = $("prediction-list");
    predList.replaceChildren();
    const preds = (ks.predictions || []).filter((p) => p.status === "pending");
    const shown = preds.filter((p) => p.score >= state.threshold);
    for (const p of shown) {
      const li = document.createElement("li");
      li.dataset.predictionId = String(p.id);
      li.className = `item${marks.isSelected("prediction", p.id) ? " selected" : ""}`;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "item-button";
      button.setAttribute("aria-label", `Select prediction ${p.id}`);
      button.textContent = `AI #${p.id} score ${p.score.toFixed(2)} · ${marks.lengthLabel(p.box[2] - p.box[0])} wide`;
      button.addEventListener("click", () => {
        app.setSlice(keyIndex);
        app.select({ kind: "prediction", id: p.id });
      });
      const sw = document.createElement("span");
      sw.className = "swatch sw-predicted";
      li.append(sw, button);
      predList.appendChild(li);
    }
    const hiddenCount = preds.length - shown.length;
    const decided = (ks.predictions || []).length - preds.length;
    if (hiddenCount || decided) {
      const li = document.createElement("li");
      li.className = "muted small";
      li.textContent = `${hiddenCount} below the threshold · ${decided} accepted or rejected`;
      predList.appendChild(li);
    }
    app.root.dataset.lesionCount = String(ks.lesions.length);
    app.root.dataset.pendingPredictions = String(preds.length);
    const lesion = marks.selectedLesion();
    $("delete-lesion").disabled = !(lesion && lesion.origin !== "csv");
    $("measure-lesion").disabled = !(lesion && !lesion.current.recist);
    $("lesion-type").disabled = !lesion;
    if (lesion) $("lesion-type").value = String(lesion.current.lesion_type);
    // The server refuses to confirm a lesion flagged noisy (unflag first), so the button says so up front.
    $("confirm-lesion").disabled = !lesion || lesion.flag !== null;
    $("confirm-lesion").title = lesion && lesion.flag !== null ? "Flagged noisy: unflag it first (U)" : "";
    $("flag-lesion").disabled = !lesion;
    $("unflag-lesion").disabled = !(lesion && lesion.flag);
    $("accept-prediction").disabled = !marks.selectedPrediction();
    $("reject-prediction").disabled = !marks.selectedPrediction();
  }

  // The panel's rows as CSV, made in the browser: what the reader sees is what the file holds.
  function downloadPanelCsv() {
    if (!state.ks) return;
    const lines = [["file_name", ...PANEL_COLUMNS].join(",")];
    for (const { values } of panelRows(state.ks)) lines.push([fileName, ...PANEL_COLUMNS.map((k) => values[k])].map(csvCell).join(","));
    const blob = new Blob([`${lines.join("\n")}\n`], { type: "text/csv" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${fileName.slice(0, -4)}_marks.csv`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  }

  // The key slice's audit trail, newest first: who did what to which lesion, and when.
  async function showHistory() {
    const body = $("history-rows");
    body.replaceChildren();
    try {
      const entries = await get(app.edits.ksPath("/history"));
      for (const e of [...entries].reverse()) {
        const tr = document.createElement("tr");
        tr.dataset.entryId = String(e.id);
        for (const text of [e.at ? new Date(e.at).toLocaleString() : "–", e.user || "–", e.action.replace(/_/g, " "),
          e.lesion_id !== null ? `#${e.lesion_id}` : e.prediction_id !== null ? `AI #${e.prediction_id}` : "key slice"]) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.appendChild(td);
        }
        body.appendChild(tr);
      }
      $("history-empty").hidden = entries.length > 0;
      $("history-dialog").showModal();
    } catch (err) {
      showError(`Could not load the history: ${describeError(err)}`, showHistory);
    }
  }

  function updateMeasures() {
    const list = $("measure-list");
    list.replaceChildren();
    for (const m of state.measures) {
      const li = document.createElement("li");
      li.className = "item";
      li.dataset.measureId = String(m.id);
      const v = marks.measureValues(m);
      if (v && m.kind !== "probe") {
        li.dataset.mean = String(v.mean);
        li.dataset.sd = String(v.sd);
        li.dataset.min = String(v.min);
        li.dataset.max = String(v.max);
        li.dataset.n = String(v.n);
        li.dataset.area = String(v.areaMm2);
      }
      const text = document.createElement("span");
      text.textContent = `${m.kind} · slice ${m.slice} · ${marks.measureLabel(m)}`;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "✕";
      remove.setAttribute("aria-label", `Remove measurement ${m.id}`);
      remove.addEventListener("click", () => {
        marks.removeMeasure(m.id);
        updateMeasures();
        app.redraw();
      });
      li.append(text, remove);
      list.appendChild(li);
    }
    $("measures").hidden = !state.measures.length;
  }

  // Thumbnails of the patient's other key slices as the work list knows them (GET /api/key-slices?patient=),
  // each the slice's PNG in its DICOM window scaled down by CSS, linking to its viewer. A key image that is
  // not on disk gets a label, never a request.
  async function loadThumbnails(ks) {
    const list = $("thumbs");
    let page;
    try {
      page = await get(`/api/key-slices?patient=${ks.patient_index}&sort=file_name&page_size=500`);
    } catch (err) {
      $("thumbs-note").textContent = `Could not list the patient's key slices: ${describeError(err)}`;
      return;
    }
    const items = page.items;
    const studies = [...new Set(items.map((i) => i.study_index))].sort((a, b) => a - b);
    // DL_info.csv numbers a patient's studies but gives no date: the order is all the data says.
    $("study-of").textContent = `study ${ks.study_index} of the patient's ${studies.length} in the work list` +
      " (DeepLesion has no study date)";
    state.studyOf = `${ks.study_index}/${studies.length}`;
    app.root.dataset.studyOf = state.studyOf;
    updateReadouts();
    const others = items.filter((i) => i.file_name !== fileName);
    list.replaceChildren();
    for (const item of others) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `/viewer/${encodeURIComponent(item.file_name)}${location.search}`;
      a.className = "thumb";
      a.dataset.fileName = item.file_name;
      a.title = `${item.file_name}: ${item.lesion_count} lesion(s), ${item.max_size_mm} mm`;
      if (item.image_on_disk === false) {
        const span = document.createElement("span");
        span.className = "thumb-missing";
        span.textContent = "not on disk";
        a.appendChild(span);
      } else {
        const img = document.createElement("img");
        img.loading = "lazy";
        img.alt = item.file_name;
        img.src = `/api/slices/${encodeURIComponent(item.file_name.slice(0, -4))}.png?preset=${encodeURIComponent(DICOM_PRESET.name)}`;
        a.appendChild(img);
      }
      const caption = document.createElement("span");
      caption.className = "thumb-caption small";
      caption.textContent = `study ${item.study_index}\nseries ${item.series_id} · ${item.key_slice_index}`;
      a.appendChild(caption);
      li.appendChild(a);
      list.appendChild(li);
    }
    $("thumbs-note").textContent = !others.length ? "No other key slice of this patient in the work list."
      : page.total > items.length ? `The first ${items.length} of the patient's ${page.total} key slices.` : "";
    app.root.dataset.thumbs = String(others.length);
  }

  return { setMessage, updateReadouts, updatePanels, updateMeasures, downloadPanelCsv, showHistory, loadThumbnails };
}
