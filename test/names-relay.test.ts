import test, { type ExecutionContext } from 'ava';
import { Identity } from '../agent/identity/index.ts';
import type { MuxSession } from '../agent/mux/index.ts';
import { readFrame, writeFrame } from '../agent/protocol/frames.ts';
import { signName } from '../agent/names/claim.ts';
import { NAME_CLAIM_BURST } from '../agent/relay/config.ts';
import { attackerSession } from './helpers/attacker.ts';
import { relayHere, tick } from './helpers/agents.ts';

// A relay's name service seen from the wire: raw claim and lookup frames on
// real agent sessions (TLS, hello, yamux) from chosen loopback sources, so
// each check is what an independent implementation, or an attacker, sends.

type Frame = Record<string, unknown>;

/** One request frame on a stream of its own, its one answer. */
async function ask(session: MuxSession, frame: Frame): Promise<Frame> {
  const stream = session.open();
  stream.on('error', () => {});
  writeFrame(stream, frame);
  try {
    return await readFrame(stream, 4096, 10_000);
  } finally {
    stream.destroy();
  }
}

/** An agent session from `source`; with `publish`, its control stream (kept open) publishes port 22. */
async function agent(t: ExecutionContext, relayPort: number, identity: Identity, source: string, publish = true): Promise<MuxSession> {
  const session = await attackerSession(t, relayPort, identity, source);
  if (publish) {
    const control = session.open();
    control.on('error', () => {});
    writeFrame(control, { t: 'publish', ports: [{ port: 22, mode: 'public' }] });
    t.like(await readFrame(control, 4096, 10_000), { t: 'ok' });
  }
  return session;
}

const claimOf = (id: Identity, names: string[]): Frame => ({ t: 'claim', pub: `0x${id.publicKey.toString('hex')}`, names: names.map((n) => ({ name: n, sig: signName(id, n).sig })) });

test('a claim is bound to its session: a device\'s signed claim, replayed on another session, claims nothing; a signature over another name, or on a session that publishes nothing, neither', async (t) => {
  const relay = await relayHere(t);
  const [kitchenDevice, attacker, idle] = [Identity.random(), Identity.random(), Identity.random()];
  const device = await agent(t, relay.port, kitchenDevice, '127.0.0.1');
  t.deepEqual(await ask(device, claimOf(kitchenDevice, ['kitchen'])), { t: 'claimed', names: [{ name: 'kitchen', ok: true }] });

  // Anyone may look kitchen up and so learns the device's claim (its key and its signature over "diode-name/v4 kitchen").
  const evil = await agent(t, relay.port, attacker, '127.0.0.2');
  const learned = await ask(evil, { t: 'lookup', name: 'kitchen' });
  t.is(learned.address, kitchenDevice.address);
  // The device renames itself: kitchen is free, and its old claim is still in the attacker's hands.
  t.deepEqual(await ask(device, claimOf(kitchenDevice, ['pantry'])), { t: 'claimed', names: [{ name: 'pantry', ok: true }] });
  t.deepEqual(await ask(evil, { t: 'lookup', name: 'kitchen' }), { t: 'name', name: 'kitchen' });

  // Replayed on the attacker's session: refused, the name stays free (the attacker cannot pin it on the device, nor keep it from others).
  const replay = await ask(evil, { t: 'claim', pub: learned.pub, names: [{ name: 'kitchen', sig: learned.sig }] });
  t.is(replay.t, 'error');
  t.is(replay.code, 'denied');
  t.is(replay.message, `claim.pub is the key of ${kitchenDevice.address}, not of this session's ${attacker.address}`);
  // Its own key beside the device's signature: the signature does not verify for that key.
  const borrowed = await ask(evil, { t: 'claim', pub: `0x${attacker.publicKey.toString('hex')}`, names: [{ name: 'kitchen', sig: learned.sig }] });
  t.like(borrowed, { t: 'error', code: 'bad-request', message: `the signature on kitchen does not verify for ${attacker.address}` });
  // The device's signature over pantry offered for kitchen, on the device's own session: names are signed one by one.
  const swapped = await ask(device, { t: 'claim', pub: learned.pub, names: [{ name: 'kitchen', sig: signName(kitchenDevice, 'pantry').sig }] });
  t.like(swapped, { t: 'error', code: 'bad-request' });
  // A session that publishes nothing claims nothing, even with its own valid signature.
  const quiet = await agent(t, relay.port, idle, '127.0.0.3', false);
  t.like(await ask(quiet, claimOf(idle, ['kitchen'])), { t: 'error', code: 'denied', message: 'names are claimed by a publishing device: this session publishes no port' });
  t.deepEqual(await ask(quiet, { t: 'lookup', name: 'kitchen' }), { t: 'name', name: 'kitchen' }, 'none of the refused claims took the name');
  t.is(relay.server.stats.get('refused_name_bad_claim'), 3);
  t.is(relay.server.stats.get('refused_name_not_publishing'), 1);
  t.is(relay.server.stats.get('name_claimed'), 2);

  // Free, so the first honest claim takes it; the device coming back for it is refused, the holder named.
  t.deepEqual(await ask(evil, claimOf(attacker, ['kitchen'])), { t: 'claimed', names: [{ name: 'kitchen', ok: true }] });
  t.like(await ask(device, claimOf(kitchenDevice, ['kitchen'])), { t: 'claimed', names: [{ name: 'kitchen', ok: false, code: 'held', holder: attacker.address }] });
});

