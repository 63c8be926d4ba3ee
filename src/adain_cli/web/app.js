// The page of `adain serve`. Photo mode: every change asks POST /v1/stylize again; the server's
// caches make a change of strength or weights cost one decoder pass. Camera mode: frames go over
// the WebSocket /v1/live and come back stylized; a change is one settings message. No framework,
// no build step.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const auth = token ? { Authorization: "Bearer " + token } : {};
const withToken = (url) => (token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url);
const $ = (id) => document.getElementById(id);
const state = { content: null, library: new Set(), own: [], weights: new Map(), mode: "photo" };
let pending = null;
let timer = null;

// --- the paintings and settings both modes share -----------------------------------------------

function chosenStyles() {
  return [...[...state.library].map((name) => ({ key: "library:" + name, label: name })),
          ...state.own.map((file, i) => ({ key: "own:" + i, label: file.name, file }))];
}

const weightsOf = (styles) => styles.map((style) => state.weights.get(style.key) ?? 1);
const colourMode = () => document.querySelector('input[name="colour"]:checked').value;

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
    input.addEventListener("input", () => { state.weights.set(style.key, Number(input.value)); changed(); });
    box.append(label, input);
  }
}

// A setting changed: the photo is painted again, or the camera's stream gets the new settings.
function changed() {
  if (state.mode === "camera") live.settingsChanged();
  else schedule();
}

// The fields of POST /v1/stylize for this content with the current settings.
function stylizeForm(content, contentSize, format) {
  const form = new FormData();
  form.append("content", content);
  const styles = chosenStyles();
  for (const style of styles) {
    if (style.file) form.append("style", style.file);
    else form.append("style_name", style.label);
  }
  if (styles.length > 1) form.append("weights", weightsOf(styles).join(","));
  form.append("alpha", $("alpha").value);
  const colour = colourMode();
  if (colour !== "style") form.append(colour, "true");
  form.append("content_size", String(contentSize));
  if (format) form.append("format", format);
  return form;
}

// POST /v1/stylize: the image as a blob, or an Error carrying the server's one-line message.
async function postStylize(form, signal) {
  const response = await fetch("/v1/stylize", { method: "POST", body: form, headers: auth, signal });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({ error: response.statusText }));
    throw new Error(problem.error || "failed");
  }
  return { blob: await response.blob(), response };
}

// --- photo mode --------------------------------------------------------------------------------

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(stylize, 120);
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function stylize() {
  if (!state.content || chosenStyles().length === 0) { say("Pick a photo and a painting."); return; }
  const form = stylizeForm(state.content, $("size").value);
  form.append("work_size", $("work-size").value);
  if (pending) pending.abort();
  pending = new AbortController();
  say("Painting…");
  try {
    const { blob, response } = await postStylize(form, pending.signal);
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
    if (problem.name !== "AbortError") say(problem.message || String(problem), true);
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
  changed();
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
      changed();
    });
    $("library").append(button);
  }
}

// --- camera mode -------------------------------------------------------------------------------

const FRAME_QUALITY = 0.8;   // JPEG quality of the frames sent: small and good enough to paint
const MAX_IN_FLIGHT = 2;     // one being painted, one waiting: the server keeps only the newest
const SECOND_AFTER_MS = 40;  // a second frame goes out only once the first has been away this long
const LOST_AFTER_MS = 4000;  // a frame unanswered this long (or 3 x the server's p99) was not taken
const FPS_WINDOW_MS = 3000;  // the page's own answers per second, over this window

