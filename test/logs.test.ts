import test from 'ava';
import { createServer, type Server } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { start, tempDir } from './helpers/diode.ts';
import { socks5Connect } from './helpers/http.ts';

async function echoServer(t: { teardown(fn: () => void): void }): Promise<number> {
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  return (server.address() as { port: number }).port;
}

function jsonLines(output: string): Record<string, unknown>[] {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The secret as the key file holds it, and its bare hex. */
function keyMaterial(home: string): string[] {
  const text = readFileSync(join(home, 'private.key'), 'utf8').trim();
  const hex = text.replace(/^0x/, '').toLowerCase();
  return [hex, hex.slice(0, 32), hex.slice(32)];
}

test('--log-format json: the device logs each accepted and denied stream with the proven client and port; the relay logs joins and leaves at debug; no line holds key material', async (t) => {
  const echo = await echoServer(t);
  const json = ['--log-format', 'json', '--log-level', 'debug'];
  const relayHome = tempDir(t);
  const relay = start(t, ['relay', '--listen', '127.0.0.1:0', '--home', relayHome, ...json]);
  const relayPort = Number((await relay.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  // A protected port whose fleet RPC does not answer: the device itself denies (the relay passes protected ports on).
  const deviceHome = tempDir(t);
  const config = start(t, ['config', '--home', deviceHome, '-set', `fleet=0x${'11'.repeat(20)}`, '-set', 'rpc=http://127.0.0.1:9']);
  await config.exited();
  const device = start(t, ['publish', '-public', `${echo}:7`, '-protected', `${echo}:8`, '--relay', `127.0.0.1:${relayPort}`, '--home', deviceHome, ...json]);
  const deviceAddress = (await device.waitFor(/ as (0x[0-9a-fA-F]{40})/))[1];
  await device.waitFor(/connected to relay/);
  const clientHome = tempDir(t);
  const socksd = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relayPort}`, '--home', clientHome, ...json]);
  const socksPort = Number((await socksd.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  const clientAddress = (await socksd.waitFor(/socksd (0x[0-9a-fA-F]{40})/))[1];
  await socksd.waitFor(/connected to relay/);

  const ok = await socks5Connect(socksPort, `${deviceAddress}.diode`, 7);
  t.is(ok.rep, 0);
  ok.socket.destroy();
  // Refused as a port the device does not publish (issue 24 item 7); the device's own line says denied.
  const denied = await socks5Connect(socksPort, `${deviceAddress}.diode`, 8);
  t.is(denied.rep, 5);
  denied.socket.destroy();
  await device.waitFor(/"result":"denied"/);
  // A port the device does not publish: a device with a protected port answers that itself too, inside the
  // end-to-end layer, so that the two cannot be told apart by who answers.
  const unrouted = await socks5Connect(socksPort, `${deviceAddress}.diode`, 9);
  t.is(unrouted.rep, 5);
  unrouted.socket.destroy();
  await device.waitFor(/"result":"no-such-port"/);
  // A device that is not connected: the relay refuses that itself.
  const offlineDevice = '0x0000000000000000000000000000000000000bAd';
  const offline = await socks5Connect(socksPort, `${offlineDevice}.diode`, 22);
  t.not(offline.rep, 0);
  offline.socket.destroy();

  const lines = jsonLines(device.output());
  t.true(lines.length > 3);
  for (const l of lines) t.deepEqual(Object.keys(l).slice(0, 4), ['time', 'level', 'component', 'msg']);
  const streams = lines.filter((l) => l.event === 'stream');
  t.like(streams.find((l) => l.result === 'accepted'), { level: 'info', client: clientAddress, port: 7, mode: 'public', proof: 'relay' });
  t.like(streams.find((l) => l.result === 'denied'), { level: 'info', client: clientAddress, port: 8, mode: 'protected', proof: 'e2e' });
  t.like(streams.find((l) => l.result === 'no-such-port'), { level: 'info', client: clientAddress, port: 9 });
  t.is(streams.length, 3, 'one line per stream');
  const relayLines = jsonLines(relay.output());
  t.true(relayLines.some((l) => l.level === 'debug' && String(l.msg).includes(`${deviceAddress} connected from 127.0.0.1:`)));
  // The refusal, at info (one line per kind and second: relay-caps.test.ts checks the rate limit).
  t.true(relayLines.some((l) => l.level === 'info' && String(l.msg).toLowerCase().startsWith(`refused: ${clientAddress} → ${offlineDevice}:22:`.toLowerCase())), 'relay refusal at info');

  // The device leaves: the relay logs it at debug, as it logged the join.
  await device.stop();
  await relay.waitFor(new RegExp(`${deviceAddress} disconnected`));
  t.true(jsonLines(relay.output()).some((l) => l.level === 'debug' && String(l.msg).startsWith(`${deviceAddress} disconnected`)));
  await Promise.all([relay.stop(), socksd.stop()]);
  t.true(relayLines.some((l) => l.level === 'debug'));
  const everything = (relay.output() + device.output() + socksd.output()).toLowerCase();
  for (const home of [relayHome, deviceHome, clientHome]) {
    for (const secret of keyMaterial(home)) t.false(everything.includes(secret), `key material of ${home} in a log line`);
  }
  t.true(jsonLines(socksd.output()).length > 0);
});

test('--log-format and DIODE_LOG_FORMAT are checked with a clear error', async (t) => {
  const bad = start(t, ['publish', '-public', '22', '--relay', '127.0.0.1:9', '--home', tempDir(t), '--log-format', 'xml']);
  await bad.exited();
  t.is(bad.child.exitCode, 2);
  t.regex(bad.output(), /--log-format: "xml" is not a log format; use text or json/);
  const env = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', '127.0.0.1:9', '--home', tempDir(t)], { env: { DIODE_LOG_FORMAT: 'yaml' } });
  await env.exited();
  t.is(env.child.exitCode, 2);
  t.regex(env.output(), /DIODE_LOG_FORMAT: "yaml" is not a log format/);
});
