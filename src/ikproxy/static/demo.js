// The ikproxy demo page: submit a run, draw its progress smoothly from the ETA,
// show the result or the error in words. Uses only ikproxy.js, served by the proxy.

import { IncompleteStream, ProgressEstimate, StreamError, formatDuration, run } from "./api/ikproxy.js";

const config = JSON.parse(document.getElementById("demo-config").textContent);
const $ = (id) => document.getElementById(id);

const ui = {
  form: $("form"),
  tabs: $("tabs"),
  description: $("tool-description"),
  promptField: $("prompt-field"),
  prompt: $("prompt"),
  counter: $("prompt-counter"),
  promptError: $("prompt-error"),
  examples: $("examples"),
  imageField: $("image-field"),
  image: $("image"),
  dropzone: $("dropzone"),
  thumb: $("thumb"),
  dropText: $("drop-text"),
  useResult: $("use-result"),
  imageError: $("image-error"),
  seedField: $("seed-field"),
  seed: $("seed"),
  strengthField: $("strength-field"),
  strength: $("strength"),
  runButton: $("run"),
  cancel: $("cancel"),
  output: $("output"),
  status: $("status"),
  eta: $("eta"),
  bar: $("bar"),
  fill: $("bar-fill"),
  placeholder: $("placeholder"),
  placeholderText: $("placeholder-text"),
  result: $("result-image"),
  error: $("error"),
  errorTitle: $("error-title"),
  errorMessage: $("error-message"),
  errorHint: $("error-hint"),
  errorDetail: $("error-detail"),
  meta: $("meta"),
  metaText: $("meta-text"),
  download: $("download"),
  events: $("events"),
  logCount: $("log-count"),
};

const STATES = {
  PENDING: "Queued",
  SENDING: "Sending",
  BLOCKING: "Waiting for the deployment",
  STARTED: "Running",
  SUCCESS: "Finishing",
};

// What an error code means, in words, for the title of the error box.
const ERROR_TITLES = {
  invalid_parameter: "The request was refused",
  invalid_input: "The image was refused",
  bad_request: "The request was refused",
  unsupported_media_type: "That file is not an image the server accepts",
  payload_too_large: "The upload is too large",
  unauthenticated: "Sign-in required",
  forbidden: "Not allowed",
  rate_limited: "Too many requests: slow down a little",
  upstream_failed: "The deployment is unavailable",
  unauthorized: "The deployment refused the server's credentials",
  workflow_failed: "The run failed",
  timeout: "The run took too long",
  run_lost: "The run was lost with the server running it",
  internal: "Something went wrong on the server",
  network_error: "The server could not be reached",
  invalid_stream: "The server sent something unexpected",
  incomplete_stream: "The connection was lost before the result arrived",
};

// What to do about it, where the person at the page can do something.
const ERROR_HINTS = {
  rate_limited: "Wait a few seconds, then try again.",
  payload_too_large: "Try a smaller image.",
  unsupported_media_type: "Use a PNG, JPEG, WebP, GIF, BMP or TIFF image.",
  upstream_failed: "Try again in a moment. The server log has the details under the request id below.",
  unauthorized: "The server's deployment token needs fixing; the server log has the details.",
  workflow_failed: "Try again, or with other input. The server log has the details under the request id below.",
  timeout: "Try again, perhaps with a smaller input.",
  run_lost: "Try again: another server will run it.",
  internal: "The server log has the details under the request id below.",
  network_error: "Check that the server is running and your connection is up, then try again.",
  incomplete_stream: "Try again: the run may have been cut by a proxy or a network change.",
};

let tool = config.tools[0];
let file = null; // the image to upload
let lastResult = null; // the last generated picture, as a Blob, to feed the edges tool
let resultUrl = null;
let thumbUrl = null;
let controller = null;
let estimate = null;
let frame = 0;
let started = 0;
let eventCount = 0;

// -- tools (tabs) -------------------------------------------------------------------

