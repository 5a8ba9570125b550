// Trial (issue 27 item 3), not part of `npm run bench`: bursts of parallel
// streams through one diode path (relay, publish, socksd from a bundle),
// first right after start (cold pools: only the ready connections), then
// again (pools grown to the burst). Per burst: the total, the per-stream
// rates (min, quartiles, max) and the relay's count of stream legs (data
// connection or relay link, client leg first), to see which streams were
// spliced and what the link streams got beside them. Kept so the figures in
// bench/README.md ("The data path (issue 27)", streams beyond the ready
// pool) can be reproduced.
//
//   flock /work/locks/heavy npx tsx bench/trials/burst.ts [--bundle dist/diode.cjs ...] [--streams 64] [--mib 16] [--rounds 3] [--relay-flag X ...]
//
// With several --bundle, each gets its own path (all up at once) and the
// rounds take turns between them, so that each meets the same moments.
// `--bundle FILE@--flag=value,...` adds relay flags to that path's relay
// (e.g. `@--max-data-per-session=0`: every stream on the relay links).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startProcess, stopAll, installCleanupHandlers } from '../lib/procs.ts';
import { socks5Connect, sendBulk } from '../lib/client.ts';
import { startSink, untilOpen } from '../lib/paths.ts';
import { quantile, sleep } from '../lib/stats.ts';

const { values } = parseArgs({
  options: {
    bundle: { type: 'string', multiple: true, default: ['dist/diode.cjs'] },
    streams: { type: 'string', default: '64' },
    mib: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '3' },
    'relay-flag': { type: 'string', multiple: true, default: [] },
  },
});
const streams = Number(values.streams);
const each = Number(values.mib) * 1024 * 1024;
const homes: string[] = [];
const home = (p: string) => {
  const d = mkdtempSync(join(tmpdir(), `diode-burst-${p}-`));
  homes.push(d);
  return d;
};

installCleanupHandlers();
const sink = await startSink();
const r = (x: number) => Math.round(x * 100) / 100;

interface BurstPath {
  /** The --bundle argument as given (the path's name in the output). */
  label: string;
  bundle: string;
  relayHome: string;
  connector: () => Promise<Socket>;
  before: Record<string, number>;
}

async function pathOf(label: string): Promise<BurstPath> {
  const [bundle, flags = ''] = label.split('@');
  const relayFlags = flags === '' ? [] : flags.split(',').flatMap((f) => f.split('='));
  const node = (role: string, args: string[]) => startProcess(role, process.execPath, [bundle, ...args], { env: { ...process.env, DIODE_LOG: 'warn' } });
  const relayHome = home('relay');
  const relay = node('relay', ['relay', '--listen', '127.0.0.1:0', '--home', relayHome, '--max-streams-per-caller', '4096', '--max-pending-per-caller', '256', '--max-streams-per-session', '4096', ...values['relay-flag']!, ...relayFlags]);
  const relayPort = Number((await relay.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  const publish = node('publish', ['publish', '-public', `${sink.port}:9000`, '--relay', `127.0.0.1:${relayPort}`, '--home', home('device')]);
  const socksd = node('socksd', ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relayPort}`, '--home', home('client')]);
  const address = (await publish.waitFor(/ as (0x[0-9a-fA-F]{40})/))[1];
  const socksPort = Number((await socksd.waitFor(/socksd 0x[0-9a-fA-F]{40} listening on 127\.0\.0\.1:(\d+)/))[1]);
  const connector = () => socks5Connect(socksPort, `${address}.diode`, 9000);
  await untilOpen(connector, 'diode path');
  return { label, bundle, relayHome, connector, before: legs(bundle, relayHome) };
}

function legs(bundle: string, relayHome: string): Record<string, number> {
  const out = execFileSync(process.execPath, [bundle, 'status', '--json', '--home', relayHome]).toString();
  const counters = (JSON.parse(out) as Array<{ counters?: Record<string, number> }>)[0].counters ?? {};
  return Object.fromEntries(['data_data', 'data_link', 'link_data', 'link_link'].map((k) => [k, counters[`stream_legs_${k}`] ?? 0]));
}

async function burst(path: BurstPath, round: number): Promise<void> {
  const opened = await Promise.allSettled(
    Array.from({ length: streams }, () =>
      path.connector().then((sock) => {
        sock.on('error', () => {});
        return sock;
      }),
    ),
  );
  const sockets = opened.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
  const start = process.hrtime.bigint();
  const settled = await Promise.allSettled(sockets.map((sock) => sendBulk(sock, each)));
  const wallMs = Number(process.hrtime.bigint() - start) / 1e6;
  const transfers = settled.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
  const failed = [...opened, ...settled].filter((o) => o.status === 'rejected').map((o) => String((o as PromiseRejectedResult).reason));
  const rates = transfers.map((t) => t.bytes / 1e6 / (t.ms / 1000)).sort((a, b) => a - b);
  const after = legs(path.bundle, path.relayHome);
  const delta = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - path.before[k]]));
  path.before = after;
  console.log(
    `${path.label} round ${round}: ${transfers.length} × ${values.mib} MiB total ${r((transfers.length * each) / 1e6 / (wallMs / 1000))} MB/s; per stream min ${r(rates[0])} p25 ${r(quantile(rates, 0.25))} p50 ${r(quantile(rates, 0.5))} p75 ${r(quantile(rates, 0.75))} max ${r(rates[rates.length - 1])} MB/s; legs (client_device) ${JSON.stringify(delta)}${failed.length > 0 ? `; ${failed.length} failed: ${[...new Set(failed)].join('; ')}` : ''}`,
  );
}

const paths: BurstPath[] = [];
for (const bundle of values.bundle!) paths.push(await pathOf(bundle));
await sleep(1500);
console.log(`load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
for (let round = 1; round <= Number(values.rounds); round++) {
  for (const path of paths) {
    await burst(path, round);
    await sleep(2000);
  }
}
console.log(`load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
await stopAll();
for (const d of homes) rmSync(d, { recursive: true, force: true });
process.exit(0);
