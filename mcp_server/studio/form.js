// The generate form, per model family, from the server's catalogue (GET /api/v1/models): the model picker,
// the chosen model's own parameters with their ranges and defaults, and the audio it can start from.
"use strict";

import { $, $$, apiJson, clearError, showError } from "./api.js";
import { follow } from "./history.js";

const OWN_FIELDS = new Set(["prompt", "duration", "seed"]);
const CUSTOM = "__custom__";
const TASKS = { instrumental: "instrumental", song: "song with lyrics", stems: "stems" };
const listeners = [];
export const models = { catalogue: null, byId: new Map(), byAlias: new Map() };

export async function loadCatalogue() {
  const catalogue = await apiJson("/api/v1/models");
  models.catalogue = catalogue;
  for (const entry of catalogue.models) {
    models.byId.set(entry.id, entry);
    for (const alias of entry.aliases) models.byAlias.set(alias.toLowerCase(), entry);
  }
  const picker = $("#model");
  picker.replaceChildren();
  for (const entry of catalogue.models.filter((m) => m.operations.includes("generate"))) {
    const option = document.createElement("option");
    const isDefault = entry.default_for.includes("generate");
    option.value = isDefault ? "" : entry.alias; // "" = model null: the server's default
    option.textContent = optionText(entry, isDefault);
    option.dataset.modelId = entry.id;
    option.selected = isDefault;
    picker.append(option);
  }
  const custom = document.createElement("option");
  custom.value = CUSTOM;
  custom.textContent = "other: a hub id…";
  picker.append(custom);
  picker.addEventListener("change", modelChanged);
  $("#model-custom").addEventListener("input", modelChanged);
  modelChanged();
}

function optionText(entry, isDefault) {
  const name = entry.operator ? entry.alias.split("/").filter(Boolean).pop() : entry.alias;
  const parts = [`${name} — ${TASKS[entry.task]}, up to ${entry.max_duration_s} s`];
  if (isDefault) parts.push("(default)");
  if (entry.missing_extra) parts.push("· not installed");
  else if (!entry.weights_present) parts.push("· not downloaded");
  return parts.join(" ");
}

// The catalogue entry of the model picked (a typed hub id is MusicGen's unless it names ACE-Step).
export function chosenModel() {
  const picker = $("#model");
  if (picker.value !== CUSTOM) return models.byId.get(picker.selectedOptions[0]?.dataset.modelId) || null;
  const typed = $("#model-custom").value.trim();
  const known = models.byAlias.get(typed.toLowerCase()) || models.byId.get(typed);
  if (known) return known;
  const family = /^ace-step\//i.test(typed) ? "acestep" : "musicgen";
  return models.catalogue.models.find((m) => m.family === family && m.operations.includes("generate"));
}

// Other parts of the page (the history's actions) follow the chosen model.
export function onModelChange(listener) {
  listeners.push(listener);
}

function modelChanged() {
  const picker = $("#model");
  $("#model-custom").hidden = picker.value !== CUSTOM;
  const entry = chosenModel();
  if (!entry) return;
  showHint(entry);
  buildParameterFields(entry);
  const duration = entry.parameters.find((p) => p.name === "duration");
  const input = $("#duration");
  input.min = duration.minimum;
  input.max = duration.maximum;
  const value = Number(input.value);
  if (!input.dataset.touched || value < duration.minimum || value > duration.maximum) input.value = duration.default;
  $("#continue-field").hidden = !entry.operations.includes("continue");
  $("#melody-field").hidden = !entry.melody;
  $("#family-params").open = entry.family === "acestep" || $("#family-params").open;
  showDurationMeaning();
  for (const listener of listeners) listener(entry);
}

function showHint(entry) {
  const hint = $("#model-hint");
  const lines = [`${entry.summary}. Licence: ${entry.licence}.`];
  if (entry.missing_extra) lines.push(entry.missing_extra);
  else if (!entry.weights_present && entry.pull_command)
    lines.push(`Its weights are not on the server yet: run \`${entry.pull_command}\` there (or it downloads them on first use when it can reach huggingface.co).`);
  hint.textContent = lines.join(" ");
  hint.classList.toggle("warn", Boolean(entry.missing_extra || !entry.weights_present));
}

// The chosen model's parameters: lyrics in view, the rest under "Parameters of the model family".
function buildParameterFields(entry) {
  const kept = new Map($$("[data-param]").filter((i) => i.dataset.touched).map((i) => [i.name, i.value]));
  $("#song-fields").replaceChildren();
  $("#param-fields").replaceChildren();
  for (const parameter of entry.parameters) {
    if (OWN_FIELDS.has(parameter.name)) continue;
    const field = parameterField(parameter);
    const input = $("[data-param]", field);
    if (kept.has(parameter.name)) {
      input.value = kept.get(parameter.name);
      input.dataset.touched = "true";
    }
    const prominent = parameter.kind === "string" && !parameter.choices.length;
    $(prominent ? "#song-fields" : "#param-fields").append(field);
  }
  $("#song-fields").hidden = !$("#song-fields").children.length;
}

