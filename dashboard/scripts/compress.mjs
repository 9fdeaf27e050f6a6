// Writes FILE.br and FILE.gz beside every text file of dist/: the server sends the copy the
// browser accepts as it is, so nothing is compressed per request (server/src/dashboard.rs).
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

const DIST = new URL('../dist/', import.meta.url).pathname;
const TEXT = /\.(js|mjs|css|html|svg|json|txt|map)$/;

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* files(path);
    else yield path;
  }
}

let count = 0;
for (const path of [...files(DIST)]) {
  if (!TEXT.test(path)) continue;
  const data = readFileSync(path);
  writeFileSync(
    path + '.br',
    brotliCompressSync(data, {
      params: {
        [constants.BROTLI_PARAM_QUALITY]: constants.BROTLI_MAX_QUALITY,
        [constants.BROTLI_PARAM_SIZE_HINT]: data.length,
      },
    }),
  );
  writeFileSync(path + '.gz', gzipSync(data, { level: 9 }));
  count += 1;
}
console.log(`compress: ${count} files, each with .br and .gz`);
