// Builds the fleet admin page's assets for embedding: the HTML as is and the
// page script (with ethers' browser build and the contract artifact) as one
// minified IIFE. scripts/build.mjs puts both into the program bundle as
// strings, so `diode fleet ui` works from a single executable.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';

export async function buildFleetUi() {
  const html = readFileSync(new URL('./page.html', import.meta.url), 'utf8');
  const result = await build({
    entryPoints: [new URL('./page.js', import.meta.url).pathname],
    bundle: true,
    write: false,
    platform: 'browser',
    format: 'iife',
    target: ['chrome110', 'firefox110', 'safari16'],
    minify: true,
    legalComments: 'none',
    logLevel: 'warning',
  });
  return { html, js: result.outputFiles[0].text };
}
