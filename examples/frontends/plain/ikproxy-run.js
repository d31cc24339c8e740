// <ikproxy-run>: a prompt, a button that shows the ETA, and the result image.
//
// A standard Web Component: no framework, no build step, no download. It loads
// the browser module from the proxy itself, so it works offline against any
// ikproxy server.
//
//   <script type="module" src="ikproxy-run.js"></script>
//   <ikproxy-run endpoint="/api/run"></ikproxy-run>
//
// Attributes: `endpoint` (default "/api/run"), `api-key` (sent as a Bearer
// token). Events: `ikproxy-result` (detail: the Results), `ikproxy-error`
// (detail: the error).

import { ProgressEstimate, formatDuration, run } from "/api/ikproxy.js";

const template = document.createElement("template");
template.innerHTML = `
  <style>
    :host { display: block; font: 15px/1.5 system-ui, sans-serif; max-width: 520px; }
    form { display: flex; flex-direction: column; gap: 10px; }
    textarea { font: inherit; padding: 8px 10px; border: 1px solid #c9cbd8; border-radius: 8px; min-height: 64px; resize: vertical; }
    button { font: inherit; font-weight: 600; padding: 10px 14px; border: 0; border-radius: 8px;
             background: #4f46e5; color: white; cursor: pointer; font-variant-numeric: tabular-nums; }
    button:disabled { opacity: 0.75; cursor: progress; }
    progress { width: 100%; height: 8px; accent-color: #4f46e5; }
    .error { color: #c2264b; margin: 0; }
    img { width: 100%; border-radius: 8px; }
    [hidden] { display: none; }
  </style>
  <form part="form">
    <textarea part="prompt" placeholder="A lighthouse at dawn" aria-label="Prompt" required></textarea>
    <button part="button" type="submit">Generate</button>
    <progress part="progress" max="1" value="0" hidden></progress>
    <p class="error" part="error" role="alert" hidden></p>
    <img part="image" alt="The result of the run" hidden>
  </form>
`;

class IkproxyRun extends HTMLElement {
  #controller = null;
  #objectUrl = null;

  constructor() {
    super();
    this.attachShadow({ mode: "open" }).append(template.content.cloneNode(true));
    this.shadowRoot.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.generate();
    });
  }

  disconnectedCallback() {
    this.#controller?.abort(); // leaving the page closes the run on the server
  }

  async generate() {
    const $ = (selector) => this.shadowRoot.querySelector(selector);
    const prompt = $("textarea").value.trim();
    if (!prompt || this.#controller) return;
    this.#controller = new AbortController();
    const estimate = new ProgressEstimate();
    const key = this.getAttribute("api-key");
    let frame = requestAnimationFrame(function tick() {
      const left = estimate.remainingAt();
      $("progress").value = estimate.fractionAt();
      $("button").textContent = left === null ? "Generating…" : `Generating… ${formatDuration(left)}`;
      frame = requestAnimationFrame(tick);
    });
    $("button").disabled = true;
    $("progress").hidden = false;
    $(".error").hidden = true;
    try {
      const results = await run(this.getAttribute("endpoint") ?? "/api/run", { prompt }, {
        signal: this.#controller.signal,
        headers: key ? { Authorization: `Bearer ${key}` } : {},
        onProgress: (progress) => estimate.update(progress),
      });
      if (this.#objectUrl) URL.revokeObjectURL(this.#objectUrl);
      this.#objectUrl = results.firstImage()?.objectUrl() ?? null;
      $("img").src = this.#objectUrl ?? "";
      $("img").hidden = this.#objectUrl === null;
      this.dispatchEvent(new CustomEvent("ikproxy-result", { detail: results }));
    } catch (error) {
      if (error.name !== "AbortError") {
        $(".error").textContent = error.message;
        $(".error").hidden = false;
        this.dispatchEvent(new CustomEvent("ikproxy-error", { detail: error }));
      }
    } finally {
      cancelAnimationFrame(frame);
      this.#controller = null;
      $("button").disabled = false;
      $("button").textContent = "Generate";
      $("progress").hidden = true;
    }
  }
}

customElements.define("ikproxy-run", IkproxyRun);
