import test from 'ava';
import { parseRelayEntry, formatRelayEntry } from '../agent/config/relay-entry.ts';
import { UsageError } from '../agent/util/errors.ts';
import { start, startRelay, tempDir } from './helpers/diode.ts';

const A = '0x63115A27c3d1B549011198C69F4120ca4Ea12EE9';

test('relay entries: host:port, pinned 0x…@host:port and diode://0x…@host:port', (t) => {
  t.deepEqual(parseRelayEntry('relay.example.org:41046'), { host: 'relay.example.org', port: 41046 });
  t.deepEqual(parseRelayEntry('relay.example.org'), { host: 'relay.example.org', port: 41046 });
  t.deepEqual(parseRelayEntry('localhost'), { host: 'localhost', port: 41046 });
  t.deepEqual(parseRelayEntry('pi-relay:5000'), { host: 'pi-relay', port: 5000 });
  t.deepEqual(parseRelayEntry('[::1]:5000'), { host: '::1', port: 5000 });
  t.deepEqual(parseRelayEntry(`${A.toLowerCase()}@10.0.0.1:41046`), { host: '10.0.0.1', port: 41046, pin: A });
  t.deepEqual(parseRelayEntry(`diode://${A}@relay.example.org:41046`), { host: 'relay.example.org', port: 41046, pin: A });
  t.deepEqual(parseRelayEntry(`DIODE://${A}@relay.example.org`), { host: 'relay.example.org', port: 41046, pin: A });
  t.is(formatRelayEntry(parseRelayEntry(`diode://${A.toLowerCase()}@relay.example.org:1`)), `${A}@relay.example.org:1`);
});

test('bad relay entries are one line each: URLs, bare words, bad ports, bad pins', (t) => {
  const cases: Array<[string, RegExp]> = [
    ['http://relay.example.org:41046', /relay "http:\/\/relay\.example\.org:41046": a relay is not a http:\/\/ URL/],
    ['https://relay.example.org', /not a https:\/\/ URL/],
    ['relay', /"relay" is a bare word, not a relay; write host:port/],
    ['relay.example.org:99999', /port 99999 is outside 1-65535/],
    ['relay.example.org:ssh', /"ssh" is not a port number/],
    ['0x1234@relay.example.org:1', /has 4 hex digits/],
    ['0x63115a27C3d1b549011198c69F4120CA4ea12EE8@relay.example.org:1', /bad EIP-55 checksum/],
    ['root@relay.example.org:1', /before the @ goes the relay's 0x address/],
    ['diode://relay.example.org:1', /a diode:\/\/ relay names its address/],
    ['relay.example.org:1/path', /has no path/],
  ];
  for (const [entry, pattern] of cases) {
    const err = t.throws(() => parseRelayEntry(entry), { instanceOf: UsageError }, entry);
    t.regex(err!.message, pattern, entry);
    t.false(err!.message.includes('\n'));
  }
});

test('diode refuses a bad relay entry at start with one line and exit 2 (flag and config)', async (t) => {
  const home = tempDir(t);
  for (const [entry, pattern] of [
    ['http://127.0.0.1:41046', /not a http:\/\/ URL/],
    ['relay', /bare word/],
    ['127.0.0.1:70000', /outside 1-65535/],
  ] as const) {
    const proc = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', entry, '--home', home]);
    const code = await proc.exited();
    t.is(code, 2, entry);
    t.is(proc.output().trim().split('\n').length, 1, proc.output());
    t.regex(proc.output(), pattern);
  }
  const set = start(t, ['config', '-set', 'relays=https://relay.example.org', '--home', home]);
  t.is(await set.exited(), 2);
  t.regex(set.output(), /not a https:\/\/ URL/);
  const ok = start(t, ['config', '-set', `relays=diode://${A.toLowerCase()}@relay.example.org:41046,relay2.example.org`, '--home', home]);
  t.is(await ok.exited(), 0, ok.output());
  const list = start(t, ['config', '-list', '--home', home]);
  await list.exited();
  t.regex(list.output(), new RegExp(`${A}@relay\\.example\\.org:41046,relay2\\.example\\.org:41046`));
});

test('a pinned relay that proves another address is refused with one line naming both, and the agent goes on to the next relay', async (t) => {
  const impostor = await startRelay(t);
  const real = await startRelay(t);
  // diode relay prints the pinned form to hand to devices.
  await real.proc.waitFor(new RegExp(`pinned form for devices: --relay ${real.address}@127\\.0\\.0\\.1:${real.port}`));
  const relays = `${real.address}@127.0.0.1:${impostor.port},${real.address}@127.0.0.1:${real.port}`;
  const publish = start(t, ['publish', '-public', '22:22', '--relay', relays, '--home', tempDir(t)]);
  await publish.waitFor(new RegExp(`connected to relay 127\\.0\\.0\\.1:${real.port}`));
  const refused = publish.output().split('\n').filter((l) => l.includes(`127.0.0.1:${impostor.port}`) && !l.startsWith('publishing'));
  t.is(refused.length, 1, publish.output());
  t.true(refused[0].includes(impostor.address) && refused[0].includes(real.address), refused[0]);
  t.regex(refused[0], /pinned to .*refused/);
  t.notRegex(publish.output(), /is not pinned/);
});

test('an unpinned relay is logged once as such', async (t) => {
  const relay = await startRelay(t);
  const publish = start(t, ['publish', '-public', '22:22', '--relay', `127.0.0.1:${relay.port}`, '--home', tempDir(t)]);
  await publish.waitFor(/connected to relay/);
  const lines = publish.output().split('\n').filter((l) => /is not pinned/.test(l));
  t.is(lines.length, 1);
  t.true(lines[0].includes(`--relay ${relay.address}@127.0.0.1:${relay.port}`), lines[0]);
});
