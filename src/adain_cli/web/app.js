// The page of `adain serve`: every change asks POST /v1/stylize again; the server's caches make
// a change of strength or weights cost one decoder pass. No framework, no build step.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const auth = token ? { Authorization: "Bearer " + token } : {};
const withToken = (url) => (token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url);
const $ = (id) => document.getElementById(id);
const state = { content: null, library: new Set(), own: [], weights: new Map() };
let pending = null;
let timer = null;

function chosenStyles() {
  return [...[...state.library].map((name) => ({ key: "library:" + name, label: name })),
          ...state.own.map((file, i) => ({ key: "own:" + i, label: file.name, file }))];
}

function renderWeights() {
  const box = $("weights");
  box.replaceChildren();
  const styles = chosenStyles();
  if (styles.length < 2) return;
  for (const style of styles) {
    const id = "w-" + style.key.replace(/[^a-z0-9]/gi, "_");
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = "Weight of " + style.label;
    const input = document.createElement("input");
    Object.assign(input, { type: "range", id, min: "0", max: "1", step: "0.05" });
    input.value = String(state.weights.get(style.key) ?? 1);
    input.addEventListener("input", () => { state.weights.set(style.key, Number(input.value)); schedule(); });
    box.append(label, input);
  }
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(stylize, 120);
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function stylize() {
  const styles = chosenStyles();
  if (!state.content || styles.length === 0) { say("Pick a photo and a painting."); return; }
  const form = new FormData();
  form.append("content", state.content);
  for (const style of styles) {
    if (style.file) form.append("style", style.file);
    else form.append("style_name", style.label);
  }
  if (styles.length > 1) form.append("weights", styles.map((s) => state.weights.get(s.key) ?? 1).join(","));
  form.append("alpha", $("alpha").value);
  const colour = document.querySelector('input[name="colour"]:checked').value;
  if (colour !== "style") form.append(colour, "true");
  form.append("content_size", $("size").value);
  form.append("work_size", $("work-size").value);
  if (pending) pending.abort();
  pending = new AbortController();
  say("Painting…");
  try {
    const response = await fetch("/v1/stylize", { method: "POST", body: form, headers: auth, signal: pending.signal });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ error: response.statusText }));
      say(problem.error || "failed", true);
      return;
    }
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const previous = $("result").src;
    $("result").src = url;
    $("result").hidden = false;
    $("download").href = url;
    $("download").hidden = false;
    if (previous.startsWith("blob:")) URL.revokeObjectURL(previous);
    const unsaved = response.headers.get("X-Save-Error");
    say("Done in " + Number(response.headers.get("X-Seconds")).toFixed(2) + " s." +
        (unsaved ? " Not saved on the server: " + unsaved + "." : ""), Boolean(unsaved));
  } catch (problem) {
    if (problem.name !== "AbortError") say(String(problem), true);
  }
}

function setContent(file) {
  if (!file) return;
  state.content = file;
  const preview = $("content-preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  schedule();
}

function addOwn(files) {
  for (const file of files) state.own.push(file);
  const list = $("own-styles");
  list.replaceChildren();
  state.own.forEach((file, i) => {
    const item = document.createElement("li");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "remove";
    remove.setAttribute("aria-label", "remove " + file.name);
    remove.addEventListener("click", () => { state.own.splice(i, 1); addOwn([]); });
    item.append(file.name, remove);
    list.append(item);
  });
  renderWeights();
  schedule();
}

function dropZone(zone, take) {
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    take([...event.dataTransfer.files].filter((f) => f.type.startsWith("image/")));
  });
}

async function loadLibrary() {
  const response = await fetch("/v1/styles", { headers: auth });
  if (!response.ok) return;
  const { styles } = await response.json();
  for (const style of styles) {
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("aria-pressed", "false");
    button.title = style.name;
    const image = document.createElement("img");
    image.src = withToken(style.thumbnail);
    image.alt = style.name;
    button.append(image);
    button.addEventListener("click", () => {
      const on = !state.library.has(style.name);
      if (on) state.library.add(style.name); else state.library.delete(style.name);
      button.setAttribute("aria-pressed", String(on));
      renderWeights();
      schedule();
    });
    $("library").append(button);
  }
}

$("content").addEventListener("change", (event) => setContent(event.target.files[0]));
$("styles").addEventListener("change", (event) => addOwn([...event.target.files]));
$("alpha").addEventListener("input", () => { $("alpha-value").value = Number($("alpha").value).toFixed(2); schedule(); });
$("size").addEventListener("change", schedule);
$("work-size").addEventListener("change", schedule);
for (const radio of document.querySelectorAll('input[name="colour"]')) radio.addEventListener("change", schedule);
dropZone($("content-drop"), (files) => setContent(files[0]));
dropZone($("style-drop"), addOwn);
loadLibrary();
