// Simulated devices for the relay-scale scenario, in a process of their own so
// the relay's RSS is the relay's alone. Each device is what `diode publish`
// does on connect: TCP + TLS 1.3 + signed hello (dialRelay), a yamux client
// session with the agent's keep-alive, and a control stream with a publish set.
// Protocol with the parent (IPC): we send {ready}, wait for {go}, send {done}.
// With --link 1 each device is a RelayLink, the agent's own reconnecting link
// (backoff, jitter): the parent may then ask {count} at any time and gets
// {count, up} (devices with a session and an acknowledged publish set), to
// time a fleet's return after a relay restart (bench/scenarios/readmit.ts).
import { randomBytes } from 'node:crypto';
import { Identity } from '../agent/identity/index.ts';
import { dialRelay } from '../agent/link/dial-relay.ts';
import { MuxSession } from '../agent/mux/index.ts';
import { readFrame, writeFrame } from '../agent/protocol/frames.ts';
import { parseReply } from '../agent/protocol/messages.ts';
import { RelayLink } from '../agent/link/relay-link.ts';
import type { Logger } from '../agent/util/log.ts';
import { KEEPALIVE_INTERVAL_MS, KEEPALIVE_TIMEOUT_MS, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS } from '../agent/protocol/limits.ts';

/** The port each simulated device publishes (a name on the relay only). */
const PUBLISHED_PORT = 22;

interface Args {
  relayPort: number;
  count: number;
  concurrency: number;
  link: boolean;
}

function parse(argv: string[]): Args {
  const get = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    if (i < 0 || i + 1 >= argv.length) throw new Error(`devices: --${name} is required`);
    return Number(argv[i + 1]);
  };
  const link = argv.includes('--link') && get('link') === 1;
  return { relayPort: get('relay'), count: get('count'), concurrency: link ? 0 : get('concurrency'), link };
}

const sessions: MuxSession[] = [];

async function connectDevice(identity: Identity, relayPort: number): Promise<void> {
  const { socket } = await dialRelay({ host: '127.0.0.1', port: relayPort }, identity);
  const session = new MuxSession(socket, { role: 'client', keepAliveInterval: KEEPALIVE_INTERVAL_MS, keepAliveTimeout: KEEPALIVE_TIMEOUT_MS });
  session.on('stream', (s) => s.reset());
  sessions.push(session);
  const control = session.open();
  control.on('error', () => {});
  writeFrame(control, { t: 'publish', ports: [{ port: PUBLISHED_PORT, mode: 'public' }] });
  const reply = parseReply(await readFrame(control, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS));
  if (reply.t === 'error') throw new Error(`publish refused: ${reply.message}`);
}

/** Warnings of all links, counted by their text (addresses and numbers blanked): what the fleet saw while away. */
const problems = new Map<string, number>();
const countingLogger: Logger = {
  debug() {},
  info() {},
  warn(m) {
    const key = m.replace(/0x[0-9a-fA-F]{40}/g, '0x…').replace(/\d+/g, 'N').slice(0, 160);
    problems.set(key, (problems.get(key) ?? 0) + 1);
  },
  error(m) {
    countingLogger.warn(m);
  },
  child: () => countingLogger,
};

/** Devices as RelayLinks: each connects, publishes and reconnects as `diode publish` does. */
async function runLinks(identities: Identity[], relayPort: number): Promise<void> {
  let up = 0;
  const links = identities.map((identity) => {
    const link = new RelayLink({ relays: [{ host: '127.0.0.1', port: relayPort }], identity, log: countingLogger, publish: [{ port: PUBLISHED_PORT, mode: 'public' }], watchNetwork: false });
    link.on('up', () => up++);
    link.on('down', () => up--);
    return link;
  });
  const start = performance.now();
  let reported = false;
  process.on('message', (m: { t?: string }) => {
    if (m.t === 'count') process.send!({ t: 'count', up, problems: [...problems.entries()].sort((a, b) => b[1] - a[1]).slice(0, 6) });
  });
  // The first admission is a fleet's first boot, not what is measured: started 50 at a time.
  let next = 0;
  const lane = async () => {
    while (next < links.length) {
      const link = links[next++];
      const up = new Promise((resolve) => link.once('up', resolve));
      link.start();
      await up;
    }
  };
  await Promise.all(Array.from({ length: Math.min(50, links.length) }, lane));
  await new Promise<void>((resolve) => {
    const check = setInterval(() => {
      if (up < links.length || reported) return;
      reported = true;
      clearInterval(check);
      resolve();
    }, 50);
  });
  process.send!({ t: 'done', admitted: up, failed: 0, firstError: '', ms: performance.now() - start });
}

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  // Keys first: key generation is the device's first boot, not part of admission.
  // (A raw 32-byte key: Identity.random() derives an HD wallet, ~50 ms per key.)
  const identities = Array.from({ length: args.count }, () => new Identity(`0x${randomBytes(32).toString('hex')}`));
  process.send!({ t: 'ready' });
  await new Promise<void>((resolve) => process.once('message', () => resolve()));
  if (args.link) return runLinks(identities, args.relayPort);
  const start = performance.now();
  let next = 0;
  let failed = 0;
  let firstError = '';
  const lane = async () => {
    while (next < identities.length) {
      const identity = identities[next++];
      try {
        await connectDevice(identity, args.relayPort);
      } catch (err) {
        failed++;
        firstError ||= err instanceof Error ? err.message : String(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(args.concurrency, args.count) }, lane));
  process.send!({ t: 'done', admitted: args.count - failed, failed, firstError, ms: performance.now() - start });
  // Stay connected (answering keep-alives) until the parent kills us.
}

process.on('SIGTERM', () => process.exit(0));
main().catch((err) => {
  process.stderr.write(`devices: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
