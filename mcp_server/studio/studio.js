// DGX Music studio: a page over the REST API (/api/v1), no build step, no library.
// The token (when the server has one) is asked for once and kept in this tab's sessionStorage.
"use strict";

const TOKEN_KEY = "dgx-music-token";
const PAGE_SIZE = 10;
const OWN_FIELDS = new Set(["prompt", "duration", "seed", "variations", "model"]);
const LINEAGE_KEYS = ["parent_id", "parents", "lineage", "derived_from", "source_job_id"];

const $ = (selector, root = document) => root.querySelector(selector);
const state = { cursor: null, query: "", status: "", selected: new Map(), focus: null, objectUrls: [] };

// --- talking to the server ---------------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", `Bearer ${token()}`);
  const init = { ...options, headers };
  if (options.json !== undefined) {
    headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    await askForToken();
    return api(path, options);
  }
  if (!response.ok) throw await problem(response);
  return response;
}

async function problem(response) {
  const error = new Error(`${response.status} ${response.statusText}`);
  try {
    const body = await response.json();
    error.message = body.detail || error.message;
    error.fields = (body.errors || []).map((e) => e.field);
  } catch {
    // not problem+json (e.g. a proxy's page): the status line is all there is
  }
  return error;
}

let tokenPrompt = null;
function askForToken() {
  // Several requests may meet the 401 at once: one dialog answers them all.
  tokenPrompt ??= new Promise((resolve) => {
    const dialog = $("#token-dialog");
    const form = $("#token-form");
    form.addEventListener(
      "submit",
      () => {
        sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
        $("#token-button").hidden = false;
        tokenPrompt = null;
        resolve();
      },
      { once: true },
    );
    dialog.showModal();
    $("#token").focus();
  });
  return tokenPrompt;
}

// Media elements cannot send a header: with a token the audio comes through fetch as a blob.
async function mediaUrl(path) {
  if (!token()) return path;
  const url = URL.createObjectURL(await (await api(path)).blob());
  state.objectUrls.push(url);
  return url;
}

// --- the generate form ------------------------------------------------------------------------------------

async function buildParameterFields() {
  const spec = await (await fetch("/openapi.json")).json();
  const schema = spec.components.schemas.GenerateRequest;
  const box = $("#param-fields");
  for (const [name, prop] of Object.entries(schema.properties)) {
    if (OWN_FIELDS.has(name)) continue;
    const type = prop.type || (prop.anyOf || []).map((p) => p.type).find((t) => t !== "null");
    if (type !== "number" && type !== "integer") continue;
    const nullable = (prop.anyOf || []).some((p) => p.type === "null");
    const p = document.createElement("p");
    p.className = "field";
    const label = document.createElement("label");
    label.htmlFor = `param-${name}`;
    label.textContent = name.replaceAll("_", " ");
    const input = document.createElement("input");
    Object.assign(input, { id: `param-${name}`, name, type: "number", step: type === "integer" ? "1" : "any" });
    input.dataset.param = type;
    if (prop.minimum !== undefined) input.min = prop.minimum;
    if (prop.maximum !== undefined) input.max = prop.maximum;
    if (prop.default !== undefined && prop.default !== null) input.value = prop.default;
    if (nullable) input.placeholder = "off";
    const hint = document.createElement("small");
    hint.textContent = prop.description || "";
    input.setAttribute("aria-describedby", `hint-${name}`);
    hint.id = `hint-${name}`;
    p.append(label, input, hint);
    box.append(p);
  }
}

function formBody() {
  const number = (id) => ($(id).value === "" ? null : Number($(id).value));
  const body = {
    prompt: $("#prompt").value,
    duration: number("#duration"),
    variations: number("#variations") ?? 1,
    seed: number("#seed"),
    model: $("#model").value.trim() || null,
  };
  for (const input of document.querySelectorAll("#param-fields input")) {
    body[input.name] = input.value === "" ? null : Number(input.value);
  }
  return body;
}

async function generate(event) {
  event.preventDefault();
  const error = $("#generate-error");
  error.hidden = true;
  $("#generate-button").disabled = true;
  try {
    const response = await api("/api/v1/generate", { method: "POST", json: formBody() });
    const { jobs } = await response.json();
    for (const job of jobs) follow(job);
  } catch (failure) {
    error.textContent = failure.message;
    error.hidden = false;
    for (const field of failure.fields || []) {
      const input = document.getElementsByName(field)[0];
      if (input) input.setAttribute("aria-invalid", "true");
    }
  } finally {
    $("#generate-button").disabled = false;
  }
}

// --- live progress from the event stream --------------------------------------------------------------------

