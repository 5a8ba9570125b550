#!/usr/bin/env node
// Builds one self-contained executable per target (linux-x64, linux-arm64,
// linux-armv7) as Node single executable applications, offline apart from
// the npm registry (the target node binaries come from npm, pinned by
// integrity in runtimes.json). See cross-build/README.md for the why.
//
//   node cross-build/build.mjs [--target x64,arm64,armv7] [--out dist/bin]
//                              [--force] [--no-strip] [--no-check]
//
// Steps: commit → bundle → runtimes → (per target: up to date?) → blob →
// assemble (copy node, strip, postject, check, rename) → SHA256SUMS.
// Every output is written under a temporary name and renamed into place,
// so a final name never holds a half-written file.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync, chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync,
  renameSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import { delimiter, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { armCommand } from './qemu-user.mjs';
import { chunkArchive } from '../scripts/chunk-archive.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const RUNTIMES = JSON.parse(readFileSync(join(ROOT, 'cross-build/runtimes.json'), 'utf8')).targets;
const ALL_TARGETS = Object.keys(RUNTIMES);
const CACHE_DIR = join(ROOT, '.cache/node-runtimes');
const SEA_DIR = join(ROOT, 'dist/sea');
/** The SEA's main script: the loader, which reads the program's chunks from the archive appended to the executable. */
const BUNDLE = join(SEA_DIR, 'diode.cjs');
/** The program's chunks (scripts/build.mjs --sea writes them beside the loader). */
const CHUNKS = join(SEA_DIR, 'chunks');
/** The fuse postject flips so that node looks for the blob (Node's documented value). */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
/** Resource name node reads the blob from. */
const SEA_RESOURCE = 'NODE_SEA_BLOB';
/** Bumped when the way a binary is assembled changes, so cached outputs are rebuilt. */
const RECIPE_VERSION = 2;
/** Strip tools per target, first found wins; llvm-strip handles every ELF machine. */
const STRIP_TOOLS = {
  x64: ['strip', 'x86_64-linux-gnu-strip', 'llvm-strip'],
  arm64: ['aarch64-linux-gnu-strip', 'llvm-strip'],
  armv7: ['arm-linux-gnueabihf-strip', 'llvm-strip'],
};
/** A --version under qemu takes 2–4 s here; anything past this is hung. */
const CHECK_TIMEOUT_MS = 60_000;
/** Blob generation under qemu-arm is a few seconds; leave room for a loaded CI box. */
const BLOB_TIMEOUT_MS = 180_000;

class StepError extends Error {}

// ---- options --------------------------------------------------------------

function usage() {
  return `usage: node cross-build/build.mjs [--target ${ALL_TARGETS.join(',')}] [--out DIR] [--force] [--no-strip] [--no-check]

  --target LIST  build only these targets (comma separated; default: all)
  --out DIR      output directory (default: dist/bin)
  --force        rebuild even if the outputs match their inputs
  --no-strip     keep the node binary's symbols (≈ 12 MB larger)
  --no-check     do not run each binary's --version before publishing it`;
}

function parseArgs(argv) {
  const opts = { targets: ALL_TARGETS, out: join(ROOT, 'dist/bin'), force: false, strip: true, check: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (!v) throw new StepError(`${a} needs a value\n${usage()}`);
      return v;
    };
    if (a === '--target' || a.startsWith('--target=') || a === '--targets' || a.startsWith('--targets=')) {
      const list = value().split(',').map((s) => s.trim()).filter(Boolean);
      const bad = list.filter((t) => !ALL_TARGETS.includes(t));
      if (bad.length || !list.length) throw new StepError(`unknown target ${bad.join(',') || '(none)'}; known: ${ALL_TARGETS.join(', ')}`);
      opts.targets = ALL_TARGETS.filter((t) => list.includes(t));
    } else if (a === '--out' || a.startsWith('--out=')) {
      opts.out = resolve(value()); // absolute as given (hw-test passes one), else from the working directory
    } else if (a === '--force') opts.force = true;
    else if (a === '--no-strip') opts.strip = false;
    else if (a === '--no-check') opts.check = false;
    else if (a === '-h' || a === '--help') {
      console.log(usage());
      process.exit(0);
    } else throw new StepError(`unknown option ${a}\n${usage()}`);
  }
  return opts;
}

