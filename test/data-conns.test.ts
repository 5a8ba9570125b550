// Issue 27: each stream between two agents on a data connection of its own
// from each agent to the relay, paired by single-use tokens and spliced by
// the relay without reading. Real relay, real agents and TCP on loopback.
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { exchangeHello } from '../agent/protocol/handshake.ts';
import { MuxSession } from '../agent/mux/index.ts';
import { FORWARD_BUFFER } from '../agent/util/pump.ts';
import { tempDir } from './helpers/diode.ts';
import { dataTokens as tokens, presentData as present } from './helpers/attacker.ts';
import type { Duplex } from 'node:stream';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Identity } from '../agent/identity/index.ts';
import { dialThroughRelay, DialError } from '../agent/client/dial.ts';
import { readFrame, writeFrame } from '../agent/protocol/frames.ts';
import { requestStream } from '../agent/protocol/request.ts';
import { DATA_PAIRING_TIMEOUT_MS, DATA_TOKEN_TTL_MS, MAX_EARLY_BYTES, STREAM_HEADER_TIMEOUT_MS } from '../agent/protocol/limits.ts';
import { DataRefusal, encodeOpening, parseAnswer } from '../agent/data/wire.ts';
import { RelayLink } from '../agent/link/relay-link.ts';
import { silentLogger } from '../agent/util/log.ts';
import { clientHere, deviceHere, echoServer, poolReady, relayHere, stalledServer, tick, until } from './helpers/agents.ts';

const run = promisify(execFile);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Writes `bytes` into the tunnel, half-closes it, and resolves with everything that came back until its end. */
function echoThrough(tunnel: Duplex, bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const back: Buffer[] = [];
    tunnel.on('data', (c: Buffer) => back.push(c));
    tunnel.once('end', () => resolve(Buffer.concat(back)));
    tunnel.once('error', reject);
    tunnel.end(bytes);
  });
}

async function world(t: ExecutionContext, limits = {}) {
  const relay = await relayHere(t, limits);
  const echo = await echoServer(t);
  const device = await deviceHere(t, relay.port, { localPort: echo.port });
  const client = await clientHere(t, relay.port);
  return { relay, echo, device, client };
}

test('an end-to-end stream travels on two data connections that the relay splices: bytes intact both ways, half-close passed on', async (t) => {
  const { relay, device, client } = await world(t);
  t.true(await poolReady(client.link, 4), 'the client keeps 4 data connections ready');
  t.true(await poolReady(device.link, 4), 'the device keeps 4 data connections ready');
  const tunnel = await dialThroughRelay(client.link, client.identity, device.identity.address, 22);
  const bytes = randomBytes(4 * 1024 * 1024);
  // The client's end (TLS close_notify + FIN on its data connection) reaches the echo server as an end,
  // which ends its answer in turn: the whole echo comes back, then the tunnel's end.
  const back = await echoThrough(tunnel, bytes);
  t.is(back.length, bytes.length);
  t.is(sha(back), sha(bytes));
  const stats = relay.server.stats;
  t.is(stats.get('stream_legs_data_data'), 1);
  t.is(stats.get('stream_legs_link_link'), 0);
  // Each taken connection is replaced at once.
  t.true(await poolReady(client.link, 4));
  t.true(await poolReady(device.link, 4));
});

