import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { ExecutionContext } from 'ava';
import { runDiode } from './diode.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** The launcher the package and the image install as /usr/lib/diode/launch. */
export const LAUNCHER = join(ROOT, 'packaging/diode-launch');

/**
 * A build of the agent with another version: the whole program as one
 * CommonJS file run by node through its #! line (what scripts/build.mjs
 * made before it split the bundle), so two versions take seconds to build;
 * the single executables are for the hw-test. The version is carried as the
 * release mark `diode release sign` reads.
 */
export async function buildVersion(dir: string, version: string, name = `diode-${version}-linux-x64`): Promise<string> {
  const outfile = join(dir, name);
  await build({
    entryPoints: [join(ROOT, 'agent/cli/main.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    minifyWhitespace: true,
    charset: 'ascii',
    banner: { js: '#!/usr/bin/env node' },
    define: {
      __DIODE_VERSION_MARK__: JSON.stringify(`diode-version=${version};`),
      __DIODE_COMMIT__: JSON.stringify('test'),
    },
    logLevel: 'warning',
  });
  chmodSync(outfile, 0o755);
  return outfile;
}

/**
 * A "release" that is a shell script: it answers --version as diode
 * `version` would and otherwise `body` (sleeps: it never reaches a relay).
 */
export function scriptRelease(dir: string, version: string, body = 'exec sleep 600'): string {
  const path = join(dir, `diode-${version}-script`);
  writeFileSync(path, `#!/bin/sh\n# diode-version=${version};\nif [ "\${1:-}" = --version ]; then echo "diode ${version} (commit script)"; exit 0; fi\n${body}\n`, { mode: 0o755 });
  return path;
}

/** A release key in dir (diode release keygen) and its address. */
export async function releaseKey(dir: string, name = 'release.key'): Promise<{ path: string; address: string }> {
  const path = join(dir, name);
  const r = await runDiode(['release', 'keygen', '--key-file', path]);
  if (r.code !== 0) throw new Error(`keygen failed: ${r.stderr}`);
  return { path, address: r.stdout.trim() };
}

export async function sign(key: string, file: string, extra: string[] = []): Promise<string> {
  const r = await runDiode(['release', 'sign', '--key-file', key, file, ...extra]);
  if (r.code !== 0) throw new Error(`sign failed: ${r.stderr}`);
  return `${file}.release.json`;
}

export interface Supervised {
  /** Everything every generation printed. */
  output(): string;
  /** How many times the launcher was started. */
  starts(): number;
  /** Resolves with the first match of pattern in the output, after `from` (an offset into it). */
  waitFor(pattern: RegExp, timeoutMs?: number, from?: number): Promise<RegExpMatchArray>;
  stop(): Promise<void>;
}

/** ms between a launcher's exit and its next start (systemd's RestartSec, shortened for tests). */
const RESTART_MS = 500;

/**
 * The launcher under a service manager's Restart=always, as systemd runs it
 * (there is no systemd as PID 1 here): started again RESTART_MS after every
 * exit until the test ends. `packaged` plays /usr/bin/diode.
 */
export function superviseLauncher(t: ExecutionContext, options: { home: string; packaged: string; args: string[]; trialSeconds?: number }): Supervised {
  let output = '';
  let starts = 0;
  let child: ChildProcess | undefined;
  let stopped = false;
  const listeners = new Set<() => void>();
  const launch = () => {
    if (stopped) return;
    starts++;
    output += `[supervisor] start ${starts}\n`;
    child = spawn('sh', [LAUNCHER, ...options.args], {
      env: {
        ...process.env,
        DIODE_HOME: options.home,
        DIODE_PACKAGED: options.packaged,
        ...(options.trialSeconds !== undefined ? { DIODE_TRIAL_SECONDS: String(options.trialSeconds) } : {}),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const onChunk = (chunk: Buffer) => {
      output += chunk.toString();
      for (const l of listeners) l();
    };
    child.stdout!.on('data', onChunk);
    child.stderr!.on('data', onChunk);
    child.once('close', (code, signal) => {
      output += `[supervisor] exited ${code ?? signal}\n`;
      for (const l of listeners) l();
      setTimeout(launch, RESTART_MS);
    });
  };
  launch();
  const stop = async () => {
    stopped = true;
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    // The whole process group: the launcher and, on trial, the agent it started.
    const closed = new Promise((resolve) => c.once('close', resolve));
    try {
      process.kill(-c.pid!, 'SIGTERM');
    } catch {}
    const timer = setTimeout(() => {
      try {
        process.kill(-c.pid!, 'SIGKILL');
      } catch {}
    }, 5_000);
    await closed;
    clearTimeout(timer);
  };
  t.teardown(stop);
  t.teardown(() => {
    if (!t.passed) process.stderr.write(`\n[${t.title}] supervised launcher output:\n  ${output.trimEnd().split('\n').slice(-60).join('\n  ')}\n`);
  });
  return {
    output: () => output,
    starts: () => starts,
    stop,
    waitFor(pattern, timeoutMs = 30_000, from = 0) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = output.slice(from).match(pattern);
          if (m) {
            done();
            resolve(m);
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`timed out waiting for ${pattern}; output:\n${output.slice(-4000)}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        listeners.add(check);
        check();
      });
    },
  };
}
