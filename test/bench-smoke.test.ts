import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DIODE_BUNDLE } from './helpers/diode.ts';

const REPO = fileURLToPath(new URL('../', import.meta.url));

const positive = (n: unknown): boolean => typeof n === 'number' && Number.isFinite(n) && n > 0;

test('bench --quick --scenario diode writes a JSON with every figure of the diode path', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'diode-bench-smoke-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'result.json');
  // The test run has just built dist/diode.cjs; the bench uses it instead of bundling again.
  await promisify(execFile)(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--quick', '--scenario', 'diode', '--bundle', DIODE_BUNDLE, '--out', out], {
    cwd: REPO,
    timeout: 150_000,
  });
  const result = JSON.parse(readFileSync(out, 'utf8'));
  t.true(result.quick);
  t.true(Array.isArray(result.loadAverage.start));
  const diode = result.paths.diode;
  t.truthy(diode, 'the diode path was measured');
  t.true(positive(diode.singleStream.medianMBps));
  t.true(positive(diode.multiStream.totalMBps));
  t.is(diode.multiStream.streams, 64);
  t.true(positive(diode.multiStream.minStreamMBps) && diode.multiStream.minStreamMBps <= diode.multiStream.maxStreamMBps);
  t.true(diode.multiStream.fairness > 0 && diode.multiStream.fairness <= 1);
  t.true(positive(diode.rtt.p50us) && diode.rtt.p50us <= diode.rtt.p99us);
  t.true(positive(diode.setup.p50ms) && diode.setup.p50ms <= diode.setup.p99ms);
  for (const role of ['socksd', 'relay', 'publish', 'client', 'sink']) {
    const p = diode.processes[role];
    t.truthy(p, `figures for ${role}`);
    t.true(p.cpuSecPerGiB >= 0, `${role} CPU`);
    for (const rss of [p.rssIdleMB, p.rssIdleStreamsMB, p.rssTransferMB]) t.true(positive(rss), `${role} RSS`);
  }
  t.true(result.targets.some((x: { target: string }) => /new connection/.test(x.target)));
});
