// Trial (issue 27 item 3), not part of `npm run bench`: new-connection and
// round-trip times of one or more diode builds against direct and the ssh
// tunnel, in turns as `npm run bench` takes them, with the CPU each process
// spent per set-up and per round trip (utime + stime from /proc), to see
// which hop the time goes to. Kept so the set-up and round-trip figures in
// bench/README.md can be reproduced and A/B-tested quickly (a minute, not
// the standard run's ten).
//
//   flock /work/locks/heavy npx tsx bench/trials/latency.ts [--bundle dist/diode.cjs ...] [--ssh] [--setups 300] [--rtts 2000] [--rounds 1]
//
// `--bundle FILE` may be given several times (A/B); each bundle gets its own
// path, all up at once. `--node-arg=X` passes a node flag to every diode
// process (e.g. --cpu-prof). `--floor` adds two chains of three plain TCP
// forwarders in place of socksd, relay and publish: socat (C, one read and
// one write per hop) and minimal Node pipes: what three process hops cost
// on this host before any protocol, encryption or splice logic. `--bulk MiB`
// adds, per round, `--bulk-trials` single-stream uploads of that size per
// path in turns, with the MB/s and each process's CPU seconds per GiB: an
// A/B of the CPU figures within one run (separate runs on this VM differ
// by up to half for the same code). `--idle N` opens and closes N echo
// streams per path (50 at a time, as the standard run's idle-stream
// figure does) before each round's uploads. `--gap ms` waits that long
// before each new connection (its CPU per op then includes the gap's idle
// timers).
import { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { Socket } from 'node:net';
import { cpuSeconds, installCleanupHandlers, stopAll } from '../lib/procs.ts';
import { floorPaths } from '../lib/floor.ts';
import { openEcho, readExactly, sendBulk, timeSetup } from '../lib/client.ts';
import { buildBundle, diodePath, directPath, removeScratch, scratch, sshPath, startSink, type Path } from '../lib/paths.ts';
import { quantile, sleep } from '../lib/stats.ts';

const { values } = parseArgs({
  options: {
    bundle: { type: 'string', multiple: true, default: [] },
    ssh: { type: 'boolean', default: false },
    setups: { type: 'string', default: '300' },
    'setup-warmup': { type: 'string', default: '100' },
    rtts: { type: 'string', default: '2000' },
    'rtt-warmup': { type: 'string', default: '3000' },
    block: { type: 'string', default: '100' },
    rounds: { type: 'string', default: '1' },
    'node-arg': { type: 'string', multiple: true, default: [] },
    floor: { type: 'boolean', default: false },
    bulk: { type: 'string', default: '0' },
    idle: { type: 'string', default: '0' },
    gap: { type: 'string', default: '0' },
    'bulk-trials': { type: 'string', default: '3' },
  },
});

installCleanupHandlers();
const bundles = values.bundle!.length > 0 ? values.bundle!.map((b) => resolve(b)) : [buildBundle(scratch('bundle'))];
const sink = await startSink();
const paths: Array<{ label: string; path: Path }> = [{ label: 'direct', path: directPath(sink.port) }];
for (const [i, bundle] of bundles.entries()) {
  const path = await diodePath(sink.port, { bundle, nodeArgs: () => values['node-arg']! });
  paths.push({ label: bundles.length > 1 ? `diode#${i + 1}` : 'diode', path });
}
if (values.ssh) paths.push({ label: 'ssh', path: await sshPath(sink.port) });

if (values.floor) for (const f of await floorPaths(sink.port, console.log)) paths.push({ label: f.name, path: { name: 'direct', connector: f.connector, processes: f.processes, info: {} } });
const r = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

/** Runs `measure(k)` total times per path in blocks, in turns; the samples after `skip`, and each path's processes' CPU over its own blocks. */
async function inTurns(total: number, block: number, skip: number, measure: (k: number) => Promise<number>): Promise<{ samples: number[][]; cpu: number[][] }> {
  const samples: number[][] = paths.map(() => []);
  const cpu: number[][] = paths.map(({ path }) => path.processes.map(() => 0));
  for (let done = 0; done < total; done += block) {
    for (let k = 0; k < paths.length; k++) {
      const before = paths[k].path.processes.map((p) => cpuSeconds(p));
      for (let i = done; i < Math.min(done + block, total); i++) {
        const sample = await measure(k);
        if (i >= skip) samples[k].push(sample);
      }
      if (done >= skip) paths[k].path.processes.forEach((p, j) => (cpu[k][j] += cpuSeconds(p) - before[j]));
    }
  }
  return { samples, cpu };
}

function report(what: string, unit: string, result: { samples: number[][]; cpu: number[][] }, perOpUnit: 'ms' | 'µs', base = 0): void {
  for (const [k, { label, path }] of paths.entries()) {
    const s = result.samples[k];
    const p50 = quantile(s, 0.5);
    const p99 = quantile(s, 0.99);
    const scale = perOpUnit === 'ms' ? 1e3 : 1e6;
    const per = path.processes.map((p, j) => `${p.name} ${r((result.cpu[k][j] * scale) / s.length, 2)}`).join(', ');
    const added = base > 0 && label !== 'direct' ? ` (added p50 ${r(p50 - base)} ${unit})` : '';
    console.log(`${what} ${label}: p50 ${r(p50)} p90 ${r(quantile(s, 0.9))} p99 ${r(p99)} ${unit}${added}; CPU ${perOpUnit} per op: ${per || '-'}`);
  }
}

await sleep(1000);
console.log(`load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}; ${bundles.join(', ')}`);
const setups = Number(values.setups);
const setupWarmup = Number(values['setup-warmup']);
const rtts = Number(values.rtts);
const rttWarmup = Number(values['rtt-warmup']);
const block = Number(values.block);
for (let round = 1; round <= Number(values.rounds); round++) {
  const gap = Number(values.gap);
  const set = await inTurns(setupWarmup + setups, Math.max(1, block / 5), setupWarmup, async (k) => {
    // With --gap, each set-up starts that many ms after the one before: the last one's close and
    // pool refill are done, as for one ssh login after another rather than a stream of them.
    if (gap > 0) await sleep(gap);
    return timeSetup(paths[k].path.connector);
  });
  report(`round ${round} set-up`, 'ms', set, 'ms');
  const sockets: Socket[] = [];
  for (const { path } of paths) sockets.push(await openEcho(path.connector));
  const message = Buffer.alloc(64, 0x5a);
  const rtt = await inTurns(rttWarmup + rtts, block, rttWarmup, async (k) => {
    const start = process.hrtime.bigint();
    sockets[k].write(message);
    await readExactly(sockets[k], 64);
    return Number(process.hrtime.bigint() - start) / 1e3;
  });
  for (const s of sockets) s.destroy();
  const bulkBytes = Number(values.bulk) * 1024 * 1024;
  for (const { path } of Number(values.idle) > 0 ? paths : []) {
    const idle: Socket[] = [];
    for (let i = 0; i < Number(values.idle); i += 50) idle.push(...(await Promise.all(Array.from({ length: Math.min(50, Number(values.idle) - i) }, () => openEcho(path.connector)))));
    await sleep(1000);
    for (const s of idle) s.destroy();
  }
  if (bulkBytes > 0) {
    const trials = Number(values['bulk-trials']);
    // The first upload of each path is a warm-up (TurboFan, pools, buffers), not counted.
    const bulk = await inTurns(trials + 1, 1, 1, async (k) => {
      const t = await sendBulk(await paths[k].path.connector(), bulkBytes);
      return t.bytes / 1e6 / (t.ms / 1000);
    });
    for (const [k, { label, path }] of paths.entries()) {
      const gib = (bulkBytes * trials) / 2 ** 30;
      const per = path.processes.map((p, j) => `${p.name} ${r(bulk.cpu[k][j] / gib)}`).join(', ');
      console.log(`round ${round} bulk ${label}: MB/s ${bulk.samples[k].map((x) => r(x, 0)).join(' / ')}; CPU s/GiB ${per || '-'}`);
    }
  }
  const direct = rtt.samples[0];
  report(`round ${round} round trip`, 'µs', rtt, 'µs', quantile(direct, 0.5));
  for (const [k, { label }] of paths.entries()) {
    if (k === 0) continue;
    console.log(`round ${round} ${label}: added over direct p50 ${r((quantile(rtt.samples[k], 0.5) - quantile(direct, 0.5)) / 1e3)} ms, p99 ${r((quantile(rtt.samples[k], 0.99) - quantile(direct, 0.99)) / 1e3)} ms`);
  }
}
console.log(`load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
await stopAll();
await sink.proc.stop();
removeScratch();
process.exit(0);
