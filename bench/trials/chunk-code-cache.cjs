// Trial (issue 28 item 3), not part of the program: agent/boot's chunk
// loader with V8 code caches per chunk, to measure what a code cache in the
// single executable would save. Kept so the figures in bench/README.md
// ("footprint (issue 28)") can be reproduced; the build does not use it.
//
//   CC_DIR=dist/chunks CC_CACHE=/tmp/cc CC_PRODUCE=1 node bench/trials/chunk-code-cache.cjs proxy ...   # writes caches at exit
//   CC_DIR=dist/chunks CC_CACHE=/tmp/cc node bench/trials/chunk-code-cache.cjs proxy ...                # uses them
//   CC_DIR=dist/chunks node bench/trials/chunk-code-cache.cjs proxy ...                                 # none (same loader)
//
// CC_STATS=1 prints how many caches V8 accepted. V8 rejects a cache made
// under other flags, and the program sets flags as it starts (the tier-up
// budget in agent/boot, --no-incremental-marking and --expose-gc in
// agent/cli/gc-tuning.ts), so this loader sets all three before compiling
// anything: a cache written at exit then matches every chunk.
const { Script } = require('node:vm');
const { mkdirSync, readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const { setFlagsFromString } = require('node:v8');

for (const flag of ['--interrupt-budget=270336', '--no-incremental-marking', '--expose-gc']) setFlagsFromString(flag);
const dir = process.env.CC_DIR;
const cacheDir = process.env.CC_CACHE;
const produce = process.env.CC_PRODUCE === '1';
const modules = new Map();
const scripts = new Map();
const stats = { accepted: 0, rejected: 0 };

function load(name) {
  const known = modules.get(name);
  if (known) return known.exports;
  const filename = join(dir, name);
  let cachedData;
  if (cacheDir && !produce) {
    try {
      cachedData = readFileSync(join(cacheDir, `${name}.cache`));
    } catch {}
  }
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {${readFileSync(filename, 'latin1')}\n})`, { filename, cachedData });
  if (cachedData) stats[script.cachedDataRejected ? 'rejected' : 'accepted']++;
  scripts.set(name, script);
  const module = { exports: {} };
  modules.set(name, module);
  script.runInThisContext().call(module.exports, module.exports, (id) => (id.startsWith('./') ? load(id.slice(2)) : require(id)), module, filename, dir);
  return module.exports;
}

if (produce) {
  // After the run: the cache then holds the functions the command compiled, not only the top level.
  process.on('exit', () => {
    mkdirSync(cacheDir, { recursive: true });
    for (const [name, script] of scripts) writeFileSync(join(cacheDir, `${name}.cache`), script.createCachedData());
  });
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
}
if (process.env.CC_STATS === '1') process.on('exit', () => process.stderr.write(`code caches ${JSON.stringify(stats)}\n`));
load('main.js');
