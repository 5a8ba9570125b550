// The soak's churn phase (issue 19, item 5): streams opening and closing at
// >= 20/s while the soak's bulk and slow-reader streams flow, and one more
// device that is killed and restarted every 30 s. Every churn stream echoes
// random bytes through the path and compares their SHA-256 on the way back:
// any byte that did not come back intact is counted as lost.
import { createHash, randomBytes } from 'node:crypto';
import { openEcho, readExactly, socks5Connect, type Connector } from '../lib/client.ts';
import { scratch, untilOpen, type Path } from '../lib/paths.ts';
import type { BenchProcess } from '../lib/procs.ts';
import { median, round, sleep } from '../lib/stats.ts';

/** Streams opened per second across all churn workers (the issue asks >= 20/s). */
const CHURN_RATE = 25;
/** Churn streams open at once at most (the soak had 16 parallel connections). */
const CHURN_PARALLEL = 16;
/** Bytes each churn stream echoes: 1 to this many, random. */
const CHURN_MAX_BYTES = 64 * 1024;
/** ms a churn stream may take before it counts as failed (its bytes lost). */
const CHURN_STREAM_TIMEOUT_MS = 15_000;
/** ms between the flapping device's restarts. */
const FLAP_EVERY_MS = 30_000;
/** The flapping device's remote port (the stable one publishes 9000). */
const FLAP_REMOTE_PORT = 9001;

export interface ChurnResult {
  /** Churn streams completed (opened, echoed, checked, closed). */
  streams: number;
  streamsPerSec: number;
  /** Streams that failed (error, timeout or checksum mismatch); their bytes count as lost. */
  failed: number;
  firstError?: string;
  bytesSent: number;
  /** Bytes sent on streams that did not come back byte for byte (SHA-256 compared). */
  bytesLost: number;
  /** Per-stream set-up (connect to first echoed byte), ms. */
  setupP50ms: number;
  flap: { restarts: number; everyS: number; reachableP50ms: number; reachableMaxms: number; streamsChecked: number; failed: number };
}

/** One stream: echo `n` random bytes and compare what came back. Resolves with the sent size; rejects on any difference. */
async function echoChecked(connector: Connector, n: number): Promise<{ bytes: number; setupMs: number }> {
  const start = performance.now();
  const socket = await openEcho(connector);
  const setupMs = performance.now() - start;
  try {
    const payload = randomBytes(n);
    const sent = createHash('sha256').update(payload).digest('hex');
    socket.write(payload);
    const back = await readExactly(socket, n);
    const got = createHash('sha256').update(back).digest('hex');
    if (got !== sent) throw new Error(`echo of ${n} bytes came back different (sha256 ${got} != ${sent})`);
    return { bytes: n, setupMs };
  } finally {
    socket.destroy();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Runs the churn until `deadline` (Date.now() ms). Needs a diode path (for
 * the flapping device); the checks run on `path.connector`.
 */
export async function churn(path: Path, deadline: number, log: (line: string) => void): Promise<ChurnResult> {
  if (!path.diode) throw new Error('the churn phase needs the diode path');
  const started = Date.now();
  const result = { streams: 0, failed: 0, firstError: undefined as string | undefined, bytesSent: 0, bytesLost: 0 };
  const setups: number[] = [];
  const fail = (err: unknown, bytes: number) => {
    result.failed++;
    result.bytesLost += bytes;
    result.firstError ??= err instanceof Error ? err.message : String(err);
  };

  // Streams are started on a fixed schedule (CHURN_RATE per second), each in a free slot.
  let slots = CHURN_PARALLEL;
  let wake: (() => void) | undefined;
  const inFlight = new Set<Promise<void>>();
  const interval = 1000 / CHURN_RATE;
  let next = performance.now();
  const churnLoop = async () => {
    while (Date.now() < deadline) {
      const wait = next - performance.now();
      if (wait > 0) await sleep(wait);
      next += interval;
      while (slots === 0) await new Promise<void>((resolve) => (wake = resolve));
      slots--;
      const n = 1 + Math.floor(Math.random() * CHURN_MAX_BYTES);
      result.bytesSent += n;
      const p = withTimeout(echoChecked(path.connector, n), CHURN_STREAM_TIMEOUT_MS, 'churn stream')
        .then(
          (r) => {
            result.streams++;
            setups.push(r.setupMs);
          },
          (err) => fail(err, n),
        )
        .finally(() => {
          slots++;
          inFlight.delete(p);
          wake?.();
          wake = undefined;
        });
      inFlight.add(p);
    }
    await Promise.all(inFlight);
  };

  // The flapping device: same key every time, killed hard and started again every FLAP_EVERY_MS.
  const { node, relayPort, socksPort, sinkPort } = path.diode;
  const home = scratch('flap');
  const flap = { restarts: 0, reachable: [] as number[], streamsChecked: 0, failed: 0 };
  let device: BenchProcess | undefined;
  const startDevice = () => node('flapping', ['publish', '-public', `${sinkPort}:${FLAP_REMOTE_PORT}`, '--relay', `127.0.0.1:${relayPort}`, '--home', home]);
  const flapLoop = async () => {
    device = startDevice();
    const address = (await device.waitFor(/ as (0x[0-9a-fA-F]{40})/))[1];
    const connector = () => socks5Connect(socksPort, `${address}.diode`, FLAP_REMOTE_PORT);
    while (Date.now() + FLAP_EVERY_MS < deadline) {
      await sleep(FLAP_EVERY_MS);
      device.child.kill('SIGKILL');
      await device.stop();
      const t = performance.now();
      device = startDevice();
      flap.restarts++;
      try {
        await untilOpen(connector, 'flapping device');
        flap.reachable.push(performance.now() - t);
        // A checked stream through it each time it is back.
        flap.streamsChecked++;
        const n = 1 + Math.floor(Math.random() * CHURN_MAX_BYTES);
        result.bytesSent += n;
        await withTimeout(echoChecked(connector, n), CHURN_STREAM_TIMEOUT_MS, 'flapping device stream').catch((err) => {
          flap.failed++;
          fail(err, n);
        });
      } catch (err) {
        flap.failed++;
        log(`churn: flapping device not back: ${String(err)}`);
      }
    }
  };
  try {
    await Promise.all([churnLoop(), flapLoop()]);
  } finally {
    await device?.stop();
  }
  const seconds = (Date.now() - started) / 1000;
  return {
    streams: result.streams,
    streamsPerSec: round(result.streams / seconds),
    failed: result.failed,
    ...(result.firstError ? { firstError: result.firstError } : {}),
    bytesSent: result.bytesSent,
    bytesLost: result.bytesLost,
    setupP50ms: round(median(setups)),
    flap: {
      restarts: flap.restarts,
      everyS: FLAP_EVERY_MS / 1000,
      reachableP50ms: round(median(flap.reachable)),
      reachableMaxms: round(Math.max(0, ...flap.reachable)),
      streamsChecked: flap.streamsChecked,
      failed: flap.failed,
    },
  };
}
