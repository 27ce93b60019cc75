// Jobs on the page: live progress over each job's event stream, and the history list (player, waveform,
// facts, parameters, lineage) a page at a time.
"use strict";

import { $, TERMINAL, api, apiJson, jobPath, mediaUrl, releaseMedia, setState } from "./api.js";
import { attachActions } from "./actions.js";

const PAGE_SIZE = 10;
export const view = { cursor: null, query: "", status: "", selected: new Map(), focus: null };

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
  const error = job.status === "failed" && job.error ? `: ${job.error}` : "";
  $(".label", item).textContent = `${job.prompt} — ${job.status} ${Math.round(job.progress * 100)}%${where}${error}`;
  $("button", item).hidden = TERMINAL.includes(job.status);
}

// Follows a queued job to its end in the progress list, then shows it in the history.
export async function follow(job) {
  const item = progressItem(job);
  showProgress(item, job);
  let last = job;
  try {
    const response = await api(jobPath(job.job_id, "/events"));
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
    while (!TERMINAL.includes(last.status)) {
      showProgress(item, (last = await apiJson(jobPath(job.job_id, "?wait=30"))));
    }
  }
  await refreshHistory();
  return last;
}

export async function cancelJob(jobId) {
  try {
    await api(jobPath(jobId), { method: "DELETE" });
  } catch (failure) {
    setState(failure.message);
  }
  await refreshHistory();
}

// --- history ----------------------------------------------------------------------------------------------

export async function refreshHistory() {
  releaseMedia();
  $("#history-list").replaceChildren();
  view.cursor = null;
  await loadPage();
}

export async function loadPage() {
  const params = new URLSearchParams({ limit: PAGE_SIZE });
  if (view.query) params.set("q", view.query);
  if (view.status) params.set("status", view.status);
  if (view.cursor) params.set("cursor", view.cursor);
  $("#history-list").setAttribute("aria-busy", "true");
  try {
    const page = await apiJson(`/api/v1/history?${params}`);
    for (const job of page.items) $("#history-list").append(jobItem(job));
    view.cursor = page.next_cursor;
    $("#more-button").hidden = !page.next_cursor;
    $("#history-empty").hidden = $("#history-list").children.length > 0;
  } catch (failure) {
    setState(failure.message);
  } finally {
    $("#history-list").setAttribute("aria-busy", "false");
  }
}

export function jobItem(job) {
  const item = $("#job-template").content.firstElementChild.cloneNode(true);
  item.dataset.jobId = job.job_id;
  item.dataset.status = job.status;
  if (view.focus === job.job_id) item.classList.add("focus");
  $(".prompt", item).textContent = job.prompt;
  const badge = $(".badge", item);
  badge.textContent = job.status;
  badge.classList.add(job.status);

  const pick = $(".pick", item);
  pick.setAttribute("aria-label", `select "${job.prompt}" for export`);
  pick.disabled = job.status !== "completed";
  pick.checked = view.selected.has(job.job_id);
  pick.addEventListener("change", () => {
    if (pick.checked) view.selected.set(job.job_id, job.prompt);
    else view.selected.delete(job.job_id);
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
  showLineage($(".lineage", item), job);
  if (job.error) {
    $(".error-text", item).textContent = job.error;
    $(".error-text", item).hidden = false;
  }
  const cancel = $(".cancel", item);
  cancel.hidden = !["pending", "processing"].includes(job.status);
  cancel.addEventListener("click", () => cancelJob(job.job_id));
  showAudio(item, job);
  attachActions(item, job);
  return item;
}

// "edit of 1a2b3c4d": the parent is a link that shows it in the history.
function showLineage(element, job) {
  const lineage = job.lineage;
  if (!lineage || !lineage.parent_id) return;
  const what = [lineage.operation, lineage.stem].filter(Boolean).join(" ");
  const section = lineage.section_start_s == null ? "" : ` (${lineage.section_start_s}–${lineage.section_end_s} s)`;
  const link = document.createElement("a");
  link.href = `#job=${lineage.parent_id}`;
  link.textContent = lineage.parent_id.slice(0, 8);
  element.append(`${what}${section} of `, link);
  element.hidden = false;
}

function showAudio(item, job) {
  const audio = $(".player", item);
  const download = $(".download", item);
  const canvas = $(".wave", item);
  if (!job.audio) {
    audio.remove();
    download.remove();
    canvas.remove();
    return;
  }
  audio.setAttribute("aria-label", `play "${job.prompt}"`);
  mediaUrl(`/api/v1/files/${encodeURIComponent(job.job_id)}`)
    .then((url) => {
      audio.src = url;
      download.href = url;
    })
    .catch((failure) => setState(failure.message));
  download.download = `${job.prompt.slice(0, 60).replace(/[^\w -]+/g, "_")}.wav`;
  drawWaveform(canvas, job.job_id);
}

export function facts(job) {
  const seconds = job.audio ? job.audio.duration_s : job.params.duration;
  const parts = [new Date(job.created_at).toLocaleString(), seconds == null ? "" : `${seconds} s`];
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
    const peaks = await apiJson(`/api/v1/files/${encodeURIComponent(jobId)}/peaks?points=${canvas.width}`);
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

export function showSelection() {
  $("#selected-count").textContent = view.selected.size;
  $("#export-button").disabled = view.selected.size === 0;
}

// A link (#job=ID, from an agent or a family tree) shows that job first, wherever it is in the history.
export async function showFocused() {
  let item = document.querySelector(`.job[data-job-id="${view.focus}"]`);
  if (!item) {
    try {
      item = jobItem(await apiJson(jobPath(view.focus)));
      $("#history-list").prepend(item);
    } catch (failure) {
      setState(failure.message);
      return;
    }
  }
  item.scrollIntoView();
  item.focus({ preventScroll: true });
}
