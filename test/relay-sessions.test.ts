import test, { type ExecutionContext } from 'ava';
import { Identity } from '../agent/identity/index.ts';
import { startRelay } from '../agent/relay/listen.ts';
import { Registry, type AgentSession, type PublisherChange } from '../agent/relay/registry.ts';
import { RelayLink } from '../agent/link/relay-link.ts';
import { readFrame, writeFrame } from '../agent/protocol/frames.ts';
import { requestStream } from '../agent/protocol/request.ts';
import { MuxSession, type MuxStream } from '../agent/mux/index.ts';
import { dialRelay } from '../agent/link/dial-relay.ts';
import { SUPERSEDED_PING_MS } from '../agent/relay/superseded.ts';
import type { Logger } from '../agent/util/log.ts';
import { silentLogger } from '../agent/util/log.ts';
import { tempDir } from './helpers/diode.ts';

function fakeSession(address: string, remote: string): AgentSession {
  return { address, remote, mux: {} as MuxSession, ports: new Map(), connectedAt: Date.now() };
}

const A = '0x00000000000000000000000000000000000000aa';

test('a session set keeps every session of an address; one that publishes nothing displaces nothing', (t) => {
  const set = new Registry();
  const device = fakeSession(A, 'r1');
  const proxy = fakeSession(A, 'r2');
  set.add(device);
  set.publish(device, [{ port: 22, mode: 'public' }]);
  set.add(proxy);
  t.is(set.size, 2);
  t.is(set.addressCount, 1);
  t.is(set.publisher(A), device);
  t.deepEqual(set.sessionsOf(A), [device, proxy]);
  set.remove(proxy);
  t.is(set.publisher(A), device);
  t.is(set.size, 1);
});

test('among publishing sessions the newest is active, the others stand by and take over when it goes', (t) => {
  const set = new Registry();
  const changes: PublisherChange[] = [];
  set.onPublisherChange((c) => changes.push(c));
  const old = fakeSession(A, 'old');
  const fresh = fakeSession(A, 'new');
  set.add(old);
  set.publish(old, [{ port: 22, mode: 'public' }]);
  set.add(fresh);
  set.publish(fresh, [{ port: 22, mode: 'public' }]);
  t.is(set.publisher(A), fresh);
  t.is(changes.length, 2);
  t.deepEqual(changes[1].standby, [old]);
  t.is(changes[1].previous, old);
  // A re-publish by the active session changes nothing; by the standby it does not jump ahead either.
  set.publish(old, [{ port: 23, mode: 'public' }]);
  t.is(set.publisher(A), fresh);
  set.remove(fresh);
  t.is(set.publisher(A), old);
  t.is(changes.at(-1)!.active, old);
  set.publish(old, []);
  t.is(set.publisher(A), undefined);
  t.is(changes.at(-1)!.active, undefined);
  t.is(set.size, 1);
});

/** A publishing link whose device side answers each incoming stream with ok and then its own name. */
function deviceLink(t: ExecutionContext, port: number, identity: Identity, name: string, log: Logger = silentLogger): RelayLink {
  const link = new RelayLink({
    relays: [{ host: '127.0.0.1', port }],
    identity,
    log,
    publish: [{ port: 22, mode: 'public' }],
    onStream: (stream: MuxStream) => {
      stream.on('error', () => {});
      readFrame(stream, 4096, 5000).then(() => {
        writeFrame(stream, { t: 'ok' });
        stream.end(name);
      }, () => stream.destroy());
    },
  });
  t.teardown(() => link.stop());
  link.start();
  return link;
}

