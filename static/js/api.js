// Shared by every page: fetch wrapper (CSRF, 401 redirect, 409 conflicts), the shell banners and dialogs.
import { ALL_FLAG_REASONS, LESION_TYPES } from "./vocabulary.js";

let csrfToken = document.querySelector('meta[name="csrf-token"]')?.content || "";
let currentUser = null;

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.code = this.body.code || null;
  }
}

export class ConflictError extends ApiError {}

export class NetworkError extends Error {}

export function setCsrfToken(token) { csrfToken = token || ""; }
export function user() { return currentUser; }

function loginRedirect() {
  if (location.pathname === "/login") return;
  const next = encodeURIComponent(location.pathname + location.search);
  location.assign(`/login?next=${next}`);
}

// Writes carry the CSRF header; the server answers 403 without it.
export async function api(method, path, body, { raw = false, allow401 = false } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new NetworkError(`network error: ${err.message || err}`);
  }
  if (raw && response.ok) return response;
  if (response.status === 204) return null;
  let data = null;
  const text = await response.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = { detail: text.slice(0, 200) }; }
  }
  if (response.ok) return data;
  if (response.status === 401 && !allow401) {
    loginRedirect();
  }
  if (response.status === 409) throw new ConflictError(409, data);
  throw new ApiError(response.status, data);
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body, opts) => api("POST", path, body ?? {}, opts);
export const put = (path, body, opts) => api("PUT", path, body, opts);
export const del = (path, opts) => api("DELETE", path, undefined, opts);

export function describeError(err) {
  if (err instanceof NetworkError) return "The server could not be reached. Your change is kept.";
  if (err instanceof ApiError) {
    const detail = typeof err.body.detail === "string" ? err.body.detail : JSON.stringify(err.body.detail || "");
    return `${err.status}${err.code ? " " + err.code : ""}: ${detail}`;
  }
  return String(err && err.message ? err.message : err);
}

// One error banner per page; Retry re-runs the failed action (which still holds the user's edit).
let retryAction = null;
export function showError(message, retry = null) {
  const banner = document.getElementById("error-banner");
  if (!banner) return;
  document.getElementById("error-text").textContent = message;
  retryAction = retry;
  document.getElementById("error-retry").hidden = !retry;
  banner.hidden = false;
}
export function hideError() {
  const banner = document.getElementById("error-banner");
  if (banner) banner.hidden = true;
  retryAction = null;
}

function wireErrorBanner() {
  document.getElementById("error-retry")?.addEventListener("click", async () => {
    const action = retryAction;
    hideError();
    if (action) await action();
  });
  document.getElementById("error-dismiss")?.addEventListener("click", hideError);
}

// Before/after rows for a conflict: only the fields that tell a reviewer what happened.
function summarise(thing) {
  if (!thing || typeof thing !== "object") return {};
  const out = {};
  const g = thing.current && typeof thing.current === "object" && !Array.isArray(thing.current) ? thing.current : thing;
  if (thing.review !== undefined) out.review = thing.review;
  if (thing.status !== undefined) out.status = thing.status;
  if (thing.version !== undefined) out.version = thing.version;
  if (thing.status_version !== undefined) out["status version"] = thing.status_version;
  if (thing.flag !== undefined) out.flag = thing.flag ? `${ALL_FLAG_REASONS[thing.flag.reason] ?? thing.flag.reason}${thing.flag.note ? ": " + thing.flag.note : ""}` : "none";
  if (thing.confirmed !== undefined) out.confirmed = thing.confirmed ? `by ${thing.confirmed.by}` : "no";
  if (g.recist) out.recist = g.recist.map((v) => Number(v).toFixed(1)).join(", ");
  if (g.box) out.box = g.box.map((v) => Number(v).toFixed(1)).join(", ");
  if (g.diameters_mm) out["diameters mm"] = g.diameters_mm.map((v) => Number(v).toFixed(1)).join(" × ");
  // Type names, never codes: a reviewer compares "lung" with "liver", not 5 with 4.
  if (g.lesion_type !== undefined) out.type = LESION_TYPES[g.lesion_type] ?? String(g.lesion_type);
  return out;
}

