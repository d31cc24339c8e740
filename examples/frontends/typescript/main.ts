// Plain TypeScript, no framework: a prompt, the ETA on the button, the result image.
//
// The browser module comes from the npm package `ikproxy` (see ../README.md); the
// server runs the proxy at /api. Leaving the page aborts the request, which stops
// the run on the server.

import { ImageOutput, ProgressEstimate, StreamError, formatDuration, run } from "ikproxy";

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> = {},
): HTMLElementTagNameMap[K] {
  return Object.assign(document.createElement(tag), props);
}

export function mountGenerate(target: HTMLElement, endpoint = "/api/run"): void {
  const form = element("form", { className: "ikproxy-generate" });
  const prompt = element("textarea", { placeholder: "A lighthouse at dawn", required: true });
  prompt.setAttribute("aria-label", "Prompt");
  const button = element("button", { type: "submit", textContent: "Generate" });
  const bar = element("progress", { max: 1, value: 0, hidden: true });
  const alert = element("p", { hidden: true });
  alert.setAttribute("role", "alert");
  const image = element("img", { alt: "The result of the run", hidden: true });
  form.append(prompt, button, bar, alert, image);
  target.append(form);

  let controller: AbortController | null = null;
  window.addEventListener("pagehide", () => controller?.abort());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (controller || !prompt.value.trim()) return;
    controller = new AbortController();
    const estimate = new ProgressEstimate();
    let frame = requestAnimationFrame(function tick() {
      bar.value = estimate.fractionAt();
      const left = estimate.remainingAt();
      button.textContent = `Generating…${left === null ? "" : ` ${formatDuration(left)}`}`;
      frame = requestAnimationFrame(tick);
    });
    button.disabled = true;
    button.textContent = "Generating…";
    bar.hidden = false;
    alert.hidden = true;
    try {
      const results = await run(endpoint, { prompt: prompt.value }, {
        signal: controller.signal,
        onProgress: (progress) => estimate.update(progress),
      });
      image.src = results.getOutput(0, ImageOutput).dataUrl;
      image.hidden = false;
    } catch (caught) {
      if (caught instanceof Error && caught.name === "AbortError") return;
      alert.textContent =
        caught instanceof StreamError ? `${caught.message} (${caught.code})` : String(caught);
      alert.hidden = false;
    } finally {
      cancelAnimationFrame(frame);
      controller = null;
      button.disabled = false;
      button.textContent = "Generate";
      bar.hidden = true;
    }
  });
}

mountGenerate(document.getElementById("app")!);