function parameterField(parameter) {
  const p = document.createElement("p");
  p.className = parameter.kind === "string" && !parameter.choices.length ? "field wide" : "field";
  const id = `param-${parameter.name}`;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = parameter.name.replaceAll("_", " ");
  let input;
  if (parameter.choices.length) {
    input = document.createElement("select");
    if (parameter.nullable) input.append(new Option("model's choice", ""));
    for (const choice of parameter.choices) input.append(new Option(String(choice), String(choice)));
    input.value = parameter.default === null ? "" : String(parameter.default);
  } else if (parameter.kind === "string") {
    input = document.createElement("textarea");
    input.rows = 6;
    if (parameter.maximum !== null) input.maxLength = parameter.maximum;
    input.placeholder = "[verse]\n…\n[chorus]\n…  (empty: an instrumental)";
    input.value = parameter.default ?? "";
  } else {
    input = document.createElement("input");
    input.type = "number";
    input.step = parameter.kind === "integer" ? "1" : "any";
    if (parameter.minimum !== null) input.min = parameter.minimum;
    if (parameter.maximum !== null) input.max = parameter.maximum;
    if (parameter.default !== null) input.value = parameter.default;
    if (parameter.nullable) input.placeholder = parameter.default === null ? "model's choice" : "off";
  }
  Object.assign(input, { id, name: parameter.name });
  input.dataset.param = parameter.kind;
  input.addEventListener("input", () => {
    input.dataset.touched = "true";
    input.removeAttribute("aria-invalid");
  });
  const hint = document.createElement("small");
  hint.id = `hint-${parameter.name}`;
  hint.textContent = parameter.description;
  input.setAttribute("aria-describedby", hint.id);
  p.append(label, input, hint);
  return p;
}

function parameterValue(input) {
  if (input.value === "") return null;
  if (input.dataset.param === "string") return input.value;
  return Number(input.value);
}

function showDurationMeaning() {
  const continuing = !$("#continue-field").hidden && $("#continue_from").value.trim();
  const input = $("#duration");
  $("#duration-label").textContent = `${continuing ? "Seconds to add" : "Duration"} (${input.min}–${input.max} s)`;
}

function formBody() {
  const number = (id) => ($(id).value === "" ? null : Number($(id).value));
  const picker = $("#model");
  const model = picker.value === CUSTOM ? $("#model-custom").value.trim() : picker.value;
  const body = {
    prompt: $("#prompt").value,
    duration: number("#duration"),
    variations: number("#variations") ?? 1,
    seed: number("#seed"),
    model: model || null,
  };
  for (const input of $$("[data-param]")) body[input.name] = parameterValue(input);
  for (const name of ["continue_from", "melody_from"]) {
    const input = document.getElementsByName(name)[0];
    if (!input.closest("[hidden]") && input.value.trim()) body[name] = input.value.trim();
  }
  return body;
}

async function generate(event) {
  event.preventDefault();
  const error = $("#generate-error");
  clearError(error, $("#generate-form"));
  $("#generate-button").disabled = true;
  try {
    const { jobs } = await apiJson("/api/v1/generate", { method: "POST", json: formBody() });
    for (const job of jobs) follow(job);
  } catch (failure) {
    showError(error, failure, $("#generate-form"));
  } finally {
    $("#generate-button").disabled = false;
  }
}

// "Use as start" / "Use as melody" from the history: the job's id becomes the form's audio source.
export function useAudio(job, name) {
  const input = document.getElementsByName(name)[0];
  input.value = job.job_id;
  if (!$("#prompt").value.trim()) $("#prompt").value = job.prompt;
  showDurationMeaning();
  input.scrollIntoView({ block: "center" });
  input.focus();
}

export function startForm() {
  $("#generate-form").addEventListener("submit", generate);
  for (const input of $$("#generate-form [name]")) {
    input.addEventListener("input", () => {
      input.removeAttribute("aria-invalid");
      input.dataset.touched = "true";
    });
  }
  $("#continue_from").addEventListener("input", showDurationMeaning);
  for (const button of $$("button.clear-source")) {
    button.addEventListener("click", () => {
      const input = document.getElementsByName(button.dataset.for)[0];
      input.value = "";
      showDurationMeaning();
    });
  }
}
