// Builds the dashboard into dist/: index.html, app.js (bundled, minified ES
// module) and app.css (minified). `rollout serve` embeds exactly these
// three files, so they are committed; test.sh rebuilds them and checks that
// nothing changed. esbuild is pinned to an exact version in package.json and
// its output depends only on the sources, so a rebuild is byte-identical.
//
// It also refuses what the page's Content-Security-Policy would block, or
// what would let text from the service run as markup: inline scripts and
// styles, style attributes, innerHTML and friends, eval.

import { build } from 'esbuild';
import { readFile, writeFile, mkdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'src');
const dist = join(here, 'dist');
const BUDGET = 300 * 1024;

const fail = (msg) => {
  console.error(`build: ${msg}`);
  process.exit(1);
};

await mkdir(dist, { recursive: true });

const common = {
  bundle: true,
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  charset: 'utf8',
  target: ['chrome109', 'firefox115', 'safari16'],
  logLevel: 'warning',
  absWorkingDir: here,
};

await build({ ...common, entryPoints: ['src/app.js'], outfile: 'dist/app.js', format: 'esm' });
await build({ ...common, entryPoints: ['src/app.css'], outfile: 'dist/app.css' });

let html = await readFile(join(src, 'index.html'), 'utf8');
if (/<script(?![^>]*\bsrc=)[^>]*>/i.test(html)) fail('index.html: an inline <script> (CSP script-src self)');
if (/<style[\s>]/i.test(html) || /\sstyle=/i.test(html)) fail('index.html: inline style (CSP style-src self)');
if (/\son[a-z]+=/i.test(html)) fail('index.html: an inline event handler');
for (const ref of ['src="/ui/app.js"', 'href="/ui/app.css"']) {
  if (!html.includes(ref)) fail(`index.html must reference ${ref}`);
}
html = `${html.split('\n').map((l) => l.trim()).filter(Boolean).join('\n')}\n`;
await writeFile(join(dist, 'index.html'), html);

const js = await readFile(join(dist, 'app.js'), 'utf8');
for (const bad of ['innerHTML', 'outerHTML', 'insertAdjacentHTML', 'document.write', 'eval(', 'new Function', "setAttribute(\"style\"", "setAttribute('style'"]) {
  if (js.includes(bad)) fail(`app.js uses ${bad}`);
}

let total = 0;
for (const f of ['index.html', 'app.js', 'app.css']) {
  const { size } = await stat(join(dist, f));
  total += size;
  console.log(`dist/${f}: ${size} bytes`);
}
console.log(`dist: ${total} bytes in all (budget ${BUDGET})`);
if (total > BUDGET) fail(`dist is ${total} bytes, over the ${BUDGET}-byte budget`);
