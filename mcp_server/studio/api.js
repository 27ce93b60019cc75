// Talking to the server: the REST API (/api/v1) with the token when the server has one, errors as the
// problem+json text the API sends (which names the argument), and the API's own schema for form bounds.
"use strict";

const TOKEN_KEY = "dgx-music-token";

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];
export const TERMINAL = ["completed", "failed", "cancelled"];

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export async function api(path, options = {}) {
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

export async function apiJson(path, options = {}) {
  return (await api(path, options)).json();
}

export const jobPath = (jobId, rest = "") => `/api/v1/jobs/${encodeURIComponent(jobId)}${rest}`;

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
export function askForToken() {
  // Several requests may meet the 401 at once: one dialog answers them all.
  tokenPrompt ??= new Promise((resolve) => {
    const dialog = $("#token-dialog");
    $("#token-form").addEventListener(
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
const objectUrls = [];
export async function mediaUrl(path) {
  if (!token()) return path;
  const url = URL.createObjectURL(await (await api(path)).blob());
  objectUrls.push(url);
  return url;
}

export function releaseMedia() {
  for (const url of objectUrls.splice(0)) URL.revokeObjectURL(url);
}

// The request bodies' bounds as the API states them, so an input's min/max/default follow the server.
let schemas = null;
export async function loadSchemas() {
  const spec = await (await fetch("/openapi.json")).json();
  schemas = spec.components.schemas;
}

export function applyBounds(input, schemaName, field) {
  const prop = ((schemas || {})[schemaName] || { properties: {} }).properties[field];
  if (!prop) return;
  const bounds = [prop, ...(prop.anyOf || [])];
  const pick = (key) => bounds.map((b) => b[key]).find((value) => value !== undefined);
  if (pick("minimum") !== undefined) input.min = pick("minimum");
  if (pick("exclusiveMinimum") !== undefined) input.min = pick("exclusiveMinimum");
  if (pick("maximum") !== undefined) input.max = pick("maximum");
  if (prop.default !== undefined && prop.default !== null && input.value === "") input.value = prop.default;
  if (prop.description) input.title = prop.description;
}

// An API failure next to what caused it: the message, and the named fields marked invalid.
export function showError(element, failure, scope = document) {
  element.textContent = failure.message;
  element.hidden = false;
  for (const field of failure.fields || []) {
    const input = $(`[name="${CSS.escape(field)}"]`, scope);
    if (input) input.setAttribute("aria-invalid", "true");
  }
}

export function clearError(element, scope = document) {
  element.hidden = true;
  element.textContent = "";
  for (const input of $$("[aria-invalid]", scope)) input.removeAttribute("aria-invalid");
}

export function setState(text) {
  $("#server-state").textContent = text;
}