function progressItem(job) {
  const item = document.createElement("li");
  item.dataset.jobId = job.job_id;
  const label = document.createElement("span");
  label.className = "label";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "quiet";
  cancel.textContent = "Cancel";
  cancel.addEventListener("click", () => cancelJob(job.job_id));
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.value = 0;
  bar.setAttribute("aria-label", `progress of ${job.prompt}`);
  item.append(label, cancel, bar);
  $("#progress-list").prepend(item);
  return item;
}

function showProgress(item, job) {
  const bar = $("progress", item);
  bar.value = job.progress;
  bar.dataset.status = job.status;
  const where = job.status === "pending" ? ` (queue position ${job.queue_position})` : "";
  $(".label", item).textContent = `${job.prompt} — ${job.status} ${Math.round(job.progress * 100)}%${where}`;
  $("button", item).hidden = ["completed", "failed", "cancelled"].includes(job.status);
}

async function follow(job) {
  const item = progressItem(job);
  showProgress(item, job);
  let last = job;
  try {
    const response = await api(`/api/v1/jobs/${encodeURIComponent(job.job_id)}/events`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const data = buffer
          .slice(0, end)
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trim())
          .join("");
        buffer = buffer.slice(end + 2);
        if (data) showProgress(item, (last = JSON.parse(data)));
      }
    }
  } catch {
    // the stream broke (a proxy, a restart): long-poll until the job ends
    while (!["completed", "failed", "cancelled"].includes(last.status)) {
      const response = await api(`/api/v1/jobs/${encodeURIComponent(job.job_id)}?wait=30`);
      showProgress(item, (last = await response.json()));
    }
  }
  await refreshHistory();
}

