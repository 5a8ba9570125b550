import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { Identity } from '../agent/identity/index.ts';
import { startRelay } from '../agent/relay/listen.ts';
import { RelayLink } from '../agent/link/relay-link.ts';
import { encodeFrame, readFrame } from '../agent/protocol/frames.ts';
import type { PublishedPort } from '../agent/protocol/messages.ts';
import { MAX_ALLOWED_ADDRESSES, MAX_PUBLISHED_PORTS } from '../agent/protocol/limits.ts';
import { silentLogger, type Logger } from '../agent/util/log.ts';
import { start, tempDir } from './helpers/diode.ts';

/** Lower-case hex addresses (no checksum to compute: cheap, and valid). */
const addresses = (n: number) => Array.from({ length: n }, () => `0x${randomBytes(20).toString('hex')}`);

/** 256 ports, the first with a full allow list: ≈ 53 KiB of JSON, far above the 4 KiB stream-header limit. */
function fullSet(ports = MAX_PUBLISHED_PORTS, allow = MAX_ALLOWED_ADDRESSES): PublishedPort[] {
  return Array.from({ length: ports }, (_, i) => (i === 0 ? { port: 1, mode: 'private' as const, allow: addresses(allow) } : { port: 1 + i, mode: 'public' as const }));
}

async function relayFor(t: ExecutionContext) {
  const relay = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, home: tempDir(t), identity: Identity.random(), log: silentLogger });
  t.teardown(() => relay.close());
  return relay;
}

function link(t: ExecutionContext, port: number, identity: Identity, publish: PublishedPort[], log: Logger = silentLogger): RelayLink {
  const l = new RelayLink({ relays: [{ host: '127.0.0.1', port }], identity, log, publish, backoff: { baseMs: 50, maxMs: 100 } });
  t.teardown(() => l.stop());
  return l;
}

test('a publish of exactly 256 ports and 1,024 addresses on one port is accepted', async (t) => {
  const relay = await relayFor(t);
  const device = Identity.random();
  const set = fullSet();
  t.true(encodeFrame({ t: 'publish', ports: set }).length > 4096 * 10);
  const l = link(t, relay.port, device, set);
  l.start();
  await l.waitForSession(10_000);
  const session = relay.server.registry.publisher(device.address)!;
  t.is(session.ports.size, MAX_PUBLISHED_PORTS);
  t.is(session.ports.get(1)!.allow!.length, MAX_ALLOWED_ADDRESSES);
});

for (const [what, set, reason] of [
  ['257 ports', () => fullSet(MAX_PUBLISHED_PORTS + 1, 1), /257 ports, at most 256 may be published/],
  ['1,025 addresses on one port', () => fullSet(1, MAX_ALLOWED_ADDRESSES + 1), /port 1 lists 1025 addresses, at most 1024 per port/],
] as const) {
  // Issue 24 item 3: a refusal is that relay failing, not the agent (diode publish checks its own set at start).
  test(`a publish of ${what} is refused with its reason; the relay is passed over, not retried at once`, async (t) => {
    const relay = await relayFor(t);
    const warnings: string[] = [];
    const l = link(t, relay.port, Identity.random(), set(), { ...silentLogger, error: (m: string) => warnings.push(m), warn: (m: string) => warnings.push(m) });
    l.start();
    const end = Date.now() + 10_000;
    while (warnings.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    t.is(warnings.length, 1, warnings.join('\n'));
    t.regex(warnings[0], reason);
    t.regex(warnings[0], /relay 127\.0\.0\.1:\d+: relay refused the publish set: .*passed over for 15 s/);
    await new Promise((r) => setTimeout(r, 1_500));
    t.is(relay.server.stats.get('bad_stream'), 1, 'one attempt within the hold, no retry loop');
    t.is(l.status().connected, false);
  });
}

test('a frame that is not a publish keeps the 4 KiB stream-header limit, and is told so', async (t) => {
  const relay = await relayFor(t);
  const client = link(t, relay.port, Identity.random(), []);
  client.start();
  const session = await client.waitForSession(5000);
  const stream = session.open();
  stream.on('error', () => {});
  stream.write(encodeFrame({ t: 'connect', to: Identity.random().address, port: 22, padding: 'x'.repeat(5000) }));
  const answer = await readFrame(stream, 4096, 5000);
  t.is(answer.t, 'error');
  t.is(answer.code, 'bad-request');
  t.regex(String(answer.message), /frame of \d+ bytes exceeds the 4096-byte limit \(only a publish, whose body starts \{"t":"publish", may have up to 262144, and only on one stream at a time\)/);
});

test('diode publish refuses a set over the limits at start: one line, exit 2', async (t) => {
  const home = tempDir(t);
  const ports = Array.from({ length: MAX_PUBLISHED_PORTS + 1 }, (_, i) => String(10_000 + i)).join(',');
  const many = start(t, ['publish', '-public', ports, '--relay', '127.0.0.1:9', '--home', home]);
  t.is(await many.exited(), 2);
  t.regex(many.output(), /at most 256 ports/);
  t.is(many.output().trim().split('\n').length, 1, many.output());
  const wide = start(t, ['publish', '-private', `22:22,${addresses(MAX_ALLOWED_ADDRESSES + 1).join(',')}`, '--relay', '127.0.0.1:9', '--home', home]);
  t.is(await wide.exited(), 2);
  t.regex(wide.output(), /1,?024/);
});

/** A client link's new stream, for raw frames. */
async function rawStream(t: ExecutionContext) {
  const relay = await relayFor(t);
  // No control stream of its own: the raw stream is the session's first, the one a publish may claim.
  const client = new RelayLink({ relays: [{ host: '127.0.0.1', port: relay.port }], identity: Identity.random(), log: silentLogger, control: false });
  t.teardown(() => client.stop());
  client.start();
  const stream = (await client.waitForSession(5000)).open();
  stream.on('error', () => {});
  return stream;
}

test('a length over 4 KiB whose first body bytes already show it is no publish is refused at once, not at the 10 s header deadline', async (t) => {
  const stream = await rawStream(t);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(5000);
  const started = Date.now();
  stream.write(Buffer.concat([length, Buffer.from('{"t":"c', 'latin1')]));
  const answer = await readFrame(stream, 4096, 15_000);
  t.true(Date.now() - started < 3000, `answered after ${Date.now() - started} ms`);
  t.is(answer.code, 'bad-request');
  t.regex(String(answer.message), /frame of 5000 bytes exceeds the 4096-byte limit \(only a publish/);
});

test('a publish over 256 KiB is refused naming the 262,144-byte publish limit, not the 4,096-byte header one', async (t) => {
  const stream = await rawStream(t);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(300_000);
  stream.write(Buffer.concat([length, Buffer.from('{"t":"publish","ports":[', 'latin1')]));
  const answer = await readFrame(stream, 4096, 5000);
  t.is(answer.code, 'bad-request');
  t.is(answer.message, 'frame of 300000 bytes exceeds the 262144-byte limit');
});
