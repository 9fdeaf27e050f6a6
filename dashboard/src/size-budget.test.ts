import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BUDGET_BYTES, firstLoadScripts, measure } from '../scripts/size-budget.mjs';

const dirs: string[] = [];
function dist(files: Record<string, string | number>): string {
  const dir = mkdtempSync(join(tmpdir(), 'dist-'));
  dirs.push(dir);
  for (const [name, content] of Object.entries(files)) {
    const path = join(dir, name);
    mkdirSync(join(path, '..'), { recursive: true });
    writeFileSync(path, typeof content === 'number' ? Buffer.alloc(content) : content);
  }
  return dir;
}
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const HTML = '<script type="module" crossorigin src="/assets/index-1.js"></script><link rel="modulepreload" crossorigin href="/assets/vendor-2.js">';

describe('the size budget', () => {
  it('counts the entry script and the modules it preloads', () => {
    expect(firstLoadScripts(HTML)).toEqual(['/assets/index-1.js', '/assets/vendor-2.js']);
    expect(firstLoadScripts('<link href="/a.js" rel="modulepreload">')).toEqual(['/a.js']);
  });

  it('passes under the budget and fails over it, on the gzip copies', () => {
    const files = (gz: number) => ({
      'index.html': HTML,
      'assets/index-1.js': 10,
      'assets/index-1.js.gz': gz,
      'assets/index-1.js.br': 5,
      'assets/vendor-2.js': 10,
      'assets/vendor-2.js.gz': 1000,
      'assets/vendor-2.js.br': 5,
    });
    expect(measure(dist(files(1000)))).toMatchObject({ gz: 2000, over: false });
    expect(measure(dist(files(BUDGET_BYTES)))).toMatchObject({ gz: BUDGET_BYTES + 1000, over: true });
  });

  it('refuses a build without its compressed copies or without a script', () => {
    expect(measure(dist({ 'index.html': HTML, 'assets/index-1.js': 1 }))).toEqual({ error: '/assets/index-1.js.gz is missing (run scripts/compress.mjs first)' });
    expect(measure(dist({ 'index.html': '<p>no script</p>' }))).toHaveProperty('error');
  });
});
