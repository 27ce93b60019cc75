// DGX Music studio: a page over the REST API (/api/v1), no build step, no library (ES modules).
// The token (when the server has one) is asked for once and kept in this tab's sessionStorage.
"use strict";

import { followChosenModel } from "./actions.js";
import { $, api, apiJson, askForToken, loadSchemas, setState, token } from "./api.js";
import { loadCatalogue, startForm } from "./form.js";
import { loadPage, refreshHistory, showFocused, view } from "./history.js";

// --- export to Ardour --------------------------------------------------------------------------------------

async function exportSession(event) {
  event.preventDefault();
  const error = $("#export-error");
  error.hidden = true;
  try {
    const body = { job_ids: [...view.selected.keys()], session_name: $("#session-name").value };
    const manifest = await apiJson("/api/v1/sessions", { method: "POST", json: body });
    const zip = await (await api(`/api/v1/sessions/${encodeURIComponent(manifest.session_name)}.zip`)).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(zip);
    link.download = `${manifest.session_name}.zip`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    setState(`exported ${manifest.tracks.length} track(s) to ${manifest.session_dir}`);
  } catch (failure) {
    error.textContent = failure.message;
    error.hidden = false;
  }
}

// --- start ----------------------------------------------------------------------------------------------------

async function showHealth() {
  try {
    const response = await fetch("/health", { headers: token() ? { Authorization: `Bearer ${token()}` } : {} });
    if (response.status === 401) return askForToken().then(showHealth);
    const health = await response.json();
    const where = health.device ? ` on ${health.device}` : "";
    setState(`${health.worker} · ${health.loaded_model || health.model}${where} · ${health.queue_depth} queued`);
  } catch (failure) {
    setState(`cannot reach the server: ${failure.message}`);
  }
}

function focusFromHash() {
  const match = location.hash.match(/^#job=([\w-]+)$/);
  view.focus = match ? match[1] : null;
}

async function start() {
  focusFromHash();
  startForm();
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    view.query = $("#search").value.trim();
    view.status = $("#status-filter").value;
    refreshHistory();
  });
  $("#export-form").addEventListener("submit", exportSession);
  $("#more-button").addEventListener("click", loadPage);
  $("#token-button").hidden = !token();
  $("#token-button").addEventListener("click", () => askForToken().then(refreshHistory));
  window.addEventListener("hashchange", async () => {
    focusFromHash();
    await refreshHistory();
    if (view.focus) await showFocused();
  });
  await showHealth();
  await loadSchemas();
  followChosenModel();
  try {
    await loadCatalogue();
  } catch (failure) {
    setState(`cannot read the model catalogue: ${failure.message}`);
  }
  await refreshHistory();
  if (view.focus) await showFocused();
  document.body.dataset.ready = "true";
}

start();