async function cancelJob(jobId) {
  try {
    await api(`/api/v1/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" });
  } catch (failure) {
    setState(failure.message);
  }
  await refreshHistory();
}

// --- history ----------------------------------------------------------------------------------------------

async function refreshHistory() {
  for (const url of state.objectUrls.splice(0)) URL.revokeObjectURL(url);
  $("#history-list").replaceChildren();
  state.cursor = null;
  await loadPage();
}

async function loadPage() {
  const params = new URLSearchParams({ limit: PAGE_SIZE });
  if (state.query) params.set("q", state.query);
  if (state.status) params.set("status", state.status);
  if (state.cursor) params.set("cursor", state.cursor);
  $("#history-list").setAttribute("aria-busy", "true");
  try {
    const page = await (await api(`/api/v1/history?${params}`)).json();
    for (const job of page.items) $("#history-list").append(jobItem(job));
    state.cursor = page.next_cursor;
    $("#more-button").hidden = !page.next_cursor;
    $("#history-empty").hidden = $("#history-list").children.length > 0;
  } catch (failure) {
    setState(failure.message);
  } finally {
    $("#history-list").setAttribute("aria-busy", "false");
  }
}

function jobItem(job) {
  const item = $("#job-template").content.firstElementChild.cloneNode(true);
  item.dataset.jobId = job.job_id;
  item.dataset.status = job.status;
  if (state.focus === job.job_id) item.classList.add("focus");
  $(".prompt", item).textContent = job.prompt;
  const badge = $(".badge", item);
  badge.textContent = job.status;
  badge.classList.add(job.status);

  const pick = $(".pick", item);
  pick.setAttribute("aria-label", `select "${job.prompt}" for export`);
  pick.disabled = job.status !== "completed";
  pick.checked = state.selected.has(job.job_id);
  pick.addEventListener("change", () => {
    if (pick.checked) state.selected.set(job.job_id, job.prompt);
    else state.selected.delete(job.job_id);
    showSelection();
  });

  $(".facts", item).textContent = facts(job);
  const params = $(".params", item);
  for (const [key, value] of Object.entries({ model: job.model, ...job.params })) {
    const dt = document.createElement("dt");
    dt.textContent = key.replaceAll("_", " ");
    const dd = document.createElement("dd");
    dd.textContent = value === null ? "—" : String(value);
    params.append(dt, dd);
  }
  const lineage = LINEAGE_KEYS.map((key) => job[key]).find((value) => value);
  if (lineage) {
    $(".lineage", item).textContent = `derived from ${[].concat(lineage).map(describe).join(", ")}`;
    $(".lineage", item).hidden = false;
  }
  if (job.error) {
    $(".error-text", item).textContent = job.error;
    $(".error-text", item).hidden = false;
  }
  const cancel = $(".cancel", item);
  cancel.hidden = !["pending", "processing"].includes(job.status);
  cancel.addEventListener("click", () => cancelJob(job.job_id));

  const audio = $(".player", item);
  const download = $(".download", item);
  const canvas = $(".wave", item);
  if (job.audio) {
    audio.setAttribute("aria-label", `play "${job.prompt}"`);
    const file = `/api/v1/files/${encodeURIComponent(job.job_id)}`;
    mediaUrl(file)
      .then((url) => {
        audio.src = url;
        download.href = url;
      })
      .catch((failure) => setState(failure.message));
    download.download = `${job.prompt.slice(0, 60).replace(/[^\w -]+/g, "_")}.wav`;
    drawWaveform(canvas, job.job_id);
  } else {
    audio.remove();
    download.remove();
    canvas.remove();
  }
  return item;
}

function describe(value) {
  return typeof value === "object" ? JSON.stringify(value) : String(value).slice(0, 8);
}

function facts(job) {
  const seconds = job.audio ? job.audio.duration_s : job.params.duration;
  const parts = [new Date(job.created_at).toLocaleString(), seconds == null ? "" : `${seconds} s`];
  if (job.lineage && job.lineage.parent_id) parts.push(`${job.lineage.operation}${job.lineage.stem ? " " + job.lineage.stem : ""} of ${job.lineage.parent_id.slice(0, 8)}`);
  if (job.params.seed !== null) parts.push(`seed ${job.params.seed}`);
  if (job.audio) {
    parts.push(job.audio.loudness_lufs === null ? "silence" : `${job.audio.loudness_lufs.toFixed(1)} LUFS`);
    if (job.audio.peak_dbfs !== null) parts.push(`peak ${job.audio.peak_dbfs.toFixed(1)} dBFS`);
    parts.push(`${job.audio.sample_rate / 1000} kHz ${job.audio.channels === 1 ? "mono" : "stereo"}`);
  } else if (job.status === "pending") {
    parts.push(`queue position ${job.queue_position}`);
  }
  parts.push(job.job_id.slice(0, 8));
  return parts.join(" · ");
}

async function drawWaveform(canvas, jobId) {
  try {
    const path = `/api/v1/files/${encodeURIComponent(jobId)}/peaks?points=${canvas.width}`;
    const peaks = await (await api(path)).json();
    const context = canvas.getContext("2d");
    const middle = canvas.height / 2;
    context.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--accent");
    peaks.min.forEach((low, i) => {
      const x = (i / peaks.points) * canvas.width;
      const top = middle - peaks.max[i] * middle;
      context.fillRect(x, top, Math.max(1, canvas.width / peaks.points), Math.max(1, (peaks.max[i] - low) * middle));
    });
    canvas.dataset.points = peaks.points;
  } catch {
    canvas.remove();
  }
}

// --- export to Ardour --------------------------------------------------------------------------------------

function showSelection() {
  $("#selected-count").textContent = state.selected.size;
  $("#export-button").disabled = state.selected.size === 0;
}

async function exportSession(event) {
  event.preventDefault();
  const error = $("#export-error");
  error.hidden = true;
  try {
    const body = { job_ids: [...state.selected.keys()], session_name: $("#session-name").value };
    const manifest = await (await api("/api/v1/sessions", { method: "POST", json: body })).json();
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

function setState(text) {
  $("#server-state").textContent = text;
}

async function showHealth() {
  try {
    const response = await fetch("/health", { headers: token() ? { Authorization: `Bearer ${token()}` } : {} });
    if (response.status === 401) return askForToken().then(showHealth);
    const health = await response.json();
    const where = health.device ? ` on ${health.device}` : "";
    setState(`${health.worker} · ${health.loaded_model || health.model}${where} · ${health.queue_depth} queued`);
    $("#model").placeholder = `server default (${health.model.split("/").pop()})`;
  } catch (failure) {
    setState(`cannot reach the server: ${failure.message}`);
  }
}

// A link from an agent (#job=ID) shows that job first, wherever it is in the history.
async function showFocused() {
  let item = document.querySelector(`.job[data-job-id="${state.focus}"]`);
  if (!item) {
    try {
      item = jobItem(await (await api(`/api/v1/jobs/${encodeURIComponent(state.focus)}`)).json());
      $("#history-list").prepend(item);
    } catch (failure) {
      setState(failure.message);
      return;
    }
  }
  item.scrollIntoView();
}

function focusFromHash() {
  const match = location.hash.match(/^#job=([\w-]+)$/);
  state.focus = match ? match[1] : null;
}

async function start() {
  focusFromHash();
  $("#generate-form").addEventListener("submit", generate);
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.query = $("#search").value.trim();
    state.status = $("#status-filter").value;
    refreshHistory();
  });
  $("#export-form").addEventListener("submit", exportSession);
  $("#more-button").addEventListener("click", loadPage);
  $("#token-button").hidden = !token();
  $("#token-button").addEventListener("click", () => askForToken().then(refreshHistory));
  for (const input of document.querySelectorAll("#generate-form [name]")) {
    input.addEventListener("input", () => input.removeAttribute("aria-invalid"));
  }
  window.addEventListener("hashchange", () => {
    focusFromHash();
    refreshHistory();
  });
  await buildParameterFields();
  await showHealth();
  await refreshHistory();
  if (state.focus) await showFocused();
  document.body.dataset.ready = "true";
}

start();
