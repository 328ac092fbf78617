// Work list: the API's filters, sortable columns, pagination, progress and keyboard navigation.
import { describeError, get, hideError, initShell, isTypingTarget, showError, wireKeymap } from "./api.js";
import { LESION_TYPES, STATUSES } from "./vocabulary.js";

const form = document.getElementById("filters");
const body = document.getElementById("worklist-body");
const $ = (id) => document.getElementById(id);
const FILTER_KEYS = ["split", "status", "reviewer", "patient", "min_size_mm", "max_size_mm", "noisy", "has_predictions", "possible_missed", "on_disk", "page_size"];

const state = { params: new URLSearchParams(location.search), items: [], selected: 0, total: 0, page: 1, pageSize: 50 };

function fillForm() {
  const p = state.params;
  for (const key of FILTER_KEYS) {
    const el = form.elements[key];
    if (!el) continue;
    if (el.type === "checkbox") el.checked = p.get(key) === "true";
    else el.value = p.get(key) ?? (key === "page_size" ? "50" : "");
  }
  const types = new Set(p.getAll("lesion_type"));
  const boxes = [...form.querySelectorAll("input[name='lesion_type']")];
  for (const box of boxes) box.checked = types.has(box.value);
  updateTypeSummary();
  for (const b of document.querySelectorAll(".sort")) {
    const active = (p.get("sort") || "file_name") === b.dataset.sort;
    if (active) b.setAttribute("aria-sort", p.get("order") === "desc" ? "descending" : "ascending");
    else b.removeAttribute("aria-sort");
  }
}

function readForm() {
  const p = new URLSearchParams();
  for (const key of FILTER_KEYS) {
    const el = form.elements[key];
    if (!el) continue;
    const value = el.type === "checkbox" ? (el.checked ? "true" : "") : el.value.trim();
    if (value !== "" && !(key === "page_size" && value === "50")) p.set(key, value);
  }
  for (const box of form.querySelectorAll("input[name='lesion_type']:checked")) p.append("lesion_type", box.value);
  for (const key of ["sort", "order"]) if (state.params.get(key)) p.set(key, state.params.get(key));
  return p;
}

function updateTypeSummary() {
  const names = [...form.querySelectorAll("input[name='lesion_type']:checked")].map((b) => b.parentElement.textContent.trim());
  $("type-summary").textContent = names.length ? names.join(", ") : "any";
}
form.addEventListener("change", (e) => {
  if (e.target.name === "lesion_type") updateTypeSummary();
});

// The URL holds the filters, so reload, back and the viewer's N/P queue all see the same list.
function navigate(params, { replace = false } = {}) {
  state.params = params;
  const url = `/${params.toString() ? "?" + params.toString() : ""}`;
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  load();
}

function queueQuery() {
  const p = new URLSearchParams(state.params);
  p.delete("page");
  p.delete("page_size");
  return p.toString() ? `?${p.toString()}` : "";
}

let loadSeq = 0;

async function load() {
  fillForm();
  const seq = ++loadSeq;
  const query = state.params.toString();
  try {
    const data = await get(`/api/key-slices?${query}`);
    // A slower answer to an older filter must not overwrite the newer list.
    if (seq !== loadSeq) return;
    state.items = data.items;
    state.total = data.total;
    state.page = data.page;
    state.pageSize = data.page_size;
    const wanted = state.params.get("select");
    state.selected = wanted === "last" ? data.items.length - 1 : 0;
    if (state.selected < 0) state.selected = 0;
    // A later success ends an earlier failure: the banner must not outlive the problem it reported.
    hideError();
    renderCounts(data.counts);
    renderRows();
    // The download takes the same filters (all pages, file order): what the list shows, as DL_info.csv rows.
    const csv = new URLSearchParams(queueQuery());
    csv.delete("select");
    $("download-worklist-csv").href = `/api/exports/worklist.csv${csv.toString() ? `?${csv}` : ""}`;
    document.body.dataset.listQuery = query;
  } catch (err) {
    showError(`Could not load the work list: ${describeError(err)}`, load);
  }
}

function renderCounts(c) {
  const total = c.total || 0;
  const pct = (n) => (total ? (100 * n) / total : 0);
  $("bar-done").style.width = `${pct(c.done)}%`;
  $("bar-progress").style.width = `${pct(c.in_progress)}%`;
  $("progress").setAttribute("aria-valuenow", String(Math.round(pct(c.done))));
  // Most advanced status first: "3 done · 1 in progress · 6 unreviewed".
  const byStatus = Object.keys(STATUSES).reverse().map((s) => `${c[s]} ${STATUSES[s]}`);
  $("counts").textContent = `${byStatus.join(" · ")} · ${total} key slices (${Math.round(pct(c.done))}% done)`;
  const pages = Math.max(1, Math.ceil(state.total / state.pageSize));
  $("page-info").textContent = `page ${state.page} of ${pages} · ${state.total} matching`;
  $("page-prev").disabled = state.page <= 1;
  $("page-next").disabled = state.page >= pages;
}

function cell(tr, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.appendChild(content);
  else td.textContent = content;
  tr.appendChild(td);
  return td;
}

