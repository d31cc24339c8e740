// A React component: a prompt, the ETA on the button, the result image.
//
// The browser module comes from the npm package `ikproxy` (see ../README.md); the
// server runs the proxy at /api. Unmounting (or leaving the page) aborts the
// request, which stops the run on the server.

import { type FormEvent, useEffect, useRef, useState } from "react";

import { ImageOutput, ProgressEstimate, StreamError, formatDuration, run } from "ikproxy";

export interface GenerateProps {
  /** The proxy's run endpoint. */
  endpoint?: string;
  /** Sent as `Authorization: Bearer <apiKey>` when the server asks for one. */
  apiKey?: string;
}

export function Generate({ endpoint = "/api/run", apiKey }: GenerateProps) {
  const [prompt, setPrompt] = useState("");
  const [busy, setBusy] = useState(false);
  const [fraction, setFraction] = useState(0);
  const [eta, setEta] = useState<string | null>(null);
  const [image, setImage] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const controller = useRef<AbortController | null>(null);

  useEffect(() => () => controller.current?.abort(), []);

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    if (busy || !prompt.trim()) return;
    controller.current = new AbortController();
    const estimate = new ProgressEstimate();
    let frame = requestAnimationFrame(function tick() {
      setFraction(estimate.fractionAt());
      const left = estimate.remainingAt();
      setEta(left === null ? null : formatDuration(left)); // same text, no re-render
      frame = requestAnimationFrame(tick);
    });
    setBusy(true);
    setError(null);
    try {
      const results = await run(endpoint, { prompt }, {
        signal: controller.current.signal,
        headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {},
        onProgress: (progress) => estimate.update(progress),
      });
      setImage(results.getOutput(0, ImageOutput).dataUrl);
    } catch (caught) {
      if (caught instanceof Error && caught.name === "AbortError") return;
      setError(caught instanceof StreamError ? `${caught.message} (${caught.code})` : String(caught));
    } finally {
      cancelAnimationFrame(frame);
      controller.current = null;
      setBusy(false);
      setEta(null);
    }
  }

  return (
    <form onSubmit={submit} className="ikproxy-generate">
      <textarea
        value={prompt}
        onChange={(event) => setPrompt(event.target.value)}
        placeholder="A lighthouse at dawn"
        aria-label="Prompt"
        required
      />
      <button type="submit" disabled={busy}>
        {busy ? `Generating…${eta ? ` ${eta}` : ""}` : "Generate"}
      </button>
      {busy && <progress max={1} value={fraction} />}
      {error && <p role="alert">{error}</p>}
      {image && <img src={image} alt="The result of the run" />}
    </form>
  );
}
