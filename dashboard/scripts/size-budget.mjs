// The size budget: the JavaScript a first visit loads (the entry script index.html names and
// every module it preloads), compressed as the server sends it, must stay under 300 KB.
// Fails the build when it does not. Measured on the .gz copies (browsers without brotli get
// those, and gzip is the larger of the two), also printing the brotli figure.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

export const BUDGET_BYTES = 300 * 1024;

/**
 * The scripts index.html loads at first: `<script src>` and `<link rel="modulepreload">`.
 * @param {string} html
 * @returns {string[]}
 */
export function firstLoadScripts(html) {
  const out = new Set();
  for (const m of html.matchAll(/<script[^>]*\ssrc="([^"]+)"/g)) out.add(m[1]);
  for (const m of html.matchAll(/<link[^>]*rel="modulepreload"[^>]*href="([^"]+)"/g)) out.add(m[1]);
  for (const m of html.matchAll(/<link[^>]*href="([^"]+)"[^>]*rel="modulepreload"/g)) out.add(m[1]);
  return [...out];
}

/**
 * The first-load figures of a build directory, or an error saying what is missing.
 * @param {string} dist
 * @returns {{ scripts: string[], raw: number, gz: number, br: number, over: boolean } | { error: string }}
 */
export function measure(dist) {
  const html = readFileSync(join(dist, 'index.html'), 'utf8');
  const scripts = firstLoadScripts(html);
  if (scripts.length === 0) return { error: 'index.html names no script; the build is not what this check expects' };
  let raw = 0;
  let gz = 0;
  let br = 0;
  for (const src of scripts) {
    const file = join(dist, src.replace(/^\//, ''));
    for (const suffix of ['', '.gz', '.br']) {
      if (!existsSync(file + suffix)) return { error: `${src}${suffix} is missing (run scripts/compress.mjs first)` };
    }
    raw += statSync(file).size;
    gz += statSync(file + '.gz').size;
    br += statSync(file + '.br').size;
  }
  return { scripts, raw, gz, br, over: gz > BUDGET_BYTES };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = measure(new URL('../dist/', import.meta.url).pathname);
  if ('error' in result) {
    console.error(`size budget: ${result.error}`);
    process.exit(1);
  }
  const kb = (n) => (n / 1024).toFixed(1) + ' KB';
  console.log(
    `size budget: first-load JS ${kb(result.raw)} raw, ${kb(result.gz)} gzip, ${kb(result.br)} brotli (budget ${kb(BUDGET_BYTES)} compressed) in ${result.scripts.length} file(s)`,
  );
  if (result.over) {
    console.error(`size budget exceeded: ${kb(result.gz)} gzip > ${kb(BUDGET_BYTES)}`);
    process.exit(1);
  }
}
