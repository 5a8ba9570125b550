import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { runDiode, start, tempDir } from './helpers/diode.ts';
import { socks5Connect } from './helpers/http.ts';
import { RETIRED_EXIT_CODE } from '../agent/relay/retire.ts';
import { startRedis } from './helpers/redis.ts';
import { clusterRelays, within } from './helpers/cluster.ts';
import { LEARNED_RELAY_DELAY_MS, LearnedRelays, MAX_LEARNED_RELAYS, readLearnedRelays } from '../agent/link/learned-relays.ts';
import { parseRelayControl } from '../agent/protocol/relay-control.ts';
import { parseRelayEntry } from '../agent/config/relay-entry.ts';
import { silentLogger } from '../agent/util/log.ts';

// Issue 26, item 1: devices learn the cluster's relays from the relays they pinned.

const learnedFile = (home: string) => JSON.parse(readFileSync(join(home, 'learned-relays.json'), 'utf8')) as { relays: Array<{ relay: string }> };

test('a device pinned to relay A learns relay B of its cluster, dials it only after A has failed for the stated time, and goes back to A when A returns', async (t) => {
  const redis = await startRedis(t);
  const [a, b] = await clusterRelays(t, redis.url, 2);
  await a.start();
  await b.start();
  const home = tempDir(t);
  const device = start(t, ['publish', '-public', '22:22', '--relay', `${a.address}@${a.at}`, '--home', home]);
  await device.waitFor(/connected to relay/);
  // A names both relays of its cluster (itself included) on the control stream.
  await device.waitFor(new RegExp(`learned 1 relay from relay ${a.address}: ${b.address}@${b.at.replace(/\./g, '\\.')}`), 10_000);
  t.deepEqual(learnedFile(home).relays.map((r) => r.relay), [`${b.address}@${b.at}`], 'the configured relay is not learned again');

  // status and config -list show learned relays apart from the configured one.
  const status = await runDiode(['status', '--home', home]);
  t.regex(status.stdout, new RegExp(`configured +${a.address}@`));
  t.regex(status.stdout, new RegExp(`learned +.*${b.address}@${b.at.replace(/\./g, '\\.')} \\(seen`));
  const list = await runDiode(['config', '-list', '--home', home, '--relay', `${a.address}@${a.at}`]);
  t.regex(list.stdout, new RegExp(`relays in effect: ${a.address}@`));
  t.regex(list.stdout, new RegExp(`learned relays \\(tried after the relays in effect have failed for 30 s\\): .*${b.address}@${b.at.replace(/\./g, '\\.')}`));

  // A goes away for good: B is dialled once A has failed for LEARNED_RELAY_DELAY_MS, not before.
  a.proc.child.kill('SIGKILL');
  const lost = performance.now();
  await device.waitFor(/lost relay/, 30_000);
  const onB = new RegExp(`connected to relay ${b.at.replace(/\./g, '\\.')} .*learned`);
  await device.waitFor(onB, LEARNED_RELAY_DELAY_MS + 15_000);
  const waited = performance.now() - lost;
  t.log(`device on learned relay B ${(waited / 1000).toFixed(1)} s after A died (stated: after ${LEARNED_RELAY_DELAY_MS / 1000} s)`);
  t.true(waited >= LEARNED_RELAY_DELAY_MS - 500, `dialled B after ${waited.toFixed(0)} ms`);
  t.true(waited <= LEARNED_RELAY_DELAY_MS + 10_000, `dialled B after ${waited.toFixed(0)} ms`);

  // A learned relay never displaces a configured one: A back, the device moves back to it.
  const before = (device.output().match(new RegExp(`connected to relay ${a.at.replace(/\./g, '\\.')} `, 'g')) ?? []).length;
  await a.start();
  await within('the device back on A', 15_000, async () => (device.output().match(new RegExp(`connected to relay ${a.at.replace(/\./g, '\\.')} `, 'g')) ?? []).length > before);
  t.pass();
});