test('a lookup reveals nothing a query of the address would not: the same answer while its device is online and after it went, no relay, no ports, no time', async (t) => {
  const relay = await relayHere(t);
  const kitchen = Identity.random();
  const device = await agent(t, relay.port, kitchen, '127.0.0.1');
  t.like(await ask(device, claimOf(kitchen, ['kitchen'])), { t: 'claimed' });
  const client = await agent(t, relay.port, Identity.random(), '127.0.0.2', false);
  const online = await ask(client, { t: 'lookup', name: 'kitchen' });
  t.deepEqual(Object.keys(online).sort(), ['address', 'name', 'pub', 'sig', 't']);
  t.deepEqual(online, { t: 'name', name: 'kitchen', address: kitchen.address, pub: `0x${kitchen.publicKey.toString('hex')}`, sig: online.sig });
  // Whereas a query of the address tells online and since when.
  t.like(await ask(client, { t: 'query', address: kitchen.address }), { t: 'info', online: true });
  device.close();
  for (let i = 0; i < 250 && relay.server.registry.publisher(kitchen.address); i++) await tick(20);
  t.like(await ask(client, { t: 'query', address: kitchen.address }), { t: 'info', online: false });
  t.deepEqual(await ask(client, { t: 'lookup', name: 'kitchen' }), online, 'held for the device while offline, answered alike');
  // A malformed name is refused as such and never goes further.
  t.like(await ask(client, { t: 'lookup', name: 'kit\u001bchen' }), { t: 'error', code: 'bad-request' });
  t.like(await ask(client, { t: 'lookup', name: '0x1234' }), { t: 'error', code: 'bad-request' });
});

test('limits at the relay: names per address (the first N of a claim taken, 0 takes none), and claims per source and second (a burst, then the rate, each source apart)', async (t) => {
  const two = await relayHere(t, { maxNamesPerAddress: 2 });
  const id = Identity.random();
  const s = await agent(t, two.port, id, '127.0.0.1');
  t.deepEqual(await ask(s, claimOf(id, ['kitchen', 'pantry', 'cellar'])), {
    t: 'claimed',
    names: [
      { name: 'kitchen', ok: true },
      { name: 'pantry', ok: true },
      { name: 'cellar', ok: false, code: 'limit', message: 'at most 2 names per address on this relay (--max-names-per-address)' },
    ],
  });
  const none = await relayHere(t, { maxNamesPerAddress: 0 });
  const n = await agent(t, none.port, id, '127.0.0.1');
  t.like(await ask(n, claimOf(id, ['kitchen'])), { names: [{ name: 'kitchen', ok: false, code: 'limit' }] });
  t.deepEqual(await ask(n, { t: 'lookup', name: 'kitchen' }), { t: 'name', name: 'kitchen' });

  // --name-claims-per-ip 1: 16 names at once from 127.0.0.4 (claims of 2 names count 2), then one a second.
  const relay = await relayHere(t, { nameClaimsPerIp: 1, maxNamesPerAddress: 2 });
  const flood = Identity.random();
  const f = await agent(t, relay.port, flood, '127.0.0.4');
  for (let i = 0; i < NAME_CLAIM_BURST / 2; i++) t.like(await ask(f, claimOf(flood, [`flood${i}a`, `flood${i}b`])), { t: 'claimed', names: [{ ok: true }, { ok: true }] });
  // A claim of 8 names needs 8 more: refused however slowly the burst went (under 8 s).
  const refused = await ask(f, claimOf(flood, ['over', 'over1x', 'over2x', 'over3x', 'over4x', 'over5x', 'over6x', 'over7x']));
  t.deepEqual(refused, { t: 'error', code: 'unavailable', message: 'too many name claims from 127.0.0.4 (--name-claims-per-ip 1 per second); retry later' });
  t.deepEqual(await ask(f, { t: 'lookup', name: 'over' }), { t: 'name', name: 'over' }, 'a refused claim takes nothing');
  t.like(await ask(f, { t: 'lookup', name: `flood${NAME_CLAIM_BURST / 2 - 1}a` }), { address: flood.address }, 'the set before the refusal stands');
  // Another source is counted apart.
  const other = Identity.random();
  t.like(await ask(await agent(t, relay.port, other, '127.0.0.5'), claimOf(other, ['other'])), { names: [{ name: 'other', ok: true }] });
  // A second later, 127.0.0.4 has room for a name again.
  await tick(1_100);
  t.like(await ask(f, claimOf(flood, ['over'])), { t: 'claimed', names: [{ name: 'over', ok: true }] });
  t.is(relay.server.stats.get('refused_name_claims_per_ip'), 1);
});
