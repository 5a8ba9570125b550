// Issue 14, item 9: 10,000 malformed connections at a live relay; then an honest ssh works and the relay's RSS comes back.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { startRelay, startPublish, startSocksd } from './helpers/diode.ts';
import { startSshd, sshOptions } from './helpers/sshd.ts';
import { encodeFrame } from '../agent/protocol/frames.ts';
import { PROTOCOL_VERSION } from '../agent/protocol/messages.ts';

const run = promisify(execFile);
/** Malformed connections in all; at most this many at once; from this many loopback sources (127.0.0.2 ...). */
const TOTAL = 10_000;
const CONCURRENCY = 200;
const SOURCES = 40;
/** ms a single attack connection may live (bounded in count and time). */
const CONN_DEADLINE_MS = 1_500;
/** ms an attack connection waits after its last byte before it goes (it does not wait for the relay's answer). */
const LINGER_MS = 30;

function rss(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}

type Kind = 'random' | 'half-tls' | 'garbage-hello' | 'oversize';
const KINDS: Kind[] = ['random', 'half-tls', 'garbage-hello', 'oversize'];

/** One malformed connection of `kind` at 127.0.0.1:port; resolves when it is closed (by either side or the deadline). */
function malformed(port: number, kind: Kind, localAddress: string): Promise<void> {
  return new Promise((resolve) => {
    const raw = netConnect({ host: '127.0.0.1', port, localAddress });
    const deadline = setTimeout(() => raw.destroy(), CONN_DEADLINE_MS);
    raw.on('error', () => {});
    raw.once('close', () => {
      clearTimeout(deadline);
      resolve();
    });
    raw.once('connect', () => {
      if (kind === 'random') {
        raw.end(randomBytes(1 + Math.floor(Math.random() * 2000)));
        return;
      }
      const tls = tlsConnect({ socket: raw, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
      tls.on('error', () => {});
      if (kind === 'half-tls') {
        // Gone in the middle of the handshake (or right after the ClientHello).
        setTimeout(() => raw.destroy(), Math.random() * 5);
        return;
      }
      tls.once('secureConnect', () => {
        if (kind === 'oversize') {
          const len = Buffer.alloc(4);
          len.writeUInt32BE(Math.random() < 0.5 ? 0xffff_ffff : 1024 * 1024 + Math.floor(Math.random() * 1e6));
          tls.write(Buffer.concat([len, randomBytes(64)]));
          setTimeout(() => raw.destroy(), LINGER_MS);
        } else {
          const r = Math.random();
          const junk =
            r < 0.3
              ? encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: 'agent', pub: randomBytes(33).toString('hex'), sig: randomBytes(64).toString('hex') })
              : r < 0.6
                ? encodeFrame({ t: 'hello', v: Math.floor(Math.random() * 10), role: randomBytes(3).toString('hex') })
                : Buffer.concat([Buffer.from([0, 0, 0, 40]), randomBytes(40)]);
          tls.write(junk);
          setTimeout(() => raw.destroy(), LINGER_MS);
        }
      });
    });
  });
}

async function flood(port: number, total: number): Promise<Record<Kind, number>> {
  const counts: Record<Kind, number> = { random: 0, 'half-tls': 0, 'garbage-hello': 0, oversize: 0 };
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const i = next++;
      const kind = KINDS[i % KINDS.length];
      counts[kind]++;
      await malformed(port, kind, `127.0.0.${2 + (i % SOURCES)}`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return counts;
}

/**
 * Connections of the warm-up before the baseline. V8 compiles the relay's
 * handshake paths on its compiler threads, whose malloc arenas grow to
 * ≈ 2 MB each while it does (4 threads): memory for code, not kept by the
 * attack. 400 left most of that growth inside the measured flood.
 */
const WARMUP = 2_000;
/** ms the relay rests after the warm-up before the baseline: its heap watch gives a burst's memory back after ≈ 10 s of quiet (agent/cli/gc-tuning.ts). */
const SETTLE_MS = 12_000;
/** ms the relay may take to come back within 10 % of the baseline after the flood. */
const COME_BACK_MS = 30_000;

/**
 * A memory figure is only worth asserting on a quiet machine: beside the whole suite on 2 cores the relay once
 * stayed at +10.6 % after 30 s (alone: +5 to +7 %), so it would fail at random. `npm test` therefore runs this
 * file a second time on its own after the suite (`npm run test:quiet`, DIODE_QUIET_PHASE=1), and the 10,000 case
 * runs only there; the 1,000 case runs in the suite. DIODE_FLOOD_TEST=1 runs it anywhere, by hand.
 */
const quietPhase = process.env.DIODE_QUIET_PHASE === '1';
const floodTest = quietPhase || process.env.DIODE_FLOOD_TEST === '1' ? test : test.skip;
const suiteTest = quietPhase ? test.skip : test;

floodTest('10,000 malformed connections (random bytes, half TLS, garbage hellos, oversize lengths) leave an honest ssh working and the relay RSS within 10 % of where it started (runs in npm test\'s quiet phase)', (t) =>
  floodCase(t, TOTAL, true));

// Always: the same mix at a tenth of the size; the relay survives it and serves an honest ssh (no memory figure).
suiteTest('1,000 malformed connections (random bytes, half TLS, garbage hellos, oversize lengths) leave the relay alive and an honest ssh working', (t) => floodCase(t, TOTAL / 10, false));

async function floodCase(t: ExecutionContext, total: number, checkRss: boolean): Promise<void> {
  t.timeout(240_000);
  const sshd = await startSshd(t);
  const relay = await startRelay(t);
  const device = await startPublish(t, relay.port, ['-public', `${sshd.port}:22`]);
  const socks = await startSocksd(t, relay.port);
  const opts = sshOptions(sshd, socks.port);
  const host = `${sshd.user}@${device.address.toLowerCase()}.diode`;
  const pid = relay.proc.child.pid!;

  const sshWorks = async () => {
    const { stdout } = await run('ssh', [...opts, host, 'echo still-here'], { timeout: 30_000 });
    t.is(stdout, 'still-here\n');
  };
  // Warm up: the relay's code paths for every kind are compiled before the baseline, and the relay is at rest.
  await sshWorks();
  if (checkRss) {
    await flood(relay.port, WARMUP);
    await new Promise((r) => setTimeout(r, SETTLE_MS));
  }
  const before = rss(pid);

  const started = Date.now();
  const counts = await flood(relay.port, total);
  const floodMs = Date.now() - started;
  let peak = rss(pid);

  // RSS comes back (sockets closed, garbage collected, young generation shrunk) within a bounded time.
  let after = peak;
  const end = Date.now() + (checkRss ? COME_BACK_MS : 0);
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, 1000));
    after = rss(pid);
    peak = Math.max(peak, after);
    if (after <= before * 1.1) break;
  }
  const cameBackMs = Date.now() - started - floodMs;
  t.log(`${JSON.stringify(counts)} in ${floodMs} ms; relay RSS ${(before / 2 ** 20).toFixed(1)} MiB before, peak ${(peak / 2 ** 20).toFixed(1)} MiB, ${(after / 2 ** 20).toFixed(1)} MiB ${(cameBackMs / 1000).toFixed(1)} s after (${(((after - before) / before) * 100).toFixed(1)} %)`);
  t.is(relay.proc.child.exitCode, null, 'the relay is alive');
  await sshWorks();
  if (checkRss) t.true(after <= before * 1.1, `relay RSS ${after} bytes ${COME_BACK_MS / 1000} s after, ${before} before`);
}
