// Bundles the program for `node` (and for cross-build/, which turns it into
// single executables):
//
//   node scripts/build.mjs [OUTFILE] [--sea]      (default dist/diode.cjs)
//
// writes OUTFILE, a small CommonJS loader (agent/boot/), and beside it
// chunks/: the program split per command by esbuild (ESM splitting, each
// chunk then turned into CommonJS), so that a command compiles and runs only
// the code it uses: `diode publish` never reads ethers, the fleet admin, the
// relay or the gateway. The loader runs each chunk through vm.Script with its
// own `require` (inside a Node SEA, `require` loads only built-ins). With
// --sea the loader reads the chunks from an archive appended to the
// executable (cross-build appends it) instead of from chunks/.
import { build, transform } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildFleetUi } from '../agent/fleet-ui/build.mjs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
// DIODE_VERSION: build another version than package.json's (a release under test, an update to try).
const version = process.env.DIODE_VERSION ?? pkg.version;
if (!/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(version)) throw new Error(`DIODE_VERSION "${version}" is not MAJOR.MINOR.PATCH[-prerelease]`);
/** The directory beside the loader that holds the chunk files (agent/boot/main.ts CHUNK_DIR). */
export const CHUNK_DIR = 'chunks';
/** Beside the chunks: which source files each one holds (not a chunk; never loaded). */
export const CHUNK_INPUTS = 'inputs.json';
/** The program's entry chunk: agent/cli/main.ts. */
const ENTRY_CHUNK = 'main.js';

function gitCommit() {
  if (process.env.DIODE_COMMIT) return process.env.DIODE_COMMIT;
  try {
    return execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return 'unknown';
  }
}

// Whitespace and comments out, names kept: a chunk's source text stays in
// the heap of every process that loaded it, and ASCII only (charset), since
// a single non-ASCII character makes V8 hold a whole script as UTF-16; the
// loader reads chunks as latin1. DIODE_BUNDLE_READABLE=1 keeps the layout,
// with esbuild's "// path/to/file.ts" markers that `npm run bench --
// --profile` maps back.
const readable = process.env.DIODE_BUNDLE_READABLE === '1';
const minify = { minifyWhitespace: !readable, minifySyntax: !readable, charset: 'ascii', legalComments: 'none' };

/** The program as chunks: { name: CommonJS source }. */
async function programChunks() {
  // The fleet admin page (`diode fleet ui`) travels inside its chunk as strings.
  const fleetUi = await buildFleetUi();
  const result = await build({
    entryPoints: ['agent/cli/main.ts'],
    outdir: 'chunks',
    write: false,
    bundle: true,
    splitting: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    entryNames: '[name]',
    chunkNames: '[name]-[hash]',
    ...minify,
    sourcemap: false,
    metafile: true,
    define: {
      // agent/cli/version.ts: the version as one verbatim mark, which `diode release sign` reads from a build.
      __DIODE_VERSION_MARK__: JSON.stringify(`diode-version=${version};`),
      __DIODE_COMMIT__: JSON.stringify(gitCommit()),
      __FLEET_UI_HTML__: JSON.stringify(fleetUi.html),
      __FLEET_UI_JS__: JSON.stringify(fleetUi.js),
    },
    logLevel: 'warning',
  });
  const chunks = {};
  /** Which source files each chunk holds (for tests and the footprint bench; the loader never reads it). */
  const inputs = {};
  for (const [path, output] of Object.entries(result.metafile.outputs)) inputs[basename(path)] = Object.keys(output.inputs);
  for (const file of result.outputFiles) {
    // The readable layout keeps esbuild's "// path/to/file.ts" module markers (the profile maps
    // samples back by them) as legal comments, the only comments a transform keeps.
    const text = readable ? file.text.replace(/^\/\/ ((?:agent|node_modules)\/\S+)$/gm, '/*! $1 */') : file.text;
    // ESM imports between chunks, dynamic ones too, become require("./<name>.js"), which the loader resolves.
    const cjs = await transform(text, { format: 'cjs', platform: 'node', target: 'node20', ...minify, ...(readable ? { legalComments: 'inline' } : {}), supported: { 'dynamic-import': false }, logLevel: 'warning' });
    // ESM is strict mode; the CommonJS form must say so (the old single bundle did too).
    chunks[basename(file.path)] = `"use strict";${cjs.code}`;
  }
  if (!chunks[ENTRY_CHUNK]) throw new Error(`esbuild wrote no ${ENTRY_CHUNK}`);
  return { chunks, inputs };
}

/** The loader (agent/boot/main.ts) as one CommonJS file. */
async function loader(sea) {
  const result = await build({
    entryPoints: ['agent/boot/main.ts'],
    write: false,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    ...minify,
    banner: { js: '#!/usr/bin/env node' },
    define: {
      __DIODE_CHUNKS__: JSON.stringify(sea ? 'executable' : 'files'),
      __DIODE_ENTRY_CHUNK__: JSON.stringify(ENTRY_CHUNK),
    },
    logLevel: 'warning',
  });
  return result.outputFiles[0].text;
}

/** Writes OUTFILE and its chunks/ directory (emptied first: chunk names carry content hashes). */
export async function buildBundle(outfile, { sea = false } = {}) {
  const [{ chunks, inputs }, boot] = await Promise.all([programChunks(), loader(sea)]);
  const dir = join(dirname(outfile), CHUNK_DIR);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const [name, code] of Object.entries(chunks)) writeFileSync(join(dir, name), code);
  writeFileSync(join(dir, CHUNK_INPUTS), JSON.stringify(inputs, null, 1) + '\n');
  writeFileSync(outfile, boot);
  chmodSync(outfile, 0o755);
  return { outfile, dir, chunks };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const sea = args.includes('--sea');
  const outfile = args.find((a) => !a.startsWith('--')) ?? 'dist/diode.cjs';
  mkdirSync(dirname(outfile), { recursive: true });
  await buildBundle(outfile, { sea });
}
