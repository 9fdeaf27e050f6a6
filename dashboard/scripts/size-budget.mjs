// The size budget: the JavaScript a first visit loads (the entry script index.html names and
// every module it preloads), compressed as the server sends it, must stay under 300 KB.
// Fails the build when it does not. Measured on the .gz copies (browsers without brotli get
// those, and gzip is the larger of the two), also printing the brotli figure.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const BUDGET_BYTES = 300 * 1024;
const DIST = new URL('../dist/', import.meta.url).pathname;

/** The scripts index.html loads at first: `<script src>` and `<link rel="modulepreload">`. */
export function firstLoadScripts(html) {
  const out = new Set();
  for (const m of html.matchAll(/<script[^>]*\ssrc="([^"]+)"/g)) out.add(m[1]);
  for (const m of html.matchAll(/<link[^>]*rel="modulepreload"[^>]*href="([^"]+)"/g)) out.add(m[1]);
  for (const m of html.matchAll(/<link[^>]*href="([^"]+)"[^>]*rel="modulepreload"/g)) out.add(m[1]);
  return [...out];
}

const html = readFileSync(join(DIST, 'index.html'), 'utf8');
const scripts = firstLoadScripts(html);
if (scripts.length === 0) {
  console.error('size budget: index.html names no script; the build is not what this check expects');
  process.exit(1);
}
let gz = 0;
let br = 0;
let raw = 0;
for (const src of scripts) {
  const file = join(DIST, src.replace(/^\//, ''));
  for (const suffix of ['.gz', '.br']) {
    if (!existsSync(file + suffix)) {
      console.error(`size budget: ${src}${suffix} is missing (run scripts/compress.mjs first)`);
      process.exit(1);
    }
  }
  raw += statSync(file).size;
  gz += statSync(file + '.gz').size;
  br += statSync(file + '.br').size;
}
const kb = (n) => (n / 1024).toFixed(1) + ' KB';
console.log(`size budget: first-load JS ${kb(raw)} raw, ${kb(gz)} gzip, ${kb(br)} brotli (budget ${kb(BUDGET_BYTES)} compressed) in ${scripts.length} file(s)`);
if (gz > BUDGET_BYTES) {
  console.error(`size budget exceeded: ${kb(gz)} gzip > ${kb(BUDGET_BYTES)}`);
  process.exit(1);
}