test('a token replayed, guessed, of another version, presented from another source or after its lifetime is refused with its code; the owner\'s own still works', async (t) => {
  const relay = await relayHere(t);
  const client = await clientHere(t, relay.port, 0);
  const session = await client.link.waitForSession(5000);
  const [first, second, third] = await tokens(session, 3);

  const ok = await present(t, relay.port, encodeOpening(first));
  t.deepEqual(ok.answer && 'accepted' in ok.answer, true, 'a fresh token from the session\'s own source is accepted');
  t.teardown(() => ok.socket.destroy());

  const replay = await present(t, relay.port, encodeOpening(first));
  t.like(replay.answer, { refusal: DataRefusal.token, reason: 'unknown, used or expired token' });

  const guessed = await present(t, relay.port, encodeOpening(randomBytes(16).toString('hex')));
  t.like(guessed.answer, { refusal: DataRefusal.token });

  // 127.0.0.2 is another source to the relay (as another host behind another address would be).
  const elsewhere = await present(t, relay.port, encodeOpening(second), '127.0.0.2');
  t.like(elsewhere.answer, { refusal: DataRefusal.source });
  t.regex((elsewhere.answer as { reason: string }).reason, /presented from 127\.0\.0\.2/);
  const owner = await present(t, relay.port, encodeOpening(second));
  t.true(owner.answer !== undefined && 'accepted' in owner.answer, 'a refusal from elsewhere does not burn the owner\'s token');
  t.teardown(() => owner.socket.destroy());

  const v3 = encodeOpening(randomBytes(16).toString('hex'));
  v3[4] = 3;
  const old = await present(t, relay.port, v3);
  t.like(old.answer, { refusal: DataRefusal.header, reason: 'unsupported data connection version 3: this relay speaks version 4 only; upgrade the older of the two' });

  await tick(DATA_TOKEN_TTL_MS + 500);
  const late = await present(t, relay.port, encodeOpening(third));
  t.like(late.answer, { refusal: DataRefusal.token });
  const stats = relay.server.stats;
  t.is(stats.get('refused_data_token'), 3);
  t.is(stats.get('refused_data_source'), 1);
  t.is(stats.get('refused_data_header'), 1);
  t.is(stats.get('data_accepted'), 2);
});

test('a connect naming a data connection of another session, or one never accepted, is answered data-closed and routes nothing', async (t) => {
  const { relay, device } = await world(t);
  const mallory = await clientHere(t, relay.port, 0);
  const alice = await clientHere(t, relay.port, 4);
  t.true(await poolReady(alice.link, 4));
  const session = await mallory.link.waitForSession(5000);
  // Mallory saw one of alice's tokens (say on the path): it names it from its own session.
  const theirs = alice.link.dataPool!.take()!;
  t.teardown(() => theirs.socket.destroy());
  for (const data of [theirs.token, randomBytes(16).toString('hex')]) {
    const s = session.open();
    s.on('error', () => {});
    const err = await t.throwsAsync(requestStream(s, { t: 'connect', to: device.identity.address, port: 22, e2e: true, data }));
    t.like((err as { reply?: unknown }).reply, { t: 'error', code: 'data-closed' });
  }
  t.is(relay.server.stats.get('stream_routed'), 0);
  t.false(theirs.socket.destroyed, 'alice\'s connection is untouched');
});

test('bytes on a data connection that no connect names are dropped at the pairing deadline', async (t) => {
  const relay = await relayHere(t);
  const client = await clientHere(t, relay.port, 0);
  const [token] = await tokens(await client.link.waitForSession(5000), 1);
  const { socket, answer } = await present(t, relay.port, encodeOpening(token));
  t.true(answer !== undefined && 'accepted' in answer);
  const started = Date.now();
  socket.write(randomBytes(300)); // as a ClientHello would be, but no connect follows
  const closed = new Promise<string>((resolve) => socket.once('close', () => resolve('closed')));
  socket.resume();
  t.is(await closed, 'closed');
  const ms = Date.now() - started;
  t.true(ms >= DATA_PAIRING_TIMEOUT_MS - 200 && ms < DATA_PAIRING_TIMEOUT_MS + 3000, `closed after ${ms} ms`);
  t.is(relay.server.stats.get('data_pairing_timeout'), 1);
});

