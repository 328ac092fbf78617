// Review writes: every change to the key slice goes through runEdit (versioned; 409 opens the conflict dialog,
// a network error keeps the edit drawn and offers Retry) and every write answers with the updated key slice.
import {
  ApiError, ConflictError, NetworkError, del, describeError, get, hideError, post, put, showConflict, showError, user,
} from "../api.js";
import { LESION_TYPES, STATUSES } from "../vocabulary.js";

// What each lesion action sets, for the conflict dialog's "Your change" column.
const ACTION_CHANGES = {
  confirm: () => ({ confirmed: { by: user()?.name ?? "you" } }),
  flag: (extra) => ({ flag: { reason: extra.reason, note: extra.note } }),
  unflag: () => ({ flag: null }),
};

// `app`: state, fileName, marks, $, redraw, applyKeySlice, select, selectNext, setMessage, updatePanels, updateReadouts.
export function createEdits(app) {
  const { state, marks, $ } = app;
  const ksPath = (suffix = "") => `/api/key-slices/${encodeURIComponent(app.fileName)}${suffix}`;
  let predicting = false;

  async function reloadKeySlice() {
    try {
      app.applyKeySlice(await get(ksPath()));
    } catch (err) {
      showError(`Could not reload the key slice: ${describeError(err)}`, reloadKeySlice);
    }
  }

  async function runEdit(edit) {
    state.pending = edit;
    app.redraw();
    try {
      const result = await edit.request(edit.version);
      state.pending = null;
      hideError();
      app.setMessage(`${edit.label}: saved`);
      // Every review write answers with the updated key slice: apply it, no second request.
      if (result && result.key_slice) app.applyKeySlice(result.key_slice);
      if (edit.after) await edit.after(result);
    } catch (err) {
      if (err instanceof ConflictError && err.code === "duplicate_lesion" && edit.onDuplicate) {
        state.pending = null;
        return edit.onDuplicate(err);
      }
      if (err instanceof ConflictError) {
        const choice = await showConflict(err, edit.before, edit.label, edit.change);
        const current = err.body.current || {};
        if (choice === "reapply") {
          edit.version = current.status_version ?? current.version ?? edit.version;
          return runEdit(edit);
        }
        state.pending = null;
        app.setMessage(`${edit.label}: discarded, showing ${err.body.changed_by || "the other reviewer"}'s version`);
        if (err.body.key_slice) app.applyKeySlice(err.body.key_slice);
        else await reloadKeySlice();
      } else if (err instanceof NetworkError || (err instanceof ApiError && err.status >= 500)) {
        // Keep state.pending so the edit stays drawn until the retry succeeds.
        showError(`Could not save "${edit.label}": ${describeError(err)}`, () => runEdit(edit));
        app.redraw();
      } else {
        state.pending = null;
        showError(`${edit.label} failed: ${describeError(err)}`);
        await reloadKeySlice();
      }
    }
    return undefined;
  }

  function addLesion(geometry, label) {
    const body = { lesion_type: parseInt($("new-type").value, 10), slice_index: state.current, ...geometry };
    runEdit({
      label,
      newGeometry: geometry,
      version: null,
      before: null,
      request: () => post(ksPath("/lesions"), body),
      after: async (result) => {
        if (result.lesion_id !== null) app.select({ kind: "lesion", id: result.lesion_id });
      },
    });
  }

  function updateGeometry(lesion, geometry) {
    const body = geometry.recist ? { recist: geometry.recist } : { box: geometry.box };
    runEdit({
      label: `edit lesion #${lesion.id}`,
      lesionId: lesion.id,
      geometry,
      change: { ...body },
      version: lesion.version,
      before: lesion,
      request: (version) => put(`/api/lesions/${lesion.id}/geometry`, { version, ...body }),
    });
  }

  function lesionAction(action, extra = {}, label = action) {
    const lesion = marks.selectedLesion();
    if (!lesion) return app.setMessage("Select a lesion first (click it, or Tab).");
    return runEdit({
      label: `${label} lesion #${lesion.id}`,
      change: ACTION_CHANGES[action] ? ACTION_CHANGES[action](extra) : null,
      lesionId: lesion.id,
      version: lesion.version,
      before: lesion,
      request: (version) => post(`/api/lesions/${lesion.id}/${action}`, { version, ...extra }),
    });
  }

  function confirmSelected() {
    const lesion = marks.selectedLesion();
    if (lesion && lesion.flag !== null) return app.setMessage(`Lesion #${lesion.id} is flagged noisy: unflag it first (U).`);
    return lesionAction("confirm");
  }

  function setSelectedType(lesionType) {
    const lesion = marks.selectedLesion();
    if (!lesion || lesion.current.lesion_type === lesionType) return;
    runEdit({
      label: `set the type of lesion #${lesion.id} to ${LESION_TYPES[lesionType] ?? lesionType}`,
      change: { lesion_type: lesionType },
      lesionId: lesion.id,
      version: lesion.version,
      before: lesion,
      request: (version) => put(`/api/lesions/${lesion.id}/geometry`, { version, lesion_type: lesionType }),
    });
  }

  function deleteSelected() {
    const lesion = marks.selectedLesion();
    if (!lesion) return app.setMessage("Select an added lesion first.");
    if (lesion.origin === "csv") return app.setMessage("DL_info.csv lesions cannot be deleted; flag them as noisy instead (F).");
    runEdit({
      label: `delete lesion #${lesion.id}`,
      change: { review: "deleted" },
      lesionId: lesion.id,
      version: lesion.version,
      before: lesion,
      request: (version) => del(`/api/lesions/${lesion.id}?version=${version}`),
      after: async () => {
        state.selected = null;
        app.redraw();
      },
    });
    return undefined;
  }

  function predictionAction(accept, allowDuplicate = false) {
    const prediction = marks.selectedPrediction();
    if (!prediction) return app.setMessage("Select a prediction first (click it, or Tab).");
    const type = parseInt($("new-type").value, 10);
    const body = accept && type !== -1 ? { lesion_type: type } : {};
    if (accept && allowDuplicate) body.allow_duplicate = true;
    runEdit({
      label: `${accept ? "accept" : "reject"} prediction #${prediction.id}`,
      change: { status: accept ? "accepted" : "rejected" },
      version: prediction.version,
      before: prediction,
      request: (version) => post(`/api/predictions/${prediction.id}/${accept ? "accept" : "reject"}`, { version, ...body }),
      // The server refuses to add a lesion twice; the reviewer decides.
      onDuplicate: (err) => {
        const again = window.confirm(
          `Prediction #${prediction.id} marks lesion #${err.body.lesion_id}, which is already there. Add a second lesion anyway?`);
        if (again) return predictionAction(true, true);
        app.setMessage(`Prediction #${prediction.id} not accepted: it marks lesion #${err.body.lesion_id}.`);
        app.redraw();
        return undefined;
      },
      after: async (result) => {
        // Nothing is selected after a reject: a second key press must not reject the next prediction.
        state.selected = accept && result.lesion_id !== null ? { kind: "lesion", id: result.lesion_id } : null;
        app.updatePanels();
        app.redraw();
      },
    });
    return undefined;
  }

  function flagSelected() {
    const lesion = marks.selectedLesion();
    if (!lesion) return app.setMessage("Select a lesion first (click it, or Tab).");
    const dialog = $("flag-dialog");
    $("flag-form").reset();
    dialog.returnValue = "";
    dialog.onclose = () => {
      dialog.onclose = null;
      if (dialog.returnValue !== "ok") return;
      const reason = $("flag-form").querySelector('input[name="reason"]:checked').value;
      lesionAction("flag", { reason, note: $("flag-text").value }, "flag");
    };
    dialog.showModal();
    return undefined;
  }

  async function setStatus(status) {
    if (!state.ks) return false;
    let ok = false;
    await runEdit({
      label: `mark ${STATUSES[status] ?? status}`,
      change: { status },
      version: state.ks.status_version,
      before: { status: state.ks.status, status_version: state.ks.status_version },
      request: (version) => put(ksPath("/status"), { status, version }),
      after: async () => {
        ok = true;
      },
    });
    return ok;
  }

  async function undoRedo(which) {
    try {
      const result = await post(ksPath(`/${which}`));
      if (!result.entry) app.setMessage(which === "undo" ? "Nothing to undo." : "Nothing to redo.");
      else app.setMessage(which === "undo" ? "Undone." : "Redone.");
      app.root.dataset.undoCount = String(Number(app.root.dataset.undoCount || 0) + 1);
      if (result.key_slice) app.applyKeySlice(result.key_slice);
    } catch (err) {
      showError(`${which} failed: ${describeError(err)}`, () => undoRedo(which));
    }
  }

  // The detector's 3-slice input repeats a nearer slice where a context slice is not stored: say so.
  function showContextNotice(missing) {
    const el = $("predict-context");
    el.hidden = !missing.length;
    el.textContent = missing.length
      ? `Ran with repeated neighbours: context slice${missing.length > 1 ? "s" : ""} ${missing.join(", ")} ` +
        "not on disk, the nearest stored slice stood in."
      : "";
  }

  // Predict needs a detector and the key slice's image; without either the button says why instead of failing.
  function updatePredictButton() {
    const button = $("predict");
    const h = window.__health;
    let why = "";
    if (state.ks && !state.ks.key_slice_stored) why = "The key slice's image is not on disk: nothing to run the detector on.";
    else if (h && h.detector && !h.detector.loaded) why = "No detector loaded (review mode).";
    button.disabled = predicting || !!why;
    button.title = why || (h && h.detector && h.detector.error) || "";
    if (why) $("predict-time").textContent = why;
  }

  async function predict() {
    const spinner = $("predict-spinner");
    spinner.hidden = false;
    predicting = true;
    $("predict").disabled = true;
    $("predict-time").textContent = "running…";
    const t0 = performance.now();
    try {
      // Ask for everything above a low floor; the slider filters in the browser without a round trip.
      const result = await post(`${ksPath("/predict")}?threshold=0.05`);
      const elapsed = performance.now() - t0;
      const run = result.run;
      state.provider = run.provider;
      const found = result.key_slice.predictions.filter((p) => p.model_version === run.model_version).length;
      $("predict-time").textContent = `${found} found in ${Math.round(elapsed)} ms` +
        ` (model ${Math.round(run.elapsed_ms)} ms${run.cached ? ", cached" : ""}, ${run.provider || "?"})`;
      app.applyKeySlice(result.key_slice);
      showContextNotice(run.context_missing || []);
      if (!marks.selectedPrediction()) app.selectNext(1, "prediction");
      app.root.dataset.predicted = "1";
    } catch (err) {
      if (err instanceof ApiError && err.code === "no_model") $("predict-time").textContent = "No detector loaded on the server.";
      else {
        $("predict-time").textContent = "failed";
        showError(`Predict failed: ${describeError(err)}`, predict);
      }
    } finally {
      spinner.hidden = true;
      predicting = false;
      updatePredictButton();
      app.updateReadouts();
    }
  }

  async function gotoNeighbour(direction) {
    try {
      const n = await get(`${ksPath("/neighbours")}${location.search}`);
      const target = direction > 0 ? n.next : n.previous;
      if (!target) {
        app.setMessage(direction > 0 ? "End of the queue." : "Start of the queue.");
        return false;
      }
      location.assign(`/viewer/${encodeURIComponent(target)}${location.search}`);
      return true;
    } catch (err) {
      showError(`Could not find the ${direction > 0 ? "next" : "previous"} key slice: ${describeError(err)}`, () => gotoNeighbour(direction));
      return false;
    }
  }

  async function doneAndNext() {
    if (await setStatus("done")) {
      if (!(await gotoNeighbour(1))) location.assign(`/${location.search}`);
    }
  }

  function deleteOrReject() {
    if (marks.selectedPrediction()) predictionAction(false);
    else deleteSelected();
  }

  return {
    ksPath, reloadKeySlice, addLesion, updateGeometry, lesionAction, confirmSelected, setSelectedType, deleteSelected,
    predictionAction, flagSelected, setStatus, undoRedo, predict, updatePredictButton, gotoNeighbour, doneAndNext,
    deleteOrReject,
  };
}