function badge(text, cls, title) {
  const span = document.createElement("span");
  span.className = `badge ${cls}`;
  span.textContent = text;
  span.title = title;
  return span;
}

function renderRows() {
  body.replaceChildren();
  $("worklist-empty").hidden = state.items.length > 0;
  state.items.forEach((item, i) => {
    const tr = document.createElement("tr");
    tr.dataset.fileName = item.file_name;
    tr.dataset.index = String(i);
    const link = document.createElement("a");
    link.href = viewerUrl(item.file_name);
    link.textContent = item.file_name;
    link.tabIndex = -1;
    const first = cell(tr, link);
    if (item.noisy) first.append(" ", badge("noisy", "badge-noisy", "has an originally-noisy or flagged lesion"));
    if (item.image_on_disk === false) {
      tr.dataset.imageMissing = "1";
      first.append(" ", badge("image not on disk", "badge-missing", "the key slice's PNG is not stored: it can be reviewed from its marks only"));
    }
    cell(tr, String(item.patient_index));
    cell(tr, item.split);
    cell(tr, String(item.lesion_count));
    cell(tr, item.lesion_types.map((t) => LESION_TYPES[t] ?? t).join(", "));
    cell(tr, item.max_size_mm == null ? "–" : item.max_size_mm.toFixed(1));
    const status = cell(tr, STATUSES[item.status] ?? item.status);
    status.className = `status-${item.status}`;
    const preds = document.createElement("span");
    preds.textContent = item.prediction_count ? String(item.prediction_count) : "–";
    const pcell = cell(tr, preds);
    if (item.unreviewed_predictions > 0) {
      pcell.append(" ", badge(`${item.unreviewed_predictions} to review`, "badge-pred", "predictions nobody has accepted or rejected yet"));
    }
    const mcell = cell(tr, item.missed_score == null ? "–" : item.missed_score.toFixed(2));
    if (item.missed_score != null) mcell.prepend(badge("possible missed", "badge-missed", "the detector found something the annotations lack"), " ");
    tr.addEventListener("click", () => { state.selected = i; highlight(); });
    tr.addEventListener("dblclick", () => open(i));
    body.appendChild(tr);
  });
  highlight();
}

function viewerUrl(name) {
  return `/viewer/${encodeURIComponent(name)}${queueQuery()}`;
}

function highlight() {
  for (const tr of body.children) {
    const on = Number(tr.dataset.index) === state.selected;
    tr.classList.toggle("selected", on);
    tr.setAttribute("aria-selected", String(on));
    if (on) tr.scrollIntoView({ block: "nearest" });
  }
}

function open(i = state.selected) {
  const item = state.items[i];
  if (item) location.assign(viewerUrl(item.file_name));
}

function gotoPage(delta, select = "first") {
  const pages = Math.max(1, Math.ceil(state.total / state.pageSize));
  const page = Math.min(pages, Math.max(1, state.page + delta));
  if (page === state.page) return;
  const p = new URLSearchParams(state.params);
  p.set("page", String(page));
  if (select === "last") p.set("select", "last");
  else p.delete("select");
  navigate(p);
}

function move(step) {
  const next = state.selected + step;
  if (next >= state.items.length) return gotoPage(1);
  if (next < 0) return gotoPage(-1, "last");
  state.selected = next;
  highlight();
  return undefined;
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  // Apply closes the Types popover: the chosen types show in its summary, the list below is in view.
  $("type-filter").open = false;
  navigate(readForm());
});
$("filters-reset").addEventListener("click", () => {
  form.reset();
  navigate(new URLSearchParams());
});
for (const b of document.querySelectorAll(".sort")) {
  b.addEventListener("click", () => {
    const p = readForm();
    const same = (state.params.get("sort") || "file_name") === b.dataset.sort;
    const order = same && state.params.get("order") !== "desc" ? "desc" : "asc";
    p.set("sort", b.dataset.sort);
    p.set("order", order);
    p.delete("page");
    navigate(p);
  });
}
$("page-prev").addEventListener("click", () => gotoPage(-1));
$("page-next").addEventListener("click", () => gotoPage(1));
window.addEventListener("popstate", () => {
  state.params = new URLSearchParams(location.search);
  load();
});

const toggleKeymap = wireKeymap();
document.addEventListener("keydown", (e) => {
  if (document.querySelector("dialog[open]") && e.key !== "?") return;
  if (isTypingTarget(e.target)) {
    if (e.key === "Escape") e.target.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  // Enter on a focused button or link keeps its own meaning.
  if (e.key === "Enter" && (e.target.tagName === "BUTTON" || e.target.tagName === "A")) return;
  const keys = {
    ArrowDown: () => move(1), j: () => move(1), ArrowUp: () => move(-1), k: () => move(-1),
    Enter: () => open(), n: () => gotoPage(1), N: () => gotoPage(1), p: () => gotoPage(-1), P: () => gotoPage(-1),
    Home: () => { state.selected = 0; highlight(); },
    End: () => { state.selected = state.items.length - 1; highlight(); },
    "/": () => form.elements.split.focus(),
    "?": toggleKeymap,
  };
  const action = keys[e.key];
  if (action) {
    e.preventDefault();
    action();
  }
});

initShell();
load();