test('more than 32 KiB on a data connection before a connect names it gets it reset at once, counted; a ClientHello-sized early burst is kept for the splice', async (t) => {
  const { relay, device, client } = await world(t);
  const session = await client.link.waitForSession(5000);
  const [flood, honest] = await tokens(session, 2);
  const started = Date.now();
  const { socket } = await present(t, relay.port, encodeOpening(flood));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.write(randomBytes(MAX_EARLY_BYTES + 1024));
  socket.resume();
  await closed;
  t.true(Date.now() - started < DATA_PAIRING_TIMEOUT_MS / 2, `closed after ${Date.now() - started} ms, not at the pairing deadline`);
  t.is(relay.server.stats.get('refused_data_early_bytes'), 1);
  t.true(await until(() => relay.server.holds.used === 0, 3000), `the budget got its bytes back (${relay.server.holds.used} held)`);
  // Early bytes below the cap travel on once a connect names the connection.
  const kept = await present(t, relay.port, encodeOpening(honest));
  const early = Buffer.from('SSH-2.0-early\r\n');
  kept.socket.write(early);
  t.true(await until(() => relay.server.holds.used === early.length, 3000), `the early bytes are charged (${relay.server.holds.used} held)`);
  const s = session.open();
  s.on('error', () => {});
  t.like(await requestStream(s, { t: 'connect', to: device.identity.address, port: 22, e2e: true, data: honest }).catch((err: { reply?: unknown }) => err.reply), { t: 'ok' });
});

test('a device that never answers an incoming on its data connection: the client hears unavailable within the deadline and both connections are closed', async (t) => {
  const relay = await relayHere(t);
  const identity = Identity.random();
  let paired: string | undefined;
  // A device that keeps data connections but leaves every incoming unanswered.
  const device = new RelayLink({
    relays: [{ host: '127.0.0.1', port: relay.port }],
    identity,
    log: silentLogger,
    publish: [{ port: 22, mode: 'public' }],
    dataPool: 2,
    watchNetwork: false,
    onStream: (s) => {
      s.on('error', () => {});
      void readFrame(s, 4096, 20_000).then((m) => (paired = m.data as string | undefined), () => {});
    },
  });
  t.teardown(() => device.stop());
  device.start();
  await device.waitForSession(5000);
  t.true(await poolReady(device, 2));
  const client = await clientHere(t, relay.port, 2);
  t.true(await poolReady(client.link, 2));
  const started = Date.now();
  const err = await t.throwsAsync(dialThroughRelay(client.link, client.identity, identity.address, 22));
  const ms = Date.now() - started;
  t.true(err instanceof DialError && err.reply === 'unavailable', String(err));
  t.true(ms >= STREAM_HEADER_TIMEOUT_MS - 200 && ms < STREAM_HEADER_TIMEOUT_MS + 3000, `answered after ${ms} ms`);
  t.truthy(paired, 'the relay named a data connection of the device in its incoming');
  // The paired one is gone from the device's pool (the relay closed it) and replaced.
  t.true(await until(() => !device.dataPool!.ready().some((c) => c.token === paired) && device.dataPool!.idle === 2, 3000));
  t.true(await until(() => relay.server.data.waiting === 4, 3000), `waiting ${relay.server.data.waiting}`);
});

test('a pool connection found dead is replaced and no stream fails: reset under the client, and one the device no longer holds', async (t) => {
  const { relay, device, client } = await world(t);
  t.true(await poolReady(client.link, 4));
  t.true(await poolReady(device.link, 4));
  // The relay's side of every ready client connection is killed (as a middlebox reset would).
  const ports = new Set(relayPeerPorts(client.link));
  for (const port of ports) await run('ss', ['-K', 'src', '127.0.0.1', 'sport', '=', `:${relay.port}`, 'dst', '127.0.0.1', 'dport', '=', `:${port}`]);
  t.true(await until(() => client.link.dataPool!.idle === 4 && relayPeerPorts(client.link).every((p) => !ports.has(p))), 'the client replaced them');
  // The device's newest ready connection is taken away behind the relay's back: the relay pairs it,
  // the device says data-closed, the relay takes the next.
  const stolen = device.link.dataPool!.take()!;
  t.teardown(() => stolen.socket.destroy());
  for (let i = 0; i < 3; i++) {
    const tunnel = await dialThroughRelay(client.link, client.identity, device.identity.address, 22);
    const bytes = randomBytes(64 * 1024);
    t.is(sha(await echoThrough(tunnel, bytes)), sha(bytes));
  }
  t.is(relay.server.stats.get('stream_legs_data_data'), 3, JSON.stringify(relay.server.stats.snapshot()));
  t.is(relay.server.stats.get('data_device_stale'), 1, 'the device said once that it no longer held the paired connection');
});

