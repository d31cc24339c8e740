// A plain page's script that imports the module its server serves: the tsconfig.json
// beside it maps that URL to the npm package's types (see ikproxy.d.ts's header).

import { ImageOutput, run } from "/api/ikproxy.js";

export async function paint(img: HTMLImageElement, prompt: string): Promise<void> {
  const results = await run("/api/run", { prompt });
  img.src = results.getOutput(0, ImageOutput).dataUrl;
}
