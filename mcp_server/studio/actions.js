// What a musician does with a job in the history: extend it, start from it or follow its tune, edit a
// section, remix it, split it into stems, see its family, delete it. Each calls the REST endpoint the MCP
// tools share; the new jobs' progress shows like a generation's, and an API error shows next to the action.
"use strict";

import { $, $$, TERMINAL, apiJson, applyBounds, clearError, jobPath, setState, showError } from "./api.js";
import { chosenModel, models, onModelChange, useAudio } from "./form.js";
import { follow, refreshHistory, showFocused, showSelection, view } from "./history.js";

const text = (input) => input.value.trim() || null;
const number = (input) => (input.value === "" ? null : Number(input.value));

// The actions that take arguments: a small form each, its bounds from the API's request schema.
const FORMS = {
  extend: {
    label: "Extend",
    schema: "ExtendRequest",
    path: "/extend",
    body: (form) => ({ seconds: number(form.elements.seconds), prompt: text(form.elements.prompt) }),
  },
  edit: {
    label: "Edit section",
    schema: "EditRequest",
    path: "/edit",
    body: (form) => ({
      start_s: number(form.elements.start_s),
      end_s: number(form.elements.end_s),
      prompt: text(form.elements.prompt),
    }),
  },
  remix: {
    label: "Remix",
    schema: "RemixRequest",
    path: "/remix",
    body: (form) => ({ prompt: text(form.elements.prompt), strength: number(form.elements.strength) }),
  },
  stems: {
    label: "Stems",
    schema: "StemsRequest",
    path: "/stems",
    body: (form) => ({ model: form.elements.model.value || null }),
  },
};

export function familyOf(modelId) {
  const entry = models.byId.get(modelId);
  if (entry) return entry.family;
  return /ace-step/i.test(modelId) ? "acestep" : "musicgen";
}

export function attachActions(item, job) {
  const bar = $(".job-actions", item);
  const add = (label, kind, handler) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = `quiet action ${kind}`;
    button.textContent = label;
    button.addEventListener("click", () => handler(button));
    bar.append(button);
    return button;
  };
  if (job.status === "completed") {
    const family = familyOf(job.model);
    if (family === "musicgen") add("Extend", "extend", (b) => toggleForm(item, job, "extend", b));
    add("Use as start", "use-start", () => useAudio(job, "continue_from"));
    add("Use as melody", "use-melody", () => useAudio(job, "melody_from"));
    add("Edit section", "edit", (b) => toggleForm(item, job, "edit", b));
    if (family === "acestep") add("Remix", "remix", (b) => toggleForm(item, job, "remix", b));
    add("Stems", "stems", (b) => toggleForm(item, job, "stems", b));
  }
  add("Family", "family", (b) => toggleFamily(item, job, b));
  if (TERMINAL.includes(job.status)) add("Delete", "delete", () => deleteJob(item, job));
  offerFor(item, chosenModel());
}

// "Use as start" / "Use as melody" only where the chosen model takes that audio.
function offerFor(item, entry) {
  const start = $(".use-start", item);
  const melody = $(".use-melody", item);
  if (start) start.hidden = !entry || !entry.operations.includes("continue");
  if (melody) melody.hidden = !entry || !entry.melody;
}

// Called once at start (not at import: the form and this module import each other).
export function followChosenModel() {
  onModelChange((entry) => {
    for (const item of $$("#history-list .job")) offerFor(item, entry);
  });
}

function toggleForm(item, job, kind, button) {
  const box = $(".action-box", item);
  const open = box.dataset.kind === kind && !box.hidden;
  for (const other of $$(".action[aria-expanded]", item)) other.setAttribute("aria-expanded", "false");
  clearError($(".action-error", item), item);
  if (open) {
    box.hidden = true;
    return;
  }
  const form = $(`#${kind}-template`).content.firstElementChild.cloneNode(true);
  for (const input of $$("input[name]", form)) {
    applyBounds(input, FORMS[kind].schema, input.name);
    input.addEventListener("input", () => input.removeAttribute("aria-invalid"));
  }
  prefill(form, kind, job);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitAction(item, job, kind, form);
  });
  box.replaceChildren(form);
  box.dataset.kind = kind;
  box.hidden = false;
  button.setAttribute("aria-expanded", "true");
  $("input, select", form).focus();
}