// Resolves to "reapply" or "discard". `change` holds the fields the user's own edit sets (its own column).
export function showConflict(err, before, mine, change = null) {
  const dialog = document.getElementById("conflict-dialog");
  const body = err.body || {};
  document.getElementById("conflict-who").textContent = body.changed_by || "another reviewer";
  document.getElementById("conflict-when").textContent = body.changed_at ? new Date(body.changed_at).toLocaleString() : "an unknown time";
  document.getElementById("conflict-mine").textContent = mine || "";
  const a = summarise(before);
  const b = summarise(body.current);
  const c = summarise(change);
  const rows = document.getElementById("conflict-rows");
  rows.replaceChildren();
  for (const key of new Set([...Object.keys(a), ...Object.keys(b), ...Object.keys(c)])) {
    const tr = document.createElement("tr");
    tr.dataset.field = key;
    const changed = String(a[key]) !== String(b[key]);
    if (changed) tr.className = "changed";
    for (const text of [key, a[key] ?? "–", b[key] ?? "–", c[key] ?? ""]) {
      const td = document.createElement(text === key ? "th" : "td");
      td.textContent = String(text);
      tr.appendChild(td);
    }
    rows.appendChild(tr);
  }
  return new Promise((resolve) => {
    const reapply = document.getElementById("conflict-reapply");
    const discard = document.getElementById("conflict-discard");
    const done = (choice) => {
      reapply.onclick = null;
      discard.onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(choice);
    };
    reapply.onclick = () => done("reapply");
    discard.onclick = () => done("discard");
    dialog.onclose = () => done("discard");
    dialog.showModal();
    reapply.focus();
  });
}

export let health = null;

// Banner (synthetic data / model), signed-in user, logout.
export async function initShell({ requireLogin = true } = {}) {
  wireErrorBanner();
  const healthPromise = get("/api/health").catch(() => null);
  if (requireLogin) {
    try {
      const me = await get("/api/auth/me");
      currentUser = me.user;
      if (me.csrf_token) setCsrfToken(me.csrf_token);
      const nameEl = document.getElementById("user-name");
      if (nameEl && me.user) nameEl.textContent = `${me.user.name} (${me.user.role})`;
      const logout = document.getElementById("logout");
      if (logout) {
        logout.hidden = false;
        logout.addEventListener("click", async () => {
          try { await post("/api/auth/logout"); } catch { /* signing out locally anyway */ }
          location.assign("/login");
        });
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return new Promise(() => {});
      showError(`Could not check the sign-in: ${describeError(err)}`, () => location.reload());
    }
  }
  health = await healthPromise;
  renderBanner(health);
  return health;
}

function renderBanner(h) {
  const banner = document.getElementById("synthetic-banner");
  if (!banner) return;
  const parts = [];
  if (!h) {
    parts.push("Server health unknown.");
  } else {
    if (h.synthetic) parts.push("SYNTHETIC demo data");
    if (h.detector && h.detector.loaded && h.detector.synthetic_model) parts.push("SYNTHETIC detector model (trained on synthetic data)");
  }
  if (parts.length) {
    banner.textContent = `⚠ ${parts.join(" · ")} — not for clinical use.`;
    banner.hidden = false;
  } else {
    banner.textContent = "Research tool — not for clinical use.";
    banner.hidden = false;
    banner.classList.add("banner-info");
  }
  const det = document.getElementById("detector-status");
  if (det && h && h.detector) {
    det.textContent = h.detector.loaded ? `detector: ${h.detector.provider || "?"}` : "no detector";
    det.title = h.detector.loaded ? `model ${h.detector.model_version || "?"}` : h.detector.error || "no model loaded";
  }
}

export function isTypingTarget(el) {
  if (!el) return false;
  const tag = el.tagName;
  return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable;
}

export function wireKeymap() {
  const dialog = document.getElementById("keymap-dialog");
  if (!dialog) return () => {};
  document.getElementById("keymap-close")?.addEventListener("click", () => dialog.close());
  return () => (dialog.open ? dialog.close() : dialog.showModal());
}