const live = {
  stream: null,          // the camera's MediaStream
  socket: null,          // the WebSocket to /v1/live
  limits: {},            // from the server's "ready" message
  uploaded: new Set(),   // own paintings this socket has (names); a new socket starts empty
  names: new WeakMap(),  // own painting (File) -> the name it is uploaded under
  nextName: 0,
  inFlight: [],          // send times of frames not answered yet, oldest first
  lostAfter: LOST_AFTER_MS,
  streaming: false,      // the settings sent last name a painting: frames may go
  lastSent: 0,
  encoding: false,
  answers: [],           // arrival times of recent answers
  shown: 0,              // sequence numbers: a late decode never replaces a newer picture
  received: 0,
  ticker: null,
  settingsTimer: null,
  sending: Promise.resolve(),
  idleClosed: false,
  frameError: false,
  canvas: document.createElement("canvas"),

  status(text, isError = false) {
    $("live-status").textContent = text;
    $("live-status").classList.toggle("error", isError);
  },

  async start() {
    $("retry").hidden = true;
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      this.fail("The camera works only on a secure page: open this page as http://127.0.0.1 or " +
                "http://localhost on the machine that runs adain serve, or through https.");
      return;
    }
    this.status("Starting the camera…");
    try {
      await this.openCamera($("camera").value || null);
    } catch (problem) {
      this.fail(this.cameraProblem(problem), true);
      return;
    }
    if (state.mode !== "camera") { this.stopCamera(); return; }  // left Camera mode while it started
    await this.listCameras();
    if (!this.socket) this.connect();
    clearInterval(this.ticker);
    this.ticker = setInterval(() => { this.pump(); this.showRate(); }, 50);
  },

  async openCamera(deviceId) {
    this.stopCamera();  // first: a phone may not open a second camera while one is open
    const video = deviceId ? { deviceId: { exact: deviceId } } : { facingMode: "user" };
    const stream = await navigator.mediaDevices.getUserMedia({ video, audio: false });
    this.stopCamera();  // one that another start opened meanwhile
    this.stream = stream;
    const track = this.stream.getVideoTracks()[0];
    // Laptop cameras often report no facing mode at all; they face the user, as "user" ones do.
    const facing = track.getSettings().facingMode;
    const mirrored = !facing || facing === "user";
    const element = $("camera-video");
    element.srcObject = this.stream;
    await element.play().catch(() => {});  // autoplay of a muted video: play() may only report it
    $("pictures").hidden = false;
    $("pictures").classList.toggle("mirrored", mirrored);
    // Until the first answer, the empty output box takes the camera's shape.
    if (element.videoWidth) $("live-output").style.aspectRatio = element.videoWidth + " / " + element.videoHeight;
    $("still").disabled = false;
  },

  cameraProblem(problem) {
    switch (problem.name) {
      case "NotAllowedError":
      case "SecurityError":
        return "The camera permission was refused. Allow the camera for this page (the icon in the " +
               "address bar), then try again.";
      case "NotFoundError":
      case "OverconstrainedError":
        return "No camera found. Connect one, then try again.";
      case "NotReadableError":
        return "The camera is in use by another program, or the system refused it. Close the other " +
               "program, then try again.";
      default:
        return "The camera could not start: " + (problem.message || problem.name) + ".";
    }
  },

  fail(text, retry = false) {
    this.status(text, true);
    $("pictures").hidden = true;
    $("still").disabled = true;
    $("retry").hidden = !retry;
  },

  async listCameras() {
    const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
    const select = $("camera");
    const current = this.stream?.getVideoTracks()[0]?.getSettings().deviceId;
    select.replaceChildren(...devices.map((device, i) => {
      const option = new Option(device.label || "Camera " + (i + 1), device.deviceId);
      option.selected = device.deviceId === current;
      return option;
    }));
    select.disabled = devices.length < 2;
  },

  async switchCamera() {
    try {
      await this.openCamera($("camera").value);
    } catch (problem) {
      this.fail(this.cameraProblem(problem), true);
    }
  },

  stopCamera() {
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = null;
    $("camera-video").srcObject = null;
  },

  stop() {
    clearInterval(this.ticker);
    this.ticker = null;
    this.stopCamera();
    this.disconnect();
    $("reconnect").hidden = true;
    $("retry").hidden = true;
  },

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + "/v1/live" + (token ? "?token=" + encodeURIComponent(token) : "");
  },

  connect() {
    this.disconnect();
    $("reconnect").hidden = true;
    this.idleClosed = false;
    this.uploaded = new Set();
    this.inFlight = [];
    this.streaming = false;
    this.lostAfter = LOST_AFTER_MS;
    for (const id of ["fps-server", "fps-page"]) $(id).textContent = "0.0";
    const socket = new WebSocket(this.url());
    socket.binaryType = "blob";
    socket.onopen = () => { socket.opened = true; };
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) => this.closed(socket, event);
    this.socket = socket;
    this.status("Connecting…");
  },

  disconnect() {
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000);
  },

  closed(socket, event) {
    if (socket !== this.socket) return;  // a socket the page closed itself
    this.socket = null;
    this.inFlight = [];
    this.idleClosed = event.code === 1000;
    const why = {
      1000: "the server closed the stream after a while without frames",
      1001: "the server is shutting down",
      1012: "the server is shutting down",
      1008: "the server closed the stream after too many bad messages",
    }[event.code] || (socket.opened ? "the connection was lost"
      : "the server could not be reached, or refused the stream (busy with other streams, a wrong token, " +
        "or a page of another site)") +
      (event.reason ? " (" + event.reason + ")" : "");
    this.status("Not connected: " + why + ".", !this.idleClosed);
    $("reconnect").hidden = false;
  },

  receive(data) {
    if (typeof data !== "string") { this.show(data); return; }
    let message;
    try { message = JSON.parse(data); } catch { return; }
    if (message.type === "ready") this.ready(message);
    else if (message.type === "stats") this.stats(message);
    else if (message.type === "error") {
      if (message.frame != null) this.inFlight.shift();  // the answer to a frame, as an error
      this.frameError = message.frame != null;  // said until a frame comes back; others until a change
      this.status("The server: " + message.error, true);
    }
  },

  ready(message) {
    this.limits = message.limits || {};
    this.status(chosenStyles().length ? "Live." : "Pick a painting to see the camera stylized.");
    this.settingsChanged(0);
  },

  settingsChanged(delay = 60) {
    if (!this.socket && this.idleClosed && this.stream) { this.connect(); return; }  // ready sends them
    clearTimeout(this.settingsTimer);
    this.settingsTimer = setTimeout(() => {
      this.sending = this.sending.then(() => this.sendSettings())
        .catch((problem) => this.status("The settings could not be sent: " + (problem.message || problem), true));
    }, delay);
  },

  // Own paintings go up once per socket, each before the settings message that names it.
  async sendSettings() {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    const styles = chosenStyles();
    const fresh = styles.filter((style) => style.file && !this.uploaded.has(this.names.get(style.file)));
    if (this.uploaded.size + fresh.length > (this.limits.max_styles ?? Infinity)) {
      this.connect();  // a stream keeps a few own paintings at most: a new one starts empty
      return;
    }
    const names = [];
    for (const style of styles) names.push(style.file ? await this.upload(socket, style.file) : style.label);
    const colour = colourMode();
    socket.send(JSON.stringify({
      type: "settings",
      style_name: names,
      weights: styles.length > 1 ? weightsOf(styles) : null,  // null: a single painting, no mix
      alpha: Number($("alpha").value),
      preserve_color: colour === "preserve_color",
      luminance_only: colour === "luminance_only",
      content_size: Number($("working-size").value),
      format: "jpeg",
    }));
    this.streaming = names.length > 0;  // frames follow their settings, never precede them
    if (styles.length) this.status("Live.");
    else this.status("Pick a painting to see the camera stylized.");
  },

  async upload(socket, file) {
    if (!this.names.has(file)) this.names.set(file, "own-" + this.nextName++ + "-" + file.name);
    const name = this.names.get(file);
    if (!this.uploaded.has(name)) {
      const data = await new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
        reader.onerror = () => reject(reader.error);
        reader.readAsDataURL(file);
      });
      socket.send(JSON.stringify({ type: "style", name, data }));
      this.uploaded.add(name);
    }
    return name;
  },

  // Send a frame when fewer than two are away (the second only after a short while), never faster
  // than the server's per-stream rate: frames never pile up anywhere.
  pump() {
    const socket = this.socket;
    const video = $("camera-video");
    if (!socket || socket.readyState !== WebSocket.OPEN || this.encoding || !this.stream) return;
    if (!video.videoWidth || !this.streaming) return;
    const now = performance.now();
    this.inFlight = this.inFlight.filter((sent) => now - sent < this.lostAfter);
    if (this.inFlight.length >= MAX_IN_FLIGHT) return;
    if (this.inFlight.length && now - this.inFlight[this.inFlight.length - 1] < SECOND_AFTER_MS) return;
    if (this.limits.max_fps && now - this.lastSent < 1000 / this.limits.max_fps) return;
    this.encoding = true;
    this.lastSent = now;
    this.frameBlob(video, Number($("working-size").value), (blob) => {
      this.encoding = false;
      if (!blob || socket !== this.socket || socket.readyState !== WebSocket.OPEN) return;
      socket.send(blob);
      this.inFlight.push(performance.now());
    });
  },

  // The camera's picture as a JPEG whose shorter side is the working size (never enlarged).
  frameBlob(video, size, done) {
    const scale = Math.min(1, size / Math.min(video.videoWidth, video.videoHeight));
    this.canvas.width = Math.round(video.videoWidth * scale);
    this.canvas.height = Math.round(video.videoHeight * scale);
    this.canvas.getContext("2d").drawImage(video, 0, 0, this.canvas.width, this.canvas.height);
    this.canvas.toBlob(done, "image/jpeg", FRAME_QUALITY);
  },

  async show(blob) {
    this.inFlight.shift();
    if (this.frameError) { this.frameError = false; this.status("Live."); }
    this.answers.push(performance.now());
    const sequence = ++this.received;
    this.pump();
    const picture = await createImageBitmap(blob).catch(() => null);
    if (!picture || sequence < this.shown) return;
    this.shown = sequence;
    const output = $("live-output");
    if (output.width !== picture.width || output.height !== picture.height) {
      output.width = picture.width;
      output.height = picture.height;
    }
    output.getContext("2d").drawImage(picture, 0, 0);
    picture.close();
  },

  showRate() {
    const now = performance.now();
    while (this.answers.length && now - this.answers[0] > FPS_WINDOW_MS) this.answers.shift();
    $("fps-page").textContent = (this.answers.length / (FPS_WINDOW_MS / 1000)).toFixed(1);
  },

  stats(message) {
    const latency = message.latency_ms || {};
    const ms = (value) => (value == null ? "–" : Math.round(value) + " ms");
    $("fps-server").textContent = Number(message.fps || 0).toFixed(1);
    $("latency").textContent = ms(latency.p50) + " / " + ms(latency.p99);
    $("dropped").textContent = String(message.dropped ?? 0);
    this.lostAfter = Math.max(LOST_AFTER_MS, 3 * (latency.p99 || 0));
  },

  // The current camera frame at its own size, through POST /v1/stylize, offered for download.
  async still() {
    const video = $("camera-video");
    if (!video.videoWidth || chosenStyles().length === 0) {
      $("still-status").textContent = "Pick a painting first.";
      return;
    }
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    const frame = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    $("still").disabled = true;
    $("still-status").textContent = "Painting the still…";
    try {
      const { blob } = await postStylize(stylizeForm(new File([frame], "still.png", { type: "image/png" }), 0, "png"));
      const link = $("still-link");
      if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
      link.href = URL.createObjectURL(blob);
      link.hidden = false;
      $("still-status").textContent = "The still is ready (" + canvas.width + "×" + canvas.height + ").";
    } catch (problem) {
      $("still-status").textContent = "The still failed: " + (problem.message || problem);
    } finally {
      $("still").disabled = !this.stream;
    }
  },
};

function setMode(mode) {
  if (mode === state.mode) return;
  state.mode = mode;
  for (const element of document.querySelectorAll("[data-mode]")) element.hidden = element.dataset.mode !== mode;
  if (mode === "camera") live.start();
  else { live.stop(); schedule(); }
}

$("content").addEventListener("change", (event) => setContent(event.target.files[0]));
$("styles").addEventListener("change", (event) => addOwn([...event.target.files]));
$("alpha").addEventListener("input", () => { $("alpha-value").value = Number($("alpha").value).toFixed(2); changed(); });
$("size").addEventListener("change", schedule);
$("work-size").addEventListener("change", schedule);
$("working-size").addEventListener("change", changed);
for (const radio of document.querySelectorAll('input[name="colour"]')) radio.addEventListener("change", changed);
for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => { if (radio.checked) setMode(radio.value); });
}
$("camera").addEventListener("change", () => live.switchCamera());
$("retry").addEventListener("click", () => live.start());
$("reconnect").addEventListener("click", () => live.connect());
$("still").addEventListener("click", () => live.still());
dropZone($("content-drop"), (files) => setContent(files[0]));
dropZone($("style-drop"), addOwn);
loadLibrary();