// ---- small helpers ----------------------------------------------------------

const t0 = Date.now();
const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;
const log = (msg) => console.log(`cross-build: ${msg}`);

/** Temporary files this run created; removed on failure or interrupt. */
const temporaries = new Set();
function tempPath(finalPath) {
  const p = join(dirname(finalPath), `.${finalPath.split('/').pop()}.tmp-${process.pid}`);
  temporaries.add(p);
  return p;
}
function publish(tmp, finalPath) {
  renameSync(tmp, finalPath);
  temporaries.delete(tmp);
}
function cleanup() {
  for (const p of temporaries) rmSync(p, { force: true, recursive: true });
  temporaries.clear();
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanup();
    console.error(`cross-build: interrupted (${sig}); temporary files removed`);
    process.exit(130);
  });
}

/** Runs one named step; a failure names the step and stops the build. */
async function step(name, fn) {
  const start = Date.now();
  log(`[${name}] ...`);
  try {
    const result = await fn();
    log(`[${name}] done in ${secs(Date.now() - start)}`);
    return result;
  } catch (err) {
    const msg = err instanceof StepError ? err.message : (err?.stack ?? String(err));
    throw new StepError(`step "${name}" failed: ${msg}`);
  }
}

/** Runs a program, returns stdout; throws with its stderr on failure. */
function run(file, args, { env = {}, timeout, cwd = ROOT } = {}) {
  const r = spawnSync(file, args, { cwd, env: { ...process.env, ...env }, encoding: 'utf8', timeout, maxBuffer: 64 << 20 });
  if (r.error) throw new StepError(`${file} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) {
    const why = r.signal ? `killed by ${r.signal}` : `exit ${r.status}`;
    throw new StepError(`${file} ${args.join(' ')}: ${why}\n${(r.stderr || r.stdout || '').trim()}`);
  }
  return r.stdout;
}

function which(name) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');
const sriSha512 = (buf) => `sha512-${createHash('sha512').update(buf).digest('base64')}`;
const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

/** Runs a target binary on this host (directly for x64, through qemu for ARM). */
function runTarget(target, binary, args, timeout) {
  if (target === 'x64') {
    if (process.arch !== 'x64') throw new StepError(`cannot run an x64 binary on a ${process.arch} host`);
    return run(binary, args, { timeout });
  }
  const cmd = armCommand(target, binary, args);
  return run(cmd.file, cmd.args, { env: cmd.env, timeout });
}

// ---- steps ------------------------------------------------------------------

function gitCommit() {
  if (process.env.DIODE_COMMIT) return process.env.DIODE_COMMIT;
  try {
    return execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return 'unknown';
  }
}

/** The loader and the chunks; returns the bytes that decide the outputs (loader, then the archive as at offset 0). */
function bundle(commit) {
  mkdirSync(SEA_DIR, { recursive: true });
  run(process.execPath, [join(ROOT, 'scripts/build.mjs'), relative(ROOT, BUNDLE), '--sea'], { env: { DIODE_COMMIT: commit } });
  return Buffer.concat([readFileSync(BUNDLE), chunkArchive(CHUNKS, 0)]);
}

/** Fetches (if needed), verifies and unpacks the target's node; returns the path of its `node`. */
function runtime(target) {
  const { package: name, version, integrity } = RUNTIMES[target];
  mkdirSync(CACHE_DIR, { recursive: true });
  const tgz = join(CACHE_DIR, `${name}-${version}.tgz`);
  const unpacked = join(CACHE_DIR, `${name}-${version}-${sha256(integrity).slice(0, 12)}`);
  const node = join(unpacked, 'node');
  if (existsSync(node)) return node;

  const verified = () => existsSync(tgz) && sriSha512(readFileSync(tgz)) === integrity;
  if (!verified()) {
    if (existsSync(tgz)) log(`  ${name}-${version}.tgz does not match its pinned integrity; fetching again`);
    rmSync(tgz, { force: true });
    log(`  npm pack ${name}@${version}`);
    run('npm', ['pack', `${name}@${version}`, '--pack-destination', CACHE_DIR, '--silent']);
    if (!verified()) {
      const got = existsSync(tgz) ? sriSha512(readFileSync(tgz)) : '(no file)';
      rmSync(tgz, { force: true });
      throw new StepError(`${name}@${version}: integrity mismatch\n  pinned ${integrity}\n  got    ${got}`);
    }
  }
  const tmp = tempPath(unpacked);
  mkdirSync(tmp, { recursive: true });
  run('tar', ['-xzf', tgz, '-C', tmp, '--strip-components=2', 'package/bin/node']);
  publish(tmp, unpacked);
  return node;
}

function stripTool(target) {
  return STRIP_TOOLS[target].map(which).find(Boolean);
}

/** Everything that decides a target's output bytes; equal hash ⇒ reuse the binary. */
function inputHash(target, bundleBytes, strip, buildScript) {
  return sha256(JSON.stringify({
    recipe: RECIPE_VERSION,
    bundle: sha256(bundleBytes),
    runtime: RUNTIMES[target],
    strip: strip ? (stripTool(target) ?? 'none').split('/').pop() : 'off',
    script: sha256(buildScript),
  }));
}

function stampPath(out, target) {
  return join(out, `.diode-linux-${target}.build.json`);
}

function upToDate(out, target, hash) {
  const bin = join(out, `diode-linux-${target}`);
  try {
    const stamp = JSON.parse(readFileSync(stampPath(out, target), 'utf8'));
    return stamp.inputHash === hash && statSync(bin).size === stamp.size && sha256(readFileSync(bin)) === stamp.sha256;
  } catch {
    return false;
  }
}

/**
 * Makes the SEA blob for a group of targets sharing node version and word
 * size. The blob must be made by a node of that version and word size: an
 * x64 host node makes it for x64 and arm64; armv7 makes its own under qemu.
 */
function makeBlob(group, nodeFor) {
  const { version, bits } = RUNTIMES[group[0]];
  const maker = group.find((t) => t === 'x64' && process.arch === 'x64') ?? group[0];
  const blob = join(SEA_DIR, `sea-${version}-${bits}bit.blob`);
  const tmpBlob = tempPath(blob);
  const config = join(SEA_DIR, `sea-config-${version}-${bits}bit.json`);
  writeFileSync(config, JSON.stringify({
    main: BUNDLE,
    output: tmpBlob,
    disableExperimentalSEAWarning: true,
    useSnapshot: false,
    useCodeCache: false,
  }, null, 2));
  log(`  ${relative(ROOT, blob)} for ${group.join(', ')} (made by the ${maker} node ${version})`);
  runTarget(maker, nodeFor[maker], ['--experimental-sea-config', config], BLOB_TIMEOUT_MS);
  if (!existsSync(tmpBlob)) throw new StepError(`node wrote no blob to ${tmpBlob}`);
  publish(tmpBlob, blob);
  return blob;
}

function assemble({ target, node, blob, out, strip, check, commit, version, hash }) {
  const finalPath = join(out, `diode-linux-${target}`);
  const tmp = tempPath(finalPath);
  copyFileSync(node, tmp);
  chmodSync(tmp, 0o755);

  let stripped = false;
  if (strip) {
    const tool = stripTool(target);
    if (tool) {
      run(tool, [tmp]);
      stripped = true;
    } else {
      log(`  warning: no strip tool for ${target} (tried ${STRIP_TOOLS[target].join(', ')}); keeping symbols. ` +
        'Install binutils-aarch64-linux-gnu / binutils-arm-linux-gnueabihf or llvm (cross-build/setup-host.sh)');
    }
  }

  run('npx', ['--no-install', 'postject', tmp, SEA_RESOURCE, blob, '--sentinel-fuse', SEA_FUSE]);
  // The chunks go after the last ELF byte, where the loader finds them by the footer (agent/boot/archive.ts);
  // nothing may strip or re-inject the file after this.
  appendFileSync(tmp, chunkArchive(CHUNKS, statSync(tmp).size));

  if (check) {
    const said = runTarget(target, tmp, ['--version'], CHECK_TIMEOUT_MS).trim();
    if (!said.includes(version) || !said.includes(commit)) {
      throw new StepError(`diode-linux-${target} --version printed "${said}", expected ${version} and ${commit}`);
    }
    log(`  diode-linux-${target} --version: ${said}`);
  }

  const bytes = readFileSync(tmp);
  const stamp = {
    target, inputHash: hash, commit, version, runtime: `${RUNTIMES[target].package}@${RUNTIMES[target].version}`,
    stripped, size: bytes.length, sha256: sha256(bytes), builtAt: new Date().toISOString(),
  };
  const stampFile = stampPath(out, target);
  const tmpStamp = tempPath(stampFile);
  writeFileSync(tmpStamp, JSON.stringify(stamp, null, 2) + '\n');
  rmSync(stampFile, { force: true }); // never leave a stamp that vouches for the old binary
  publish(tmp, finalPath);
  publish(tmpStamp, stampFile);
  log(`  dist/bin/diode-linux-${target}: ${mb(bytes.length)}${stripped ? ' (stripped)' : ''}`);
}

/** The digests come from the stamps: assemble computed them, upToDate re-checked them. */
function writeSums(out, targets) {
  const lines = targets.map((t) => `${JSON.parse(readFileSync(stampPath(out, t), 'utf8')).sha256}  diode-linux-${t}\n`);
  const file = join(out, 'SHA256SUMS');
  const tmp = tempPath(file);
  writeFileSync(tmp, lines.join(''));
  publish(tmp, file);
}

// ---- main -------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  const buildScript = Buffer.concat([readFileSync(fileURLToPath(import.meta.url)), readFileSync(join(ROOT, 'scripts/chunk-archive.mjs'))]);
  mkdirSync(opts.out, { recursive: true });
  log(`targets: ${opts.targets.join(', ')} → ${relative(process.cwd(), opts.out) || '.'}`);

  const commit = await step('commit', () => {
    const c = gitCommit();
    log(`  ${c}`);
    return c;
  });
  const bundleBytes = await step('bundle', () => {
    const b = bundle(commit);
    log(`  ${relative(ROOT, BUNDLE)} and ${relative(ROOT, CHUNKS)}/: ${mb(b.length)}`);
    return b;
  });

  const hashes = Object.fromEntries(opts.targets.map((t) => [t, inputHash(t, bundleBytes, opts.strip, buildScript)]));
  const todo = opts.targets.filter((t) => opts.force || !upToDate(opts.out, t, hashes[t]));
  for (const t of opts.targets) if (!todo.includes(t)) log(`diode-linux-${t} is up to date (same bundle, runtime and recipe)`);

  if (todo.length) {
    const nodeFor = await step('runtimes', () => {
      const m = {};
      for (const t of todo) m[t] = runtime(t);
      return m;
    });

    const groups = new Map();
    for (const t of todo) {
      const key = `${RUNTIMES[t].version}/${RUNTIMES[t].bits}`;
      groups.set(key, [...(groups.get(key) ?? []), t]);
    }
    const blobFor = {};
    for (const group of groups.values()) {
      const blob = await step(`blob ${group.join('+')}`, () => makeBlob(group, nodeFor));
      for (const t of group) blobFor[t] = blob;
    }

    for (const target of todo) {
      await step(`assemble ${target}`, () => assemble({
        target, node: nodeFor[target], blob: blobFor[target], out: opts.out, strip: opts.strip,
        check: opts.check, commit, hash: hashes[target],
        // scripts/build.mjs builds DIODE_VERSION when set (hw-test's release one version newer)
        version: process.env.DIODE_VERSION ?? pkg.version,
      }));
    }
  }

  await step('SHA256SUMS', () => writeSums(opts.out, opts.targets));
  log(`finished in ${secs(Date.now() - t0)}`);
}

try {
  await main();
} catch (err) {
  cleanup();
  console.error(`cross-build: ${err instanceof StepError ? err.message : (err?.stack ?? err)}`);
  process.exit(1);
}
