// Issue 29 item 4: backoff that suits a battery and a mobile plan. While a
// relay cannot be reached the link used to retry every 3 s or less, forever.
// Now: at most every 3 s for the first 5 minutes of failure (a device is still
// back within 5 s of a short outage), then every 30-60 s; a change of the
// machine's network starts over at once.
import test from 'ava';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { Identity } from '../agent/identity/index.ts';
import { RelayLink } from '../agent/link/relay-link.ts';
import { backoffDelay, defaultBackoff } from '../agent/link/backoff.ts';
import { createLogger } from '../agent/util/log.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('item 4: the stated figures: at most 3 s apart for 5 min of failure, then 30-60 s apart', (t) => {
  t.deepEqual({ ...defaultBackoff }, { baseMs: 250, maxMs: 3_000, patienceMs: 5 * 60_000, slowMaxMs: 60_000 });
  for (const failingFor of [0, 60_000, 5 * 60_000 - 1]) {
    for (let attempt = 0; attempt < 40; attempt++) t.true(backoffDelay(attempt, defaultBackoff, Math.random, failingFor) <= 3_000);
  }
  for (const failingFor of [5 * 60_000, 24 * 3600_000]) {
    t.is(backoffDelay(3, defaultBackoff, () => 0, failingFor), 30_000);
    t.is(backoffDelay(3, defaultBackoff, () => 1, failingFor), 60_000);
  }
});

test('item 4: a relay that stays unreachable is tried less often after the patience; a network change retries at once', async (t) => {
  // Stands for a relay that cannot be reached: every connection is reset at once.
  const tries: number[] = [];
  const server = createServer((s: Socket) => {
    tries.push(performance.now());
    s.resetAndDestroy();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const lines: string[] = [];
  let networkChanged: () => void = () => {};
  // The same mechanism with its times scaled down: patience 1 s, then waits of 2-4 s.
  const link = new RelayLink({
    relays: [{ host: '127.0.0.1', port: (server.address() as AddressInfo).port }],
    identity: Identity.random(),
    log: createLogger('publish', (l) => lines.push(l)),
    publish: [{ port: 22, mode: 'public' }],
    backoff: { baseMs: 20, maxMs: 100, patienceMs: 1_000, slowMaxMs: 4_000 },
    watchNetwork: (onChange) => {
      networkChanged = onChange;
      return () => {};
    },
  });
  const started = performance.now();
  link.start();
  t.teardown(() => link.stop());
  await sleep(9_000);
  const fast = tries.filter((at) => at - started < 1_000);
  const slow = tries.filter((at) => at - started >= 1_500);
  const gaps = slow.slice(1).map((at, i) => at - slow[i]);
  t.log(`${fast.length} tries in the first second; then gaps of ${gaps.map((g) => `${(g / 1000).toFixed(1)} s`).join(', ')}`);
  t.true(fast.length >= 4, 'tries follow each other quickly while the failure is recent');
  t.true(slow.length >= 2 && gaps.every((g) => g >= 1_900), 'then at least half the slow ceiling apart');
  t.true(lines.some((l) => /no relay reached for [\d.]+ s; retrying every 2-4 s from now on \(at once when the network changes\)/.test(l)), lines.join('\n'));
  t.true(lines.some((l) => l.endsWith('; retrying with backoff (up to 0.1 s, every 2-4 s after 1 s of failure)')), lines.join('\n'));

  const before = tries.length;
  const changedAt = performance.now();
  networkChanged();
  while (tries.length === before && performance.now() - changedAt < 5_000) await sleep(20);
  const after = tries.length > before ? tries[before] - changedAt : Infinity;
  t.log(`network change → next try after ${after.toFixed(0)} ms`);
  t.true(after < 1_000, 'a network change retries at once, slow phase or not');
});
