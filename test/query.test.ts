import test from 'ava';
import { createServer } from 'node:net';
import { runDiode as diode, startPublish, startRelay, tempDir } from './helpers/diode.ts';

async function addressOf(home: string): Promise<string> {
  return (await diode(['address', '--home', home])).stdout.trim();
}

test('diode query: online with the ports this key may see, --ping round trips, offline exit 1', async (t) => {
  const relay = await startRelay(t);
  const aliceHome = tempDir(t);
  const bobHome = tempDir(t);
  const alice = await addressOf(aliceHome);
  await addressOf(bobHome);
  // A protected port (its fleet is never asked: nobody connects) must not be named to anyone.
  const deviceHome = tempDir(t);
  const set = await diode(['config', '--home', deviceHome, '-set', `fleet=0x${'11'.repeat(20)}`, '-set', 'rpc=http://127.0.0.1:9']);
  t.is(set.code, 0, set.stderr);
  const device = await startPublish(t, relay.port, ['-public', '80:80', '-private', `22:22,${alice}`, '-protected', '2222:2222'], deviceHome);
  const at = `127.0.0.1:${relay.port}`;

  const asAlice = await diode(['query', device.address, '--relay', at, '--home', aliceHome, '--json']);
  t.is(asAlice.code, 0, asAlice.stderr);
  const info = JSON.parse(asAlice.stdout);
  t.is(info.online, true);
  t.is(info.address, device.address);
  t.is(info.relayAddress, relay.address);
  t.deepEqual(info.ports, [{ port: 22, mode: 'private' }, { port: 80, mode: 'public' }]);
  t.true(info.since <= Date.now());

  // Bob is not on port 22's allow list: he learns only of the public port.
  const asBob = await diode(['query', `${device.address.toLowerCase()}.diode`, '--relay', at, '--home', bobHome]);
  t.is(asBob.code, 0, asBob.stderr);
  t.regex(asBob.stdout, new RegExp(`^${device.address} online since \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ \\(via relay ${at}\\)\\nports: 80 public\\n$`));

  const ping = await diode(['query', device.address, '--ping', '--count', '5', '--relay', at, '--home', bobHome]);
  t.is(ping.code, 0, ping.stderr);
  const m = /ping: 5 round trips through the relay, min\/avg\/max ([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(ping.stdout);
  t.truthy(m, ping.stdout);
  t.true(Number(m![1]) > 0 && Number(m![1]) <= Number(m![3]));
  t.log(`ping through a loopback relay: ${m![0]}`);

  const offline = await diode(['query', '0x' + '00'.repeat(19) + 'ba', '--ping', '--relay', at, '--home', bobHome]);
  t.is(offline.code, 1);
  t.regex(offline.stdout, /^0x0+[bB][aA] offline \(via relay 127\.0\.0\.1:\d+\)\n$/);
  t.notRegex(offline.stdout, /ping/);

  const bad = await diode(['query', 'pi.example.org', '--relay', at, '--home', bobHome]);
  t.is(bad.code, 2);
});

test('diode query cannot tell when no relay answers: exit 3 and one line, never the offline exit 1', async (t) => {
  // A loopback port that was just free: nothing listens there.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as { port: number }).port;
  await new Promise((resolve) => probe.close(resolve));
  const started = Date.now();
  const r = await diode(['query', '0x' + '00'.repeat(19) + 'ba', '--relay', `127.0.0.1:${port}`, '--home', tempDir(t)]);
  t.is(r.code, 3, r.stderr);
  t.is(r.stdout, '');
  t.regex(r.stderr, /^diode: query: not connected to a relay \(relay 127\.0\.0\.1:\d+: .*\)\n$/);
  t.true(Date.now() - started < 15_000, `took ${Date.now() - started} ms`);
});
