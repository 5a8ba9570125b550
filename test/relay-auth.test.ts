import test, { type ExecutionContext } from 'ava';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { connect as netConnect } from 'node:net';
import { Identity } from '../agent/identity/index.ts';
import { startRelay } from '../agent/relay/listen.ts';
import { dialRelay } from '../agent/link/dial-relay.ts';
import { RelayLink } from '../agent/link/relay-link.ts';
import { encodeFrame } from '../agent/protocol/frames.ts';
import { EKM_LABEL, EKM_LENGTH } from '../agent/protocol/handshake.ts';
import { PROTOCOL_VERSION } from '../agent/protocol/messages.ts';
import { HANDSHAKE_TIMEOUT_MS } from '../agent/protocol/limits.ts';
import { silentLogger } from '../agent/util/log.ts';
import { tempDir } from './helpers/diode.ts';

async function relayFor(t: ExecutionContext) {
  const relay = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, home: tempDir(t), identity: Identity.random(), log: silentLogger });
  t.teardown(() => relay.close());
  return relay;
}

function rawTls(port: number): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: 'TLSv1.3' }, () => resolve(s));
    s.once('error', reject);
  });
}

function closed(socket: TLSSocket): Promise<void> {
  socket.resume(); // read the relay's one-line refusal and its end
  return new Promise((resolve) => (socket.destroyed ? resolve() : socket.once('close', () => resolve())));
}

test('an agent proves its address and learns the relay address', async (t) => {
  const relay = await relayFor(t);
  const me = Identity.random();
  const { socket, relayAddress } = await dialRelay({ host: '127.0.0.1', port: relay.port }, me);
  t.teardown(() => socket.destroy());
  t.is(relayAddress, relay.server.address);
  // The relay admits the session once it read our verdict on its hello: give a loaded machine a moment.
  for (let i = 0; i < 100 && relay.server.registry.sessionsOf(me.address).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.truthy(relay.server.registry.sessionsOf(me.address)[0]);
});

test('a hello signed over another session keying material cannot claim its signer address (no replay)', async (t) => {
  const relay = await relayFor(t);
  const victim = Identity.random();
  const socket = await rawTls(relay.port);
  t.teardown(() => socket.destroy());
  // A signature the victim made on some other session: different keying material.
  const proof = victim.signAuth('agent', Buffer.alloc(EKM_LENGTH, 7));
  socket.write(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: 'agent', ...proof }));
  socket.on('error', () => {}); // the relay may reset the connection
  await closed(socket);
  // The signature does not verify over this session's keying material: refused, nobody registered.
  t.is(relay.server.stats.get('hello_rejected'), 1);
  t.is(relay.server.registry.sessionsOf(victim.address).length, 0);
  t.false([...relay.server.registry.all()].some((s) => s.address === victim.address));
});

test('an agent claiming to be a relay is rejected', async (t) => {
  const relay = await relayFor(t);
  const me = Identity.random();
  const socket = await rawTls(relay.port);
  t.teardown(() => socket.destroy());
  const ekm = socket.exportKeyingMaterial(EKM_LENGTH, EKM_LABEL, Buffer.alloc(0));
  socket.write(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: 'relay', ...me.signAuth('relay', ekm) }));
  await closed(socket);
  t.is(relay.server.stats.get('hello_rejected'), 1);
});

test('an oversize hello frame is refused before it is buffered', async (t) => {
  const relay = await relayFor(t);
  const socket = await rawTls(relay.port);
  t.teardown(() => socket.destroy());
  const header = Buffer.alloc(4);
  header.writeUInt32BE(50 * 1024 * 1024);
  socket.write(header);
  await closed(socket);
  t.is(relay.server.stats.get('hello_rejected'), 1);
});

test('a peer that never completes its handshake is dropped after the deadline while honest agents are served', async (t) => {
  const relay = await relayFor(t);
  const started = Date.now();
  const idle = netConnect({ host: '127.0.0.1', port: relay.port });
  idle.on('error', () => {});
  t.teardown(() => idle.destroy());
  const idleClosed = new Promise<number>((resolve) => idle.once('close', () => resolve(Date.now() - started)));
  // Meanwhile an honest agent gets in.
  const me = Identity.random();
  const honest = await dialRelay({ host: '127.0.0.1', port: relay.port }, me);
  t.teardown(() => honest.socket.destroy());
  t.is(honest.relayAddress, relay.server.address);
  const ms = await idleClosed;
  t.true(ms >= HANDSHAKE_TIMEOUT_MS - 200 && ms < HANDSHAKE_TIMEOUT_MS + 2000, `dropped after ${ms} ms`);
  t.is(relay.server.stats.get('handshake_timeout'), 1);
});

test('a publishing link started before its relay exists connects once the relay appears', async (t) => {
  const home = tempDir(t);
  const identity = Identity.random();
  // Reserve a port, release it, and point the link at it before anything listens there.
  const probe = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, home, identity, log: silentLogger });
  const port = probe.port;
  await probe.close();
  const lines: string[] = [];
  const log = { ...silentLogger, info: (m: string) => lines.push(m), warn: (m: string) => lines.push(m) };
  const link = new RelayLink({ relays: [{ host: '127.0.0.1', port }], identity: Identity.random(), log, publish: [{ port: 22, mode: 'public' }], backoff: { baseMs: 100, maxMs: 400 } });
  t.teardown(() => link.stop());
  link.start();
  await new Promise((r) => setTimeout(r, 1500));
  t.is(link.session, undefined);
  const refusedLines = lines.filter((l) => /ECONNREFUSED/.test(l)).length;
  t.is(refusedLines, 1, 'one line for the failure state, not one per attempt');
  const relay = await startRelay({ listen: { host: '127.0.0.1', port }, home, identity, log: silentLogger });
  t.teardown(() => relay.close());
  await link.waitForSession(5000);
  t.truthy(lines.find((l) => /connected to relay/.test(l)));
  // Kill the relay: the link notices and reconnects to a new one on the same port.
  await relay.close();
  await new Promise((r) => setTimeout(r, 300));
  const again = await startRelay({ listen: { host: '127.0.0.1', port }, home, identity, log: silentLogger });
  t.teardown(() => again.close());
  await link.waitForSession(5000);
  await new Promise((r) => setTimeout(r, 100));
  t.deepEqual([...again.server.registry.publisher(link.session ? [...again.server.registry.all()][0].address : '')!.ports.keys()], [22]);
});