/** Local ports of a link's ready data connections (what the relay sees as their peer ports). */
function relayPeerPorts(link: RelayLink): number[] {
  return link.dataPool!.ready().map((c) => c.socket.localPort!);
}

test('after a relay restart both agents refill their pools on the new relay and streams travel on data connections again', async (t) => {
  const home = tempDir(t);
  const first = await relayHere(t, {}, 0, home);
  const port = first.port;
  const echo = await echoServer(t);
  const device = await deviceHere(t, port, { localPort: echo.port });
  const client = await clientHere(t, port);
  t.true(await poolReady(client.link, 4));
  t.true(await poolReady(device.link, 4));
  const before = client.link.session;
  await first.close();
  const second = await relayHere(t, {}, port, home);
  t.true(await until(() => client.link.session !== undefined && client.link.session !== before && device.link.session !== undefined, 15_000), 'both agents are back');
  t.true(await poolReady(client.link, 4), 'the client\'s pool is full again');
  t.true(await poolReady(device.link, 4), 'the device\'s pool is full again');
  t.is(second.server.data.waiting, 8);
  const tunnel = await dialThroughRelay(client.link, client.identity, device.identity.address, 22);
  const bytes = randomBytes(256 * 1024);
  t.is(sha(await echoThrough(tunnel, bytes)), sha(bytes));
  t.is(second.server.stats.get('stream_legs_data_data'), 1);
});

test('a relay that takes no data connections (--max-data-per-session 0): streams go over the link, each agent says so once', async (t) => {
  const { relay, device, client } = await world(t, { maxDataPerSession: 0 });
  for (let i = 0; i < 3; i++) {
    const tunnel = await dialThroughRelay(client.link, client.identity, device.identity.address, 22);
    const bytes = randomBytes(32 * 1024);
    t.is(sha(await echoThrough(tunnel, bytes)), sha(bytes));
  }
  t.is(relay.server.stats.get('stream_legs_link_link'), 3);
  t.is(relay.server.stats.get('data_accepted'), 0);
  for (const lines of [client.lines, device.lines]) {
    const said = lines.filter((l) => /no data connections/.test(l));
    t.is(said.length, 1, lines.join('\n'));
    t.regex(said[0], /this relay takes no data connections \(--max-data-per-session 0\).*streams go over the relay link instead/);
  }
});

