// Simulated devices for the relay-scale scenario, in a process of their own so
// the relay's RSS is the relay's alone. Each device is what `diode publish`
// does on connect: TCP + TLS 1.3 + signed hello (dialRelay), a yamux client
// session with the agent's keep-alive, and a control stream with a publish set.
// Protocol with the parent (IPC): we send {ready}, wait for {go}, send {done}.
import { randomBytes } from 'node:crypto';
import { Identity } from '../agent/identity/index.ts';
import { dialRelay } from '../agent/link/dial-relay.ts';
import { MuxSession } from '../agent/mux/index.ts';
import { readFrame, writeFrame } from '../agent/protocol/frames.ts';
import { parseReply } from '../agent/protocol/messages.ts';
import { KEEPALIVE_INTERVAL_MS, KEEPALIVE_TIMEOUT_MS, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS } from '../agent/protocol/limits.ts';

/** The port each simulated device publishes (a name on the relay only). */
const PUBLISHED_PORT = 22;

interface Args {
  relayPort: number;
  count: number;
  concurrency: number;
}

function parse(argv: string[]): Args {
  const get = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    if (i < 0 || i + 1 >= argv.length) throw new Error(`devices: --${name} is required`);
    return Number(argv[i + 1]);
  };
  return { relayPort: get('relay'), count: get('count'), concurrency: get('concurrency') };
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

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  // Keys first: key generation is the device's first boot, not part of admission.
  // (A raw 32-byte key: Identity.random() derives an HD wallet, ~50 ms per key.)
  const identities = Array.from({ length: args.count }, () => new Identity(`0x${randomBytes(32).toString('hex')}`));
  process.send!({ t: 'ready' });
  await new Promise<void>((resolve) => process.once('message', () => resolve()));
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
