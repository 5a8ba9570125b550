// Issue 17 item 11: `npm install -g .` gives a working `diode` on PATH, and the packed tarball's
// one file runs outside the clone with no node_modules.
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { tempDir } from './helpers/diode.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

test('17.11 npm install -g . puts a working diode on PATH, usable from any directory', async (t) => {
  const prefix = tempDir(t, 'diode-prefix-');
  // --ignore-scripts: `npm test` has built dist/diode.cjs already; prepare would rebuild it under the other tests' feet.
  await run('npm', ['install', '-g', '.', '--prefix', prefix, '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: ROOT, timeout: 120_000 });
  t.true(existsSync(join(prefix, 'bin', 'diode')));
  const elsewhere = tempDir(t);
  const env = { ...process.env, PATH: `${join(prefix, 'bin')}:${process.env.PATH}` };
  const version = await run('diode', ['--version'], { cwd: elsewhere, env });
  t.regex(version.stdout, /^diode \d+\.\d+\.\d+ \(commit /);
  const address = await run('diode', ['--home', join(elsewhere, 'state'), 'address'], { cwd: elsewhere, env });
  t.regex(address.stdout, /^0x[0-9a-fA-F]{40}\n$/);
});

test('17.11 the npm pack tarball holds the bundle and its chunks, which run alone outside the clone', async (t) => {
  const out = tempDir(t, 'diode-pack-');
  const packed = await run('npm', ['pack', '--ignore-scripts', '--pack-destination', out, '--json'], { cwd: ROOT, timeout: 120_000 });
  const [info] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  t.true(info.files.some((f) => f.path === 'dist/diode.cjs'));
  // The loader needs the program's chunks beside it (scripts/build.mjs).
  t.true(info.files.some((f) => f.path === 'dist/chunks/main.js'));
  await run('tar', ['xzf', join(out, info.filename.replace(/^.*\//, '')), '-C', out]);
  t.false(readdirSync(join(out, 'package')).includes('node_modules'));
  const { stdout } = await run(process.execPath, [join(out, 'package', 'dist', 'diode.cjs'), 'address', '--home', join(out, 'state')], { cwd: out });
  t.regex(stdout, /^0x[0-9a-fA-F]{40}\n$/);
});
