import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { ChunkLoader, fileSource, type ChunkSource } from './loader.ts';
import { executableSource } from './executable.ts';

// The first code that runs: finds the program's chunks and runs its entry
// chunk. scripts/build.mjs bundles this file alone as dist/diode.cjs (or, for
// a single executable, as the SEA's main script) and the program as chunks.

/** Set by scripts/build.mjs: where this build looks for its chunks first. */
declare const __DIODE_CHUNKS__: 'files' | 'executable';
/** The entry chunk's name (scripts/build.mjs). */
declare const __DIODE_ENTRY_CHUNK__: string;
/** The directory beside the bundle that holds the chunk files. */
export const CHUNK_DIR = 'chunks';
/**
 * Bytecodes a function may run before V8 considers optimizing it: 4× V8's
 * default (67,584). Start-up code runs once; at the default, publish's
 * start-up (the JavaScript keccak of addresses) was hot enough for TurboFan:
 * ≈ 43 ms of compiling on a background thread and 3.6 MB of the node
 * executable's pages (TurboFan's code and tables) in every agent's RSS for
 * good. At 2× nothing of publish's start-up is optimized; a data pump that
 * runs millions of times still is, a little later.
 */
export const TIER_UP_BUDGET = 4 * 67_584;

/**
 * A single executable reads the archive at its own end. The same loader run
 * by a plain node (cross-build's dist/sea/diode.cjs in tests) finds no
 * archive there and reads the chunks beside it, as the npm bundle does.
 */
function source(): { from: ChunkSource; dir: string } {
  if (__DIODE_CHUNKS__ === 'executable') {
    const from = executableSource(process.execPath);
    if (from) return { from, dir: dirname(process.execPath) };
  }
  const dir = join(__dirname, CHUNK_DIR);
  if (!existsSync(join(dir, __DIODE_ENTRY_CHUNK__))) {
    throw new Error(`the program's chunks are missing: neither ${process.execPath} carries them nor is there ${dir} (a single executable must not be stripped after cross-build; an npm bundle needs its chunks/ directory beside it)`);
  }
  return { from: fileSource(dir, (path) => readFileSync(path, 'latin1')), dir };
}

// Before any of the program is compiled; settable at run time, so a single executable (no command line for V8) gets it too.
setFlagsFromString(`--interrupt-budget=${TIER_UP_BUDGET}`);
try {
  const { from, dir } = source();
  new ChunkLoader(from, require, dir).load(__DIODE_ENTRY_CHUNK__);
} catch (err) {
  // The program's own errors are handled inside it; this is a broken installation.
  process.stderr.write(`diode: cannot start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(70);
}