/** A TLS session with a hello from `localAddress` (what the relay's per-source counting sees), as a MuxSession. */
async function sessionFrom(t: ExecutionContext, port: number, localAddress: string): Promise<MuxSession> {
  const socket = await new Promise<TLSSocket>((resolve, reject) => {
    const s = tlsConnect({ socket: netConnect({ host: '127.0.0.1', port, localAddress }), rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    s.once('error', reject);
    s.once('secureConnect', () => exchangeHello(s, Identity.random(), 'agent', 10_000).then(() => resolve(s), reject));
  });
  const mux = new MuxSession(socket, { role: 'client' });
  t.teardown(() => mux.close());
  return mux;
}

test('data connections are capped per session and per source; an honest agent elsewhere keeps its own', async (t) => {
  const perIp = 24;
  const { relay, device, client } = await world(t, { maxDataPerIp: perIp, maxDataPerSession: 8 });
  // One session asks for far more tokens than a session may hold: it gets --max-data-per-session.
  const hoarder = await sessionFrom(t, relay.port, '127.0.0.2');
  const got = await tokens(hoarder, 16);
  t.is(got.length, 8);
  const s = hoarder.open();
  s.on('error', () => {});
  writeFrame(s, { t: 'tokens', n: 1 });
  t.like(await readFrame(s, 4096, 5000), { t: 'error', code: 'unavailable' });
  // Five sessions from that source fill their pools: the source's cap refuses what is beyond it.
  const held: Socket[] = [];
  t.teardown(() => held.forEach((x) => x.destroy()));
  const answers: Array<ReturnType<typeof parseAnswer>> = [];
  for (const session of [hoarder, ...(await Promise.all(Array.from({ length: 4 }, () => sessionFrom(t, relay.port, '127.0.0.2'))))]) {
    const list = session === hoarder ? got : await tokens(session, 8);
    for (const token of list) {
      const { socket, answer } = await present(t, relay.port, encodeOpening(token), '127.0.0.2');
      held.push(socket);
      answers.push(answer);
    }
  }
  t.is(answers.filter((a) => a && 'accepted' in a).length, perIp);
  t.is(answers.filter((a) => a && 'refusal' in a && a.refusal === DataRefusal.limit).length, 40 - perIp);
  t.is(relay.server.stats.get('refused_data_per_ip'), 40 - perIp);
  t.is(relay.server.stats.get('refused_data_per_session'), 1);
  // The honest pair from 127.0.0.1 still has its pools and a stream on them.
  t.true(await poolReady(client.link, 4));
  const tunnel = await dialThroughRelay(client.link, client.identity, device.identity.address, 22);
  t.is(sha(await echoThrough(tunnel, Buffer.from('still here'))), sha(Buffer.from('still here')));
  t.is(relay.server.stats.get('stream_legs_data_data'), 1);
});

test.serial('streams on data connections to a device that stops reading: the relay holds a bounded amount of each, and the idle timeout resets both legs', async (t) => {
  const relay = await relayHere(t, { streamIdleTimeoutMs: 3000 });
  // A local service that accepts and never reads.
  const { port: stalledPort, held } = await stalledServer(t);
  const device = await deviceHere(t, relay.port, { localPort: stalledPort, dataPool: 8 });
  const client = await clientHere(t, relay.port, 8);
  t.true(await poolReady(client.link, 8));
  t.true(await poolReady(device.link, 8));
  const n = 8;
  const tunnels = await Promise.all(Array.from({ length: n }, () => dialThroughRelay(client.link, client.identity, device.identity.address, 22)));
  t.is(relay.server.stats.get('stream_legs_data_data'), n);
  const closed = tunnels.map((s) => new Promise<void>((resolve) => s.once('close', resolve)));
  for (const s of tunnels) {
    s.on('error', () => {});
    s.write(Buffer.alloc(16 * 1024 * 1024, 7));
  }
  // Until the writers stall: nothing moves for a while.
  let last = -1;
  await until(() => {
    const now = relay.server.data.buffered();
    const still = now === last;
    last = now;
    return still && now > 0;
  }, 10_000);
  const buffered = relay.server.data.buffered();
  const bound = n * 2 * (FORWARD_BUFFER + 2 * 64 * 1024);
  t.log(`relay holds ${buffered} bytes in user space for ${n} stalled streams (bound ${bound})`);
  t.true(buffered <= bound, `${buffered} > ${bound}`);
  await Promise.all(closed);
  t.is(relay.server.stats.get('stream_idle_timeout'), n);
  // The device reset its local connections: the service sees it as soon as it reads again.
  for (const s of held) s.resume();
  t.true(await until(() => [...held].every((s) => s.destroyed)), 'the device\'s local connections were closed');
});