function selectTool(next) {
  tool = next;
  for (const tab of ui.tabs.children) {
    const selected = tab.dataset.tool === tool.id;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
  }
  ui.description.textContent = tool.description;
  ui.promptField.hidden = tool.prompt === "none";
  ui.imageField.hidden = tool.image === "none";
  ui.seedField.hidden = tool.id !== "generate";
  ui.strengthField.hidden = tool.id !== "edges";
  ui.runButton.textContent = tool.label;
  ui.useResult.hidden = !lastResult || file === lastResult || tool.image === "none";
  ui.prompt.placeholder = tool.prompt === "optional" ? "Optional: a prompt for the deployment" : "A lighthouse at dawn, mist over the sea";
  ui.examples.hidden = tool.prompt === "none" || config.backend !== "local";
  clearFieldErrors();
}

for (const candidate of config.tools) {
  const tab = document.createElement("button");
  tab.type = "button";
  tab.className = "tab";
  tab.setAttribute("role", "tab");
  tab.dataset.tool = candidate.id;
  tab.textContent = candidate.label;
  tab.addEventListener("click", () => selectTool(candidate));
  ui.tabs.append(tab);
}
ui.tabs.addEventListener("keydown", (event) => {
  if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
  const index = config.tools.indexOf(tool) + (event.key === "ArrowRight" ? 1 : -1);
  const next = config.tools[(index + config.tools.length) % config.tools.length];
  selectTool(next);
  ui.tabs.querySelector(`[data-tool="${next.id}"]`).focus();
});

$("backend-label").textContent = config.backend === "local" ? "Local demo deployment" : "Ikomia SCALE deployment";
$("backend-note").textContent = config.backend === "local" ? "no account, no network" : "";

// -- the prompt -----------------------------------------------------------------------

function updateCounter() {
  const length = ui.prompt.value.length;
  ui.counter.textContent = `${length} / ${config.maxPromptLength}`;
  ui.counter.classList.toggle("over", length > config.maxPromptLength);
}
ui.prompt.addEventListener("input", () => {
  updateCounter();
  ui.promptError.hidden = true;
  ui.prompt.removeAttribute("aria-invalid");
});
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.metaKey || event.ctrlKey)) ui.form.requestSubmit();
});
ui.examples.addEventListener("click", (event) => {
  const chip = event.target.closest(".chip");
  if (!chip) return;
  ui.prompt.value = chip.textContent;
  updateCounter();
  ui.prompt.focus();
});
updateCounter();

// -- the image ------------------------------------------------------------------------

function setFile(next, name) {
  file = next;
  if (thumbUrl) URL.revokeObjectURL(thumbUrl);
  thumbUrl = file ? URL.createObjectURL(file) : null;
  ui.thumb.hidden = !file;
  if (file) ui.thumb.src = thumbUrl;
  const line = document.createElement("span");
  const strong = document.createElement("strong");
  const small = document.createElement("small");
  if (file) {
    strong.textContent = name || file.name || "image";
    line.append(strong);
    small.textContent = `${formatBytes(file.size)} · choose another or drop it here`;
  } else {
    strong.textContent = "Choose an image";
    line.append(strong, " or drop it here");
    small.textContent = "PNG, JPEG, WebP, GIF, BMP or TIFF, up to 10 MB";
  }
  ui.dropText.replaceChildren(line, small);
  ui.imageError.hidden = true;
  ui.dropzone.classList.remove("invalid");
  ui.useResult.hidden = !lastResult || file === lastResult || tool.image === "none";
}

