// Builds dist/: the page Herald serves at / (index.html) and what it loads (inbox.js, inbox.css, served
// under /inbox/). Deterministic: the same sources give byte-identical files, so the committed dist/ can be
// checked against a fresh build.

import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const src = join(root, 'src');
const dist = join(root, 'dist');

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

await build({
  absWorkingDir: root,
  entryPoints: [join(src, 'inbox.ts')],
  outfile: join(dist, 'inbox.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2020',
  minify: true,
  charset: 'utf8',
  legalComments: 'none',
  sourcemap: false,
  logLevel: 'warning',
});

copyFileSync(join(src, 'index.html'), join(dist, 'index.html'));
copyFileSync(join(src, 'inbox.css'), join(dist, 'inbox.css'));
