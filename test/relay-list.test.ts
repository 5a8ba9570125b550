import test, { type ExecutionContext } from 'ava';
import { createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { socks5Connect } from '../bench/lib/client.ts';
import { backoffDelay, defaultBackoff } from '../agent/link/backoff.ts';
import { watchNetwork } from '../agent/link/network-watch.ts';
import { start, tempDir, type Running } from './helpers/diode.ts';
import { freePort } from './helpers/sshd.ts';

// Issue 19, items 3 and 4: coming back within 5 s, and an ordered list of relays.

async function echoService(t: ExecutionContext): Promise<number> {
  const server = createServer((s: Socket) => {
    s.on('error', () => {}); // a tunnel that dies resets this leg
    s.pipe(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  return (server.address() as { port: number }).port;
}

function relayOn(t: ExecutionContext, port: number, home: string): Running {
  return start(t, ['relay', '--listen', `127.0.0.1:${port}`, '--home', home]);
}

/** How many times the process logged a new relay session. */
const connections = (p: Running, port?: number) => (p.output().match(port ? new RegExp(`connected to relay 127\\.0\\.0\\.1:${port} `, 'g') : /connected to relay/g) ?? []).length;

async function until(what: string, pred: () => boolean, ms: number): Promise<number> {
  const started = performance.now();
  while (!pred()) {
    if (performance.now() - started > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return performance.now() - started;
}

async function echoThrough(socksPort: number, host: string, port: number): Promise<void> {
  const s = await socks5Connect(socksPort, host, port);
  s.resume();
  s.write('hi');
  await once(s, 'data');
  s.destroy();
}

test('backoff waits at most 3 s, with jitter over the whole window, while the failure is under 5 min old', (t) => {
  for (let attempt = 0; attempt < 40; attempt++) {
    t.true(backoffDelay(attempt, defaultBackoff) <= 3_000);
    t.true(backoffDelay(attempt, defaultBackoff, Math.random, 5 * 60_000 - 1) <= 3_000);
  }
  t.is(backoffDelay(30, defaultBackoff, () => 0), 300);
  t.is(backoffDelay(30, defaultBackoff, () => 1), 3_000);
});

test('a change of the machine addresses is seen (and a watch never throws)', async (t) => {
  let sig = 'eth0/10.0.0.2';
  let changes = 0;
  const stop = watchNetwork(() => changes++, 10, () => sig);
  t.teardown(stop);
  await new Promise((r) => setTimeout(r, 50));
  t.is(changes, 0);
  sig = 'eth0/10.0.0.2,wlan0/192.168.1.9';
  await until('the change', () => changes === 1, 2_000);
  t.pass();
});

test('a device returns within 5 s of its relay coming back after a 15 s outage', async (t) => {
  const service = await echoService(t);
  const port = await freePort();
  const home = tempDir(t);
  let relay = relayOn(t, port, home);
  await relay.waitFor(/listening/);
  const device = start(t, ['publish', '-public', `${service}:7`, '--relay', `127.0.0.1:${port}`, '--home', tempDir(t)]);
  await device.waitFor(/connected to relay/);
  relay.child.kill('SIGKILL');
  await until('the loss to be seen', () => /lost relay/.test(device.output()), 5_000);
  await new Promise((r) => setTimeout(r, 15_000));
  const before = connections(device);
  relay = relayOn(t, port, home);
  await relay.waitFor(/listening/);
  const back = performance.now();
  const ms = await until('the device to reconnect', () => connections(device) > before, 10_000);
  t.log(`device reconnected ${(performance.now() - back).toFixed(0)} ms after the relay was back`);
  t.true(ms < 5_000, `reconnected after ${ms.toFixed(0)} ms`);
});

test('relays are an order of preference: a device on the second relay moves back to the first when it returns, and a client asking both finds it on either', async (t) => {
  const service = await echoService(t);
  const [portA, portB] = [await freePort(), await freePort()];
  const homeA = tempDir(t);
  const relayB = relayOn(t, portB, tempDir(t));
  await relayB.waitFor(/listening/);
  const relays = `127.0.0.1:${portA},127.0.0.1:${portB}`;
  const device = start(t, ['publish', '-public', `${service}:7`, '--relay', relays, '--home', tempDir(t)]);
  const m = await device.waitFor(/ as (0x[0-9a-fA-F]{40})/);
  const host = `${m[1].toLowerCase()}.diode`;
  await until('the device on relay B', () => connections(device, portB) === 1, 10_000);
  // socksd knows both relays (only B is up): it finds the device on B.
  const socks = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${portB},127.0.0.1:${portA}`, '--home', tempDir(t)]);
  const sm = await socks.waitFor(/listening on 127\.0\.0\.1:(\d+)/);
  await socks.waitFor(/connected to relay/);
  await echoThrough(Number(sm[1]), host, 7);

  // A comes up: the device moves back to it (probe every 2.5-5 s).
  const relayA = relayOn(t, portA, homeA);
  await relayA.waitFor(/listening/);
  const back = await until('the device back on relay A', () => connections(device, portA) === 1, 12_000);
  t.log(`device moved back to the first relay ${back.toFixed(0)} ms after it was up`);
  await until('socksd on relay A too', () => connections(socks, portA) >= 1, 8_000);
  await until('the old session to retire', () => /moving back/.test(device.output()), 1_000);
  await new Promise((r) => setTimeout(r, 1_500)); // B's session retires (go-away, then closed)
  await echoThrough(Number(sm[1]), host, 7); // now through A: B no longer has it
  relayB.child.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 300));
  await echoThrough(Number(sm[1]), host, 7);
  t.pass();
});
