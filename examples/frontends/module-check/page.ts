// A plain page's script that imports the module its server serves: the tsconfig.json
// beside it maps that URL to the npm package's types (see ikproxy.d.ts's header).

import { ImageOutput, StreamError, run } from "/api/ikproxy.js";

export async function paint(img: HTMLImageElement, prompt: string, signal?: AbortSignal): Promise<void> {
  try {
    // A resume refused with a Retry-After of up to 10 s is waited out; `signal` ends the wait.
    const results = await run("/api/run", { prompt }, { signal, maxRetryAfter: 10 });
    img.src = results.getOutput(0, ImageOutput).dataUrl;
  } catch (error) {
    if (error instanceof StreamError && error.retryAfter !== null) {
      const status: number | null = error.status;
      img.title = `${error.code} (HTTP ${status ?? "?"}): retry in ${error.retryAfter} s [${error.requestId ?? ""}]`;
    }
    throw error;
  }
}
