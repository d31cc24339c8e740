// Builds each example into dist/<name>/: index.html, main.js (minified) and style.css.
//
//   node build.mjs            # all of them
//   node build.mjs react vue  # some of them
//
// Each page calls /api/run on its own origin: serve dist/ from the app that mounts
// the proxy at /api (tests/integration/browser/test_frontends.py does exactly that).

import { createHash } from "node:crypto";
import { copyFile, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import * as esbuild from "esbuild";
import sveltePlugin from "esbuild-svelte";
import { compileScript, parse } from "vue/compiler-sfc";

const HERE = dirname(fileURLToPath(import.meta.url));
const DIST = join(HERE, "dist");

/** name: [entry point, page title] */
const APPS = {
  react: ["react/main.tsx", "React"],
  vue: ["vue/main.ts", "Vue"],
  svelte: ["svelte/main.ts", "Svelte"],
  typescript: ["typescript/main.ts", "TypeScript"],
  "typed-rpc": ["../typed-rpc/main.ts", "Typed RPC"],
};

/** Vue single-file components through Vue's own compiler (script setup, template inlined). */
const vuePlugin = {
  name: "vue-sfc",
  setup(build) {
    build.onLoad({ filter: /\.vue$/ }, async (args) => {
      const source = await readFile(args.path, "utf8");
      const { descriptor, errors } = parse(source, { filename: args.path });
      if (errors.length) return { errors: errors.map((e) => ({ text: String(e.message ?? e) })) };
      if (descriptor.styles.length) {
        return { errors: [{ text: "<style> blocks are not supported here: use style.css" }] };
      }
      const id = createHash("sha256").update(args.path).digest("hex").slice(0, 8);
      const script = compileScript(descriptor, { id, inlineTemplate: true });
      return {
        contents: script.content,
        loader: script.lang === "ts" ? "ts" : "js",
        resolveDir: dirname(args.path),
      };
    });
  },
};

function page(title) {
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>ikproxy · ${title}</title>
  <link rel="stylesheet" href="./style.css">
  <script type="module" src="./main.js"></script>
</head>
<body>
  <main>
    <h1>ikproxy <small>· ${title}</small></h1>
    <div id="app"></div>
  </main>
</body>
</html>
`;
}

async function buildApp(name) {
  const [entry, title] = APPS[name];
  const out = join(DIST, name);
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  const result = await esbuild.build({
    entryPoints: [join(HERE, entry)],
    outfile: join(out, "main.js"),
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    metafile: true,
    logLevel: "warning",
    legalComments: "none",
    define: {
      "process.env.NODE_ENV": '"production"',
      __VUE_OPTIONS_API__: "false",
      __VUE_PROD_DEVTOOLS__: "false",
      __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: "false",
    },
    nodePaths: [join(HERE, "node_modules")], // for ../typed-rpc, outside this folder
    conditions: ["svelte", "browser", "production"],
    mainFields: ["svelte", "browser", "module", "main"],
    plugins: [vuePlugin, sveltePlugin({ compilerOptions: { css: "injected", dev: false } })],
  });
  await copyFile(join(HERE, "style.css"), join(out, "style.css"));
  await writeFile(join(out, "index.html"), page(title));
  const bytes = Object.values(result.metafile.outputs).reduce((sum, o) => sum + o.bytes, 0);
  return [name, bytes];
}

const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(APPS);
for (const name of names) {
  if (!(name in APPS)) throw new Error(`unknown app ${name}; known: ${Object.keys(APPS).join(", ")}`);
}
const sizes = Object.fromEntries(await Promise.all(names.map(buildApp)));
await writeFile(join(DIST, "sizes.json"), JSON.stringify(sizes, null, 2) + "\n");
for (const [name, bytes] of Object.entries(sizes)) {
  console.log(`dist/${name}/main.js  ${(bytes / 1024).toFixed(1)} KiB minified`);
}
