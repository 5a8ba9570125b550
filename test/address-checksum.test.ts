// Issue 27 item 8: the relay took mixed-case addresses whose EIP-55 checksum
// is wrong (a typo that the checksum exists to catch), in `connect.to` and in
// allow lists, where docs/PROTOCOL.md and `diode query` refuse them.
import test from 'ava';
import { Identity } from '../agent/identity/index.ts';
import { readFrame, writeFrame } from '../agent/protocol/frames.ts';
import { parseConnect, parseIncoming, parsePublish } from '../agent/protocol/messages.ts';
import { clientHere, relayHere } from './helpers/agents.ts';

/** A checksummed address with the case of one letter flipped: mixed case, wrong checksum. */
function badChecksum(address: string): string {
  const i = [...address].findIndex((c, k) => k > 1 && /[a-fA-F]/.test(c));
  const c = address[i];
  return address.slice(0, i) + (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase()) + address.slice(i + 1);
}

const good = Identity.random().address;
const bad = badChecksum(good);

test('address fields: all lower, all upper and a valid checksum are taken; mixed case with a wrong checksum is refused', (t) => {
  for (const to of [good, good.toLowerCase(), `0x${good.slice(2).toUpperCase()}`]) t.is(parseConnect({ t: 'connect', to, port: 22 }).to, good);
  t.throws(() => parseConnect({ t: 'connect', to: bad, port: 22 }), { message: /connect\.to has mixed case but not a valid EIP-55 checksum/ });
  t.throws(() => parsePublish({ t: 'publish', ports: [{ port: 22, mode: 'private', allow: [good, bad] }] }), { message: /publish\.ports\[0\]\.allow\[1\] has mixed case but not a valid EIP-55 checksum/ });
  t.throws(() => parseIncoming({ t: 'incoming', from: bad, port: 22, via: good }), { message: /incoming\.from/ });
});

test('the relay answers a connect to a mixed-case address with a wrong checksum bad-request, and refuses such an allow list', async (t) => {
  const relay = await relayHere(t);
  // No control stream of its own: the test's publish is the session's first.
  const client = await clientHere(t, relay.port, 0, undefined, false);
  const session = await client.link.waitForSession(5000);
  const connect = session.open();
  connect.on('error', () => {});
  writeFrame(connect, { t: 'connect', to: bad, port: 22, e2e: true });
  const answer = await readFrame(connect, 4096, 5000);
  t.like(answer, { t: 'error', code: 'bad-request' });
  t.regex(String(answer.message), /connect\.to has mixed case but not a valid EIP-55 checksum/);
  const control = session.open();
  control.on('error', () => {});
  writeFrame(control, { t: 'publish', ports: [{ port: 22, mode: 'private', allow: [bad] }] });
  const refused = await readFrame(control, 4096, 5000);
  t.like(refused, { t: 'error', code: 'bad-request' });
  t.regex(String(refused.message), /allow\[0\] has mixed case but not a valid EIP-55 checksum/);
  t.is(relay.server.registry.publisher(client.identity.address), undefined);
});