test('in a cluster, retiring relay A moves its device to B without losing it: a client on B reaches it, A leaves the roster and exits', async (t) => {
  const redis = await startRedis(t);
  const [a, b] = await clusterRelays(t, redis.url, 2);
  await a.start();
  await b.start();
  const echo = createServer((s: Socket) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  t.teardown(() => echo.close());
  const device = start(t, ['publish', '-public', `${(echo.address() as { port: number }).port}:7`, '--relay', `${a.address}@${a.at}`, '--home', tempDir(t)]);
  const address = (await device.waitFor(/ as (0x[0-9a-fA-F]{40})/))[1];
  await device.waitFor(/connected to relay/);
  const client = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', `${b.address}@${b.at}`, '--home', tempDir(t)]);
  const socksPort = Number((await client.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  await client.waitFor(/connected to relay/);
  const roundTrip = async () => {
    const { rep, socket } = await socks5Connect(socksPort, `${address.toLowerCase()}.diode`, 7);
    try {
      if (rep !== 0) return false;
      socket.resume();
      socket.write('x');
      await once(socket, 'data');
      return true;
    } finally {
      socket.destroy();
    }
  };
  t.true(await roundTrip(), 'across the cluster before: client on B, device on A');
  t.is((await runDiode(['relay', '--retire-to', `${b.address}@${b.at}`, '--home', a.home])).code, 0);
  await device.waitFor(new RegExp(`connected to relay ${b.at.replace(/\./g, '\\.')} `), 10_000);
  await within('the device reached through B', 5_000, roundTrip);
  t.is(await a.proc.exited(), RETIRED_EXIT_CODE);
  t.regex(a.proc.output(), /retired: 1 agent moved, none left/);
  const roster = await redis.cli('hkeys', 'diode:relays');
  t.false(roster.includes(a.address), 'A left the roster');
  t.true(roster.includes(b.address));
  t.true(await roundTrip(), 'and after A is gone');
});

test('a relay that is not pinned teaches nothing: its cluster is not learned', async (t) => {
  const redis = await startRedis(t);
  const [a, b] = await clusterRelays(t, redis.url, 2);
  await a.start();
  await b.start();
  const home = tempDir(t);
  const device = start(t, ['publish', '-public', '22:22', '--relay', a.at, '--home', home]);
  await device.waitFor(/connected to relay/);
  await device.waitFor(/is not pinned: the relays it names are not learned; pin it with --relay 0x/, 10_000);
  t.deepEqual(readLearnedRelays(home).relays, []);
  t.notRegex(device.output(), /learned \d+ relay/);
});

test('the learned relays file is bounded, keeps the most recently seen, and a relay named again is no longer retired', (t) => {
  const home = tempDir(t);
  const store = new LearnedRelays(home, silentLogger);
  const from = '0x' + '1'.repeat(40);
  const entry = (i: number) => parseRelayEntry(`0x${i.toString(16).padStart(40, '0')}@10.0.${i >> 8}.${i & 255}:41046`);
  for (let i = 1; i <= MAX_LEARNED_RELAYS + 8; i++) store.learn([entry(i)], from, 1_000 + i);
  const kept = readLearnedRelays(home).relays;
  t.is(kept.length, MAX_LEARNED_RELAYS);
  t.is(kept[0].entry.pin, entry(MAX_LEARNED_RELAYS + 8).pin, 'newest first');
  t.false(kept.some((r) => r.entry.pin === entry(1).pin), 'the least recently seen went');
  const retiring = entry(MAX_LEARNED_RELAYS + 8);
  store.markRetired(retiring.pin!, [entry(3)]);
  t.true(new LearnedRelays(home, silentLogger).isRetired(retiring.pin));
  store.learn([retiring], from);
  t.false(new LearnedRelays(home, silentLogger).isRetired(retiring.pin));
});

test('relay control messages: only pinned entries, bounded, anything else refused', (t) => {
  const pinned = `0x${'a'.repeat(40)}@relay.example.org:41046`;
  t.is(parseRelayControl({ t: 'relays', relays: [pinned, pinned] }).t, 'relays');
  t.throws(() => parseRelayControl({ t: 'relays', relays: ['relay.example.org:41046'] }), { message: /not pinned/ });
  t.throws(() => parseRelayControl({ t: 'relays', relays: Array(17).fill(pinned) }), { message: /0 to 16 relays/ });
  t.throws(() => parseRelayControl({ t: 'retire', to: [] }), { message: /1 to 16 relays/ });
  t.throws(() => parseRelayControl({ t: 'relays', relays: ['0xabc@h:1'] }), { message: /relays\.relays\[0\]/ });
  t.throws(() => parseRelayControl({ t: 'install', url: 'x' }), { message: /unexpected control message/ });
});
