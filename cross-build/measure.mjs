#!/usr/bin/env node
// Footprint of the executables in dist/bin, for cross-build/README.md:
// file size (and xz size with --xz), start-up time of `--version` (native
// for x64, qemu-user for ARM; median of --runs), and the RSS of an idle
// `publish` agent connected to a local x64 relay (once the CLI has them).
//
//   node cross-build/measure.mjs [--runs 5] [--xz] [--idle-seconds 10]
import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { armCommand } from './qemu-user.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BIN = join(ROOT, 'dist/bin');
const BUNDLE = join(ROOT, 'dist/sea/diode.cjs');
const TARGETS = ['x64', 'arm64', 'armv7'];

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const RUNS = opt('--runs', 5);
const IDLE_S = opt('--idle-seconds', 10);
const XZ = args.includes('--xz');

function command(target, bin, argv) {
  return target === 'x64' ? { file: bin, args: argv, env: {}, via: 'native' } : armCommand(target, bin, argv);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function startup(target) {
  const cmd = command(target, join(BIN, `diode-linux-${target}`), ['--version']);
  const times = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    const r = spawnSync(cmd.file, cmd.args, { env: { ...process.env, ...cmd.env } });
    if (r.status !== 0) throw new Error(`${target} --version: exit ${r.status} ${r.stderr}`);
    times.push(performance.now() - t);
  }
  return { ms: Math.round(median(times)), via: cmd.via };
}

function waitFor(child, re, ms) {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`no ${re} in ${ms} ms: ${seen}`)), ms);
    const on = (d) => {
      seen += d;
      const m = seen.match(re);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.on('exit', (c) => reject(new Error(`exited ${c} before ${re}: ${seen}`)));
  });
}

const rssKiB = (pid) => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)?.[1]);

/** RSS of `publish` after IDLE_S seconds connected to an x64 relay (bundle under the host node). */
async function idlePublishRss(target) {
  const relayHome = mkdtempSync(join(tmpdir(), 'diode-m-relay-'));
  const home = mkdtempSync(join(tmpdir(), 'diode-m-dev-'));
  const kids = [];
  try {
    const relay = execFile(process.execPath, [BUNDLE, 'relay', '--listen', '127.0.0.1:0', '--home', relayHome]);
    kids.push(relay);
    const port = (await waitFor(relay, /127\.0\.0\.1:(\d+)/, 30_000))[1];
    const cmd = command(target, join(BIN, `diode-linux-${target}`), ['publish', '-public', '9', '--relay', `127.0.0.1:${port}`, '--home', home]);
    const dev = spawn(cmd.file, cmd.args, { env: { ...process.env, ...cmd.env } });
    kids.push(dev);
    dev.stdout.resume();
    dev.stderr.resume();
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    if (dev.exitCode !== null) throw new Error(`publish exited ${dev.exitCode}`);
    return Math.round(rssKiB(dev.pid) / 1024);
  } finally {
    for (const k of kids) k.kill('SIGKILL');
    rmSync(relayHome, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  }
}

const rows = [];
for (const target of TARGETS) {
  const file = join(BIN, `diode-linux-${target}`);
  const row = { target, sizeMB: +(statSync(file).size / 1e6).toFixed(1) };
  if (XZ) {
    const r = spawnSync('xz', ['-6', '-T0', '-c', file], { maxBuffer: 1 << 30 });
    row.xzMB = +(r.stdout.length / 1e6).toFixed(1);
  }
  const s = startup(target);
  row.versionMs = s.ms;
  row.via = s.via;
  try {
    row.idlePublishRssMiB = await idlePublishRss(target);
  } catch (err) {
    row.idlePublishRssMiB = `n/a (${String(err.message).split('\n')[0].slice(0, 80)})`;
  }
  rows.push(row);
  console.log(JSON.stringify(row));
}
console.table(rows);