function formatBytes(size) {
  if (size < 1024) return `${size} bytes`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(0)} KB`;
  return `${(size / 1024 / 1024).toFixed(1)} MB`;
}

ui.image.addEventListener("change", () => setFile(ui.image.files[0] ?? null));
for (const name of ["dragenter", "dragover"]) {
  ui.dropzone.addEventListener(name, (event) => {
    event.preventDefault();
    ui.dropzone.classList.add("dragging");
  });
}
for (const name of ["dragleave", "drop"]) {
  ui.dropzone.addEventListener(name, () => ui.dropzone.classList.remove("dragging"));
}
ui.dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  const dropped = event.dataTransfer?.files?.[0];
  if (dropped) setFile(dropped);
});
ui.useResult.addEventListener("click", () => setFile(lastResult, "the last generated picture"));

// -- validation -------------------------------------------------------------------------

function clearFieldErrors() {
  ui.promptError.hidden = true;
  ui.imageError.hidden = true;
  ui.prompt.removeAttribute("aria-invalid");
  ui.dropzone.classList.remove("invalid");
}

function fieldError(element, message, focus) {
  element.textContent = message;
  element.hidden = false;
  focus?.focus();
}

/** Check what only the browser can check; the server checks the rest (its 400s are shown too). */
function validate() {
  clearFieldErrors();
  if (tool.prompt === "required" && !ui.prompt.value.trim()) {
    ui.prompt.setAttribute("aria-invalid", "true");
    fieldError(ui.promptError, "Write a prompt first.", ui.prompt);
    return false;
  }
  if (tool.image === "required" && !file) {
    ui.dropzone.classList.add("invalid");
    fieldError(ui.imageError, "Choose an image first.");
    return false;
  }
  if (tool.prompt === "optional" && tool.image === "optional" && !ui.prompt.value.trim() && !file) {
    fieldError(ui.promptError, "Write a prompt, choose an image, or both.", ui.prompt);
    return false;
  }
  return true;
}

// -- the progress bar -------------------------------------------------------------------

function setStatus(status, text) {
  ui.output.dataset.status = status;
  ui.status.textContent = text;
}

function draw() {
  const now = performance.now();
  const fraction = estimate.fractionAt(now);
  ui.fill.style.transform = `scaleX(${fraction})`;
  ui.bar.setAttribute("aria-valuenow", String(Math.floor(fraction * 100)));
  const remaining = estimate.remainingAt(now);
  ui.bar.classList.toggle("waiting", remaining === null && fraction === 0);
  if (remaining === null) ui.eta.textContent = eventCount ? "Estimating time left…" : "";
  else if (remaining < 1000) ui.eta.textContent = "Less than a second left";
  else ui.eta.textContent = `About ${formatDuration(remaining)} left`;
}

function animate() {
  draw();
  frame = requestAnimationFrame(animate);
}

function stopAnimation() {
  cancelAnimationFrame(frame);
  frame = 0;
  ui.bar.classList.remove("waiting");
}

// -- the event log ------------------------------------------------------------------------

function logEvent(kind, text) {
  eventCount += 1;
  const item = document.createElement("li");
  const time = document.createElement("span");
  time.className = "t";
  time.textContent = `${((performance.now() - started) / 1000).toFixed(2)} s`;
  const type = document.createElement("span");
  type.className = `k-${kind}`;
  type.textContent = kind;
  const detail = document.createElement("span");
  detail.className = "d";
  detail.textContent = text;
  item.append(time, type, detail);
  ui.events.append(item);
  ui.events.scrollTop = ui.events.scrollHeight;
  ui.logCount.textContent = `${eventCount} event${eventCount === 1 ? "" : "s"}`;
}

function describe(progress) {
  const parts = [progress.state];
  if (progress.fraction !== null) parts.push(`${Math.round(progress.fraction * 100)}%`);
  const [lower, upper] = progress.eta;
  if (upper !== null) parts.push(`eta ${lower === upper || lower === null ? "" : `${lower}–`}${upper} ms`);
  if (progress.done) parts.push(`${progress.results.length} output(s)`);
  return parts.join(" · ");
}

// -- running ------------------------------------------------------------------------------

function params() {
  const values = {};
  if (tool.prompt !== "none" && ui.prompt.value.trim()) values.prompt = ui.prompt.value;
  if (tool.id === "generate" && ui.seed.value !== "") values.seed = ui.seed.value;
  if (tool.id === "edges" && ui.strength.value !== "" && ui.strength.value !== "1") values.strength = ui.strength.value;
  return values;
}

function showError(error) {
  ui.result.hidden = true;
  ui.placeholder.hidden = true;
  ui.meta.hidden = true;
  ui.error.hidden = false;
  if (error instanceof StreamError || error instanceof IncompleteStream) {
    ui.errorTitle.textContent = ERROR_TITLES[error.code] ?? "The run failed";
    ui.errorMessage.textContent = sentence(error.message);
    ui.errorHint.textContent = ERROR_HINTS[error.code] ?? "";
    ui.errorHint.hidden = !ui.errorHint.textContent;
    const detail = [`code ${error.code}`];
    if (error.status) detail.push(`HTTP ${error.status}`);
    if (error.requestId) detail.push(`request ${error.requestId}`);
    ui.errorDetail.textContent = detail.join(" · ");
  } else {
    ui.errorTitle.textContent = "Something went wrong in the page";
    ui.errorMessage.textContent = sentence(String(error?.message ?? error));
    ui.errorHint.hidden = true;
    ui.errorDetail.textContent = "";
  }
}

function sentence(text) {
  if (!text) return "";
  const first = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}

async function submit() {
  if (controller || !validate()) return;
  controller = new AbortController();
  estimate = new ProgressEstimate();
  started = performance.now();
  eventCount = 0;
  ui.events.replaceChildren();
  ui.logCount.textContent = "0 events";
  ui.runButton.disabled = true;
  ui.runButton.textContent = "Running…";
  ui.cancel.hidden = false;
  ui.error.hidden = true;
  ui.meta.hidden = true;
  ui.result.hidden = true;
  ui.placeholder.hidden = false;
  ui.placeholderText.textContent = tool.image === "none" ? "Painting…" : "Working on your image…";
  setStatus("running", "Submitting…");
  animate();
  if (window.matchMedia("(max-width: 820px)").matches) ui.output.scrollIntoView({ block: "start" });

  const format = ui.form.elements.format.value;
  try {
    const results = await run(tool.endpoint, params(), {
      image: tool.image !== "none" ? file : null,
      format,
      signal: controller.signal,
      onProgress(progress) {
        estimate.update(progress);
        logEvent(progress.done ? "result" : "progress", describe(progress));
        if (!progress.done) setStatus("running", STATES[progress.state] ?? progress.state);
      },
    });
    await showResult(results, format);
  } catch (error) {
    stopAnimation();
    if (error?.name === "AbortError") {
      setStatus("idle", "Cancelled");
      ui.eta.textContent = "";
      ui.placeholder.hidden = false;
      ui.placeholderText.textContent = "Cancelled: the run was stopped on the server too.";
    } else {
      const failure = error instanceof StreamError || error instanceof IncompleteStream;
      logEvent("error", failure ? `${error.code}: ${error.message}` : String(error));
      const status = error?.status;
      setStatus("error", status ? `${status < 500 ? "Refused" : "Failed"} (HTTP ${status})` : "Failed");
      ui.eta.textContent = "";
      showError(error);
    }
  } finally {
    controller = null;
    ui.runButton.disabled = false;
    ui.runButton.textContent = tool.label;
    ui.cancel.hidden = true;
  }
}

async function showResult(results, format) {
  const image = results.firstImage();
  const elapsed = performance.now() - started;
  const took = elapsed < 1000 ? `${Math.max(1, Math.round(elapsed))} ms` : `${(elapsed / 1000).toFixed(1)} s`;
  if (image === null) {
    throw new StreamError("invalid_stream", "the run finished without an image output");
  }
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  const blob = await image.fetchBlob(); // downloaded if the image came by reference
  resultUrl = URL.createObjectURL(blob);
  ui.result.src = resultUrl;
  await ui.result.decode().catch(() => {});
  stopAnimation();
  draw();
  ui.eta.textContent = "";
  ui.placeholder.hidden = true;
  ui.result.hidden = false;
  setStatus("done", `Done in ${took}`);
  ui.result.classList.toggle("small", ui.result.naturalWidth > 0 && ui.result.naturalWidth < 256);
  const size = ui.result.naturalWidth ? ` · ${ui.result.naturalWidth}×${ui.result.naturalHeight}` : "";
  ui.metaText.textContent = `${image.format ?? "image"}${size} · ${formatBytes(blob.size)} · via ${format === "ndjson" ? "NDJSON" : "SSE"}`;
  ui.download.href = resultUrl;
  ui.download.download = `ikproxy-${tool.id}.${(image.format ?? "png").toLowerCase()}`;
  ui.meta.hidden = false;
  if (tool.image === "none") {
    lastResult = blob;
    ui.useResult.hidden = true;
  }
}

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});
ui.cancel.addEventListener("click", () => controller?.abort());

// -- footer: the server's version ------------------------------------------------------------

fetch("api/health")
  .then((response) => (response.ok ? response.json() : null))
  .then((health) => {
    if (health) $("version").textContent = `ikproxy ${health.version} · protocol ${health.protocol}`;
  })
  .catch(() => {});

selectTool(tool);