function prefill(form, kind, job) {
  const seconds = job.audio.duration_s;
  if (kind === "edit") {
    // the middle third: a section to start from, inside the piece
    form.elements.start_s.value = Math.round((seconds / 3) * 10) / 10;
    form.elements.end_s.value = Math.round(((2 * seconds) / 3) * 10) / 10;
    form.elements.start_s.max = form.elements.end_s.max = seconds;
  }
  if (kind === "remix") form.elements.prompt.value = job.prompt;
  if (kind === "stems") {
    const select = form.elements.model;
    for (const entry of models.catalogue.models.filter((m) => m.family === "demucs")) {
      const isDefault = entry.default_for.includes("stems");
      const name = `${entry.alias}: ${entry.stems.join(", ")}${isDefault ? " (default)" : ""}`;
      select.append(new Option(name, isDefault ? "" : entry.alias, isDefault, isDefault));
    }
  }
}

async function submitAction(item, job, kind, form) {
  const error = $(".action-error", item);
  clearError(error, item);
  const submit = $("button[type=submit]", form);
  submit.disabled = true;
  try {
    const result = await apiJson(jobPath(job.job_id, FORMS[kind].path), {
      method: "POST",
      json: FORMS[kind].body(form),
    });
    const queued = result.jobs || [result];
    setState(`${FORMS[kind].label}: queued ${queued.length} job(s)`);
    $(".action-box", item).hidden = true;
    await Promise.all(queued.map(follow));
  } catch (failure) {
    showError(error, failure, item);
  } finally {
    submit.disabled = false;
  }
}

// The piece the job belongs to, parents first, indented by generation; each member shows itself.
async function toggleFamily(item, job, button) {
  const tree = $(".family-tree", item);
  if (!tree.hidden) {
    tree.hidden = true;
    button.setAttribute("aria-expanded", "false");
    return;
  }
  const error = $(".action-error", item);
  clearError(error, item);
  try {
    const { items } = await apiJson(jobPath(job.job_id, "/family"));
    const depth = new Map();
    tree.replaceChildren();
    for (const member of items) {
      const parent = member.lineage && member.lineage.parent_id;
      depth.set(member.job_id, depth.has(parent) ? depth.get(parent) + 1 : 0);
      const li = document.createElement("li");
      li.style.setProperty("--depth", depth.get(member.job_id));
      const link = document.createElement("button");
      link.type = "button";
      link.className = "member";
      link.dataset.jobId = member.job_id;
      link.textContent = memberText(member);
      if (member.job_id === job.job_id) link.setAttribute("aria-current", "true");
      link.addEventListener("click", () => focusJob(member.job_id));
      li.append(link);
      tree.append(li);
    }
    tree.hidden = false;
    button.setAttribute("aria-expanded", "true");
  } catch (failure) {
    showError(error, failure, item);
  }
}

function memberText(member) {
  const lineage = member.lineage || {};
  const what = lineage.parent_id ? [lineage.operation, lineage.stem].filter(Boolean).join(" ") : "source";
  const seconds = member.audio ? `${member.audio.duration_s} s` : member.status;
  return `${what} · ${member.prompt.slice(0, 60)} · ${seconds} · ${member.job_id.slice(0, 8)}`;
}

function focusJob(jobId) {
  const target = `#job=${jobId}`;
  if (location.hash === target) showFocused();
  else location.hash = target; // the page's hashchange handler shows it
}

function descendantsOf(jobId, family) {
  const found = new Set([jobId]);
  for (const member of family) {
    const parent = member.lineage && member.lineage.parent_id;
    if (parent && found.has(parent)) found.add(member.job_id);
  }
  found.delete(jobId);
  return family.filter((member) => found.has(member.job_id));
}

async function deleteJob(item, job) {
  const error = $(".action-error", item);
  clearError(error, item);
  try {
    const { items } = await apiJson(jobPath(job.job_id, "/family"));
    const children = descendantsOf(job.job_id, items);
    const name = `"${job.prompt.slice(0, 80)}"`;
    const kinds = [...new Set(children.map((c) => c.lineage.stem ? "stems" : c.lineage.operation))].join(", ");
    const question = children.length
      ? `${name} has ${children.length} generation(s) derived from it (${kinds}). Delete it and all of them, with their audio?`
      : `Delete ${name} and its audio? This cannot be undone.`;
    if (!confirm(question)) return;
    const query = children.length ? "?delete_family=true" : "";
    const path = `/api/v1/generations/${encodeURIComponent(job.job_id)}${query}`;
    const { deleted } = await apiJson(path, { method: "DELETE" });
    for (const id of deleted) view.selected.delete(id);
    showSelection();
    setState(`deleted ${deleted.length} generation(s)`);
    await refreshHistory();
  } catch (failure) {
    showError(error, failure, item);
  }
}
