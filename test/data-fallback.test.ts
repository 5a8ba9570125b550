// Issue 27 item 5: where a data connection cannot be made, or one dies
// without a word, the stream runs over the relay link: real network
// namespaces, a middlebox's iptables rules in the hub, real OpenSSH through
// socksd (nc -X 5).
//
//   client ns (socksd, ssh) ── hub ns (router; the iptables rules here) ── relay ns
//                                 └── device ns (publish, sshd)
import test, { type ExecutionContext } from 'ava';
import { relayCounters, tempDir } from './helpers/diode.ts';
import { Net, count, netnsRefusal, outputs, publishIn, relayIn, socksdIn, sshOnce, sshdIn, track, until } from './helpers/netns.ts';

const refusal = await netnsRefusal();

async function world(t: ExecutionContext, tag: string) {
  const net = new Net(t, tag);
  const [relay, device, client] = [await net.host('relay'), await net.host('device'), await net.host('client')];
  const home = tempDir(t);
  const r = await relayIn(t, relay, home);
  const sshd = await sshdIn(t, device);
  const p = await publishIn(t, device, r.endpoint);
  track(t, 'relay', r.proc);
  track(t, 'publish', p.proc);
  return { net, relay, device, client, home, endpoint: r.endpoint, sshd, address: p.address, relayProc: r.proc };
}

test.afterEach.always((t) => {
  if (!t.passed) t.log(outputs(t.title));
});

test('a network that lets the client make one connection to the relay and resets the rest: ssh works over the link, socksd says so once', async (t) => {
  if (refusal) return t.log(`skipped: ${refusal}`) as unknown as void;
  const w = await world(t, 'one');
  // The middlebox: from the client to the relay's port, a second connection is refused (RST).
  const port = w.endpoint.split(':')[1];
  await w.net.forwardRule('-I', ['-s', w.client.addr, '-p', 'tcp', '--dport', port, '--syn', '-m', 'connlimit', '--connlimit-above', '1', '--connlimit-mask', '32', '-j', 'REJECT', '--reject-with', 'tcp-reset']);
  const socksd = track(t, 'socksd', await socksdIn(t, w.client, w.endpoint));
  await until('socksd said it has no data connections', () => count(socksd, /no data connections/) > 0, 15_000);
  for (let i = 0; i < 3; i++) t.true(await sshOnce(w.client, w.sshd, w.address), `ssh ${i + 1}`);
  t.is(count(socksd, /no data connections/), 1, 'said once');
  t.regex(socksd.output(), /relay 10\.87\.\d+\.2:\d+ \(0x[0-9a-fA-F]{40}\): no data connections \(data connection to 10\.87\.\d+\.2:\d+: .*\); streams go over the relay link instead/);
  const counters = await relayCounters(w.home);
  t.is(counters.stream_legs_link_data ?? 0, 3, JSON.stringify(counters));
});

test('a ready data connection that a middlebox silently drops: the stream goes over the link within seconds, no ssh fails', async (t) => {
  if (refusal) return t.log(`skipped: ${refusal}`) as unknown as void;
  const w = await world(t, 'drop');
  // The middlebox marks the client's data connections by their opening ("DIOD"), and later drops them.
  const port = w.endpoint.split(':')[1];
  const mine = ['-s', w.client.addr, '-p', 'tcp', '--dport', port];
  await w.net.forwardRule('-I', [...mine, '-m', 'string', '--string', 'DIOD', '--algo', 'bm', '-j', 'CONNMARK', '--set-mark', '0x27']);
  const socksd = track(t, 'socksd', await socksdIn(t, w.client, w.endpoint));
  t.true(await sshOnce(w.client, w.sshd, w.address), 'a first ssh, on data connections');
  const before = await relayCounters(w.home);
  t.is(before.stream_legs_data_data ?? 0, 1, JSON.stringify(before));
  // From here every packet the client sends on a data connection is dropped: its ready ones go
  // silent (neither end is told), new ones never get their opening through; its relay link works.
  await w.net.forwardRule('-I', [...mine, '-m', 'connmark', '--mark', '0x27', '-j', 'DROP']);
  const started = Date.now();
  t.true(await sshOnce(w.client, w.sshd, w.address, 30_000), 'ssh works, over the link');
  t.log(`the ssh whose data connection was dead took ${Date.now() - started} ms`);
  t.true(await sshOnce(w.client, w.sshd, w.address, 30_000), 'and again');
  const after = await relayCounters(w.home);
  t.true((after.stream_legs_link_data ?? 0) >= 2, JSON.stringify(after));
  t.is(count(socksd, /a stream's data connection failed \(.*no TLS answer from the device within 2000 ms/), 1, 'said once');
});