async function ask(client: RelayLink, to: string): Promise<string> {
  const session = await client.waitForSession(5000);
  const stream = session.open();
  stream.on('error', () => {});
  await requestStream(stream, { t: 'connect', to, port: 22 });
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

test('two publishing sessions of one key: the newest gets the streams, one warning names both endpoints, the standby takes over', async (t) => {
  const warnings: string[] = [];
  const log: Logger = { ...silentLogger, warn: (m: string) => warnings.push(m) };
  const relay = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, home: tempDir(t), identity: Identity.random(), log });
  t.teardown(() => relay.close());
  const device = Identity.random();
  const first = deviceLink(t, relay.port, device, 'first');
  await first.waitForSession(5000);
  await new Promise((r) => setTimeout(r, 50));
  const client = new RelayLink({ relays: [{ host: '127.0.0.1', port: relay.port }], identity: Identity.random(), log: silentLogger });
  t.teardown(() => client.stop());
  client.start();
  t.is(await ask(client, device.address), 'first');
  const second = deviceLink(t, relay.port, device, 'second');
  await second.waitForSession(5000);
  await new Promise((r) => setTimeout(r, 50));
  t.is(relay.server.registry.sessionsOf(device.address).length, 2);
  t.is(await ask(client, device.address), 'second');
  t.is(warnings.length, 1, warnings.join('\n'));
  const sessions = relay.server.registry.sessionsOf(device.address);
  for (const s of sessions) t.true(warnings[0].includes(s.remote), `${warnings[0]} names ${s.remote}`);
  t.true(warnings[0].includes(device.address));
  // The first session was not knocked off.
  t.truthy(first.session && !first.session.closed);
  await second.stop();
  await new Promise((r) => setTimeout(r, 100));
  t.is(await ask(client, device.address), 'first');
});

test('a client session with the device key (diode proxy on the device) does not disturb its publish', async (t) => {
  const relay = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, home: tempDir(t), identity: Identity.random(), log: silentLogger });
  t.teardown(() => relay.close());
  const device = Identity.random();
  const publisher = deviceLink(t, relay.port, device, 'device');
  await publisher.waitForSession(5000);
  const sameKey = new RelayLink({ relays: [{ host: '127.0.0.1', port: relay.port }], identity: device, log: silentLogger });
  t.teardown(() => sameKey.stop());
  sameKey.start();
  t.is(await ask(sameKey, device.address), 'device');
  t.is(await ask(sameKey, device.address), 'device');
  t.truthy(publisher.session && !publisher.session.closed);
  t.is(relay.server.registry.sessionsOf(device.address).length, 2);
});

test('issue 29.5: a newer publisher takes over the streams waiting for a dead older session, which is dropped within 2 s', async (t) => {
  const lines: string[] = [];
  const log: Logger = { ...silentLogger, info: (m: string) => lines.push(m), warn: (m: string) => lines.push(m) };
  const relay = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, home: tempDir(t), identity: Identity.random(), log });
  t.teardown(() => relay.close());
  const device = Identity.random();
  // The old session: published, then its path dies (this end stops reading: pings and streams go unanswered).
  const conn = await dialRelay({ host: '127.0.0.1', port: relay.port }, device);
  const old = new MuxSession(conn.socket, { role: 'client' });
  t.teardown(() => old.close());
  const control = old.open();
  writeFrame(control, { t: 'publish', ports: [{ port: 22, mode: 'public' }] });
  await readFrame(control, 4096, 5000);
  conn.socket.pause();
  const client = new RelayLink({ relays: [{ host: '127.0.0.1', port: relay.port }], identity: Identity.random(), log: silentLogger });
  t.teardown(() => client.stop());
  client.start();
  await client.waitForSession(5000);
  // A stream asked for now waits for the dead session's answer...
  const asked = ask(client, device.address);
  await new Promise((r) => setTimeout(r, 300));
  // ...until the device is back with a newer session: the stream is answered there.
  const published = performance.now();
  const again = deviceLink(t, relay.port, device, 'new session');
  await again.waitForSession(5000);
  t.is(await asked, 'new session');
  const dropped = new RegExp(`closed the session of ${device.address} from [^:]+:${conn.socket.localPort}: a newer session of the address published`);
  while (!lines.some((l) => dropped.test(l)) && performance.now() - published < 10_000) await new Promise((r) => setTimeout(r, 50));
  const ms = performance.now() - published;
  t.log(`old session dropped ${Math.round(ms)} ms after the newer one published`);
  t.true(ms <= SUPERSEDED_PING_MS + 1_000, lines.join('\n'));
  t.is(relay.server.registry.sessionsOf(device.address).length, 1);
  t.is(await ask(client, device.address), 'new session');
});
