// Issue 28 item 5: no more round trips to the relay before an agent's first
// stream than the protocol needs. The relay's TLS certificate is bound to its
// address (agent/protocol/cert-binding.ts), so an agent knows its relay once
// TLS is up and sends its hello, its verdict and its first streams with its
// TLS Finished: the link is up after TCP and TLS, not after the relay's hello
// as well. The relay is measured through an emulated path (bench/lib/delay-line.ts).
import test, { type ExecutionContext } from 'ava';
import { X509Certificate } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Identity } from '../agent/identity/index.ts';
import { startRelay } from '../agent/relay/listen.ts';
import { loadOrCreateRelayCert } from '../agent/relay/cert.ts';
import { dialRelay } from '../agent/link/dial-relay.ts';
import { RelayLink } from '../agent/link/relay-link.ts';
import { certBoundAddress } from '../agent/protocol/cert-binding.ts';
import { exchangeHelloAccepting } from '../agent/protocol/handshake.ts';
import { silentLogger } from '../agent/util/log.ts';
import { DelayLink } from '../bench/lib/delay-line.ts';
import selfsigned from 'selfsigned';
import { MuxSession } from '../agent/mux/index.ts';
import { tempDir } from './helpers/diode.ts';
import { listenTlsRelay } from './helpers/hostile-relay.ts';

/** One-way delay to the relay, ms: large against what a loaded host adds to one dial, so one round trip more or less is plain. */
const ONE_WAY_MS = 150;

async function relayFor(t: ExecutionContext) {
  const home = tempDir(t);
  const relay = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, home, identity: Identity.random(), log: silentLogger });
  t.teardown(() => relay.close());
  return { ...relay, home };
}

/** ms from RelayLink.start() to its session being up. */
async function linkUp(t: ExecutionContext, port: number): Promise<number> {
  const link = new RelayLink({ relays: [{ host: '127.0.0.1', port }], identity: Identity.random(), log: silentLogger, watchNetwork: false, control: false });
  t.teardown(() => link.stop());
  const start = performance.now();
  link.start();
  const session = await link.waitForSession(30_000);
  const ms = performance.now() - start;
  // The session works: a ping goes to the relay and back (it is read after the relay's hello and verdict).
  await session.ping();
  return ms;
}

test('the relay\'s certificate proves its address: an agent\'s link is up after TCP and TLS, one round trip before the relay\'s hello could arrive', async (t) => {
  const relay = await relayFor(t);
  t.is(certBoundAddress(new X509Certificate((await loadOrCreateRelayCert(relay.home, relay.server.identity)).cert)), relay.server.address);
  const wan = new DelayLink({ oneWayMs: ONE_WAY_MS });
  t.teardown(() => wan.close());
  const line = await wan.forward({ port: relay.port });
  // The same dial without the delay: what the host's CPU adds, taken off the delayed one (best of three: noise only adds).
  const direct = Math.min(await linkUp(t, relay.port), await linkUp(t, relay.port), await linkUp(t, relay.port));
  const delayed = Math.min(await linkUp(t, line.port), await linkUp(t, line.port), await linkUp(t, line.port));
  // TCP (SYN, SYN-ACK, then the ClientHello behind the ACK: 3 one-way delays) and the relay's TLS flight (1): 4.
  // Waiting for the relay's hello as well, as before, took 6.
  t.true(delayed >= 4 * ONE_WAY_MS, `the delayed dial took ${Math.round(delayed)} ms: the path was not in the way`);
  const added = delayed - direct;
  t.true(added < 5 * ONE_WAY_MS, `the path added ${Math.round(added)} ms: more than TCP and TLS (${4 * ONE_WAY_MS} ms)`);
});

/** A relay certificate bound to `certOf`, a hello signed by `helloBy`; counts what agents send once TLS is up. */
async function fakeRelay(t: ExecutionContext, certOf: Identity, helloBy: Identity): Promise<{ port: number; received: () => number }> {
  let received = 0;
  const port = await listenTlsRelay(t, certOf, (tls) => {
    tls.on('data', (b: Buffer) => (received += b.length));
    exchangeHelloAccepting(tls, helloBy, 'relay', ['agent'], 5_000).catch(() => {});
  });
  return { port, received: () => received };
}

test('a relay whose certificate is bound to another address than its pin is refused before the agent sends anything', async (t) => {
  const impostor = Identity.random();
  const pinned = Identity.random();
  const relay = await fakeRelay(t, impostor, impostor);
  const err = await t.throwsAsync(dialRelay({ host: '127.0.0.1', port: relay.port }, Identity.random(), pinned.address, { pipeline: true }));
  t.regex(err!.message, new RegExp(`proved address ${impostor.address}, but it is pinned to ${pinned.address}`));
  await new Promise((r) => setTimeout(r, 200));
  t.is(relay.received(), 0, 'nothing of the agent\'s (no hello, no stream) reached the impostor');
});

test('a relay whose hello proves another address than its certificate: the pipelined dial fails and the connection is closed', async (t) => {
  const relay = await fakeRelay(t, Identity.random(), Identity.random());
  const dialled = await dialRelay({ host: '127.0.0.1', port: relay.port }, Identity.random(), undefined, { pipeline: true });
  t.truthy(dialled.verified);
  const err = await t.throwsAsync(dialled.verified!);
  t.regex(err!.message, /the relay's hello proves 0x[0-9a-fA-F]{40}, but its certificate is bound to 0x[0-9a-fA-F]{40}/);
  await new Promise((resolve) => (dialled.socket.destroyed ? resolve(undefined) : dialled.socket.once('close', resolve)));
  t.true(dialled.socket.destroyed);
});

test('a relay whose certificate carries no binding (an older relay\'s P-256 one) is waited for: its hello proves it, and the link comes up', async (t) => {
  const relayId = Identity.random();
  const old = await selfsigned.generate([{ name: 'commonName', value: 'diode-relay' }], { keyType: 'ec', curve: 'P-256', algorithm: 'sha256' });
  const port = await listenTlsRelay(t, { key: old.private, cert: old.cert }, (tls) => {
    exchangeHelloAccepting(tls, relayId, 'relay', ['agent'], 5_000).then(() => new MuxSession(tls, { role: 'server' }), () => tls.destroy());
  });
  const dialled = await dialRelay({ host: '127.0.0.1', port }, Identity.random(), relayId.address, { pipeline: true });
  t.teardown(() => dialled.socket.destroy());
  t.is(dialled.relayAddress, relayId.address);
  t.is(dialled.verified, undefined, 'not pipelined: the hello was awaited');
  const session = new MuxSession(dialled.socket, { role: 'client' });
  await session.ping();
  session.close();
});

