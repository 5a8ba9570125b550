import test from 'ava';
import { connect, createServer, type Server } from 'node:net';
import { start, startRelay, startPublish, tempDir } from './helpers/diode.ts';
import { socks5Connect } from './helpers/http.ts';

/** One sample of the Prometheus text format: name{labels} value. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[4]);
  }
  return undefined;
}

async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  if (!/^text\/plain; version=0\.0\.4/.test(res.headers.get('content-type') ?? '')) throw new Error(`content type ${res.headers.get('content-type')}`);
  return res.text();
}

async function echoServer(t: { teardown(fn: () => void): void }): Promise<number> {
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {}); // a tunnel torn down resets its legs
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  return (server.address() as { port: number }).port;
}

const METRICS_LINE = /metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/;

test('--metrics on relay, publish and socksd: scraped during traffic, the numbers move; the relay prints the same counters on shutdown', async (t) => {
  const echo = await echoServer(t);
  const relay = await startRelay(t, ['--metrics', '127.0.0.1:0', '--gateway-socks', '127.0.0.1:0']);
  const relayMetrics = Number((await relay.proc.waitFor(METRICS_LINE))[1]);
  const gatewayPort = Number((await relay.proc.waitFor(/gateway socks listening on 127\.0\.0\.1:(\d+)/))[1]);
  const deviceHome = tempDir(t);
  const device = await startPublish(t, relay.port, ['-public', `${echo}:7`, '--metrics', '127.0.0.1:0'], deviceHome);
  const deviceMetrics = Number((await device.proc.waitFor(METRICS_LINE))[1]);
  const socksd = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relay.port}`, '--home', tempDir(t), '--metrics', '127.0.0.1:0']);
  const socksPort = Number((await socksd.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  const socksMetrics = Number((await socksd.waitFor(METRICS_LINE))[1]);
  await socksd.waitFor(/connected to relay/);

  const before = { relay: await scrape(relayMetrics), device: await scrape(deviceMetrics), socksd: await scrape(socksMetrics) };
  t.is(sample(before.relay, 'diode_relay_sessions'), 2);
  t.is(sample(before.relay, 'diode_relay_admission_seconds_count'), 2);
  t.is(sample(before.device, 'diode_connected', { role: 'publish' }), 1);
  t.is(sample(before.device, 'diode_streams_total', { result: 'ok' }), 0);
  t.true((sample(before.device, 'process_resident_memory_bytes') ?? 0) > 1e6, 'process metrics');

  // A stream that stays open while we scrape, with 1 MB echoed through it.
  const open = await socks5Connect(socksPort, `${device.address}.diode`, 7);
  t.is(open.rep, 0);
  const payload = Buffer.alloc(1_000_000, 1);
  await new Promise<void>((resolve) => {
    let n = 0;
    open.socket.on('data', (c: Buffer) => {
      if ((n += c.length) >= payload.length) resolve();
    });
    open.socket.resume();
    open.socket.write(payload);
  });
  const refused = await socks5Connect(socksPort, `${device.address}.diode`, 9);
  t.is(refused.rep, 5);
  refused.socket.destroy();
  // The public gateway refuses the same unpublished port: its own family moves.
  const viaGateway = await socks5Connect(gatewayPort, `${device.address}.diode`, 9);
  t.not(viaGateway.rep, 0);
  viaGateway.socket.destroy();
  // Two connections to the agent port that never finish TLS: plain text, and a close with no byte.
  await Promise.all(
    ['GET / HTTP/1.0\r\n\r\n', ''].map(
      (text) =>
        new Promise<void>((resolve) => {
          const c = connect(relay.port, '127.0.0.1', () => c.end(text));
          c.on('error', () => {});
          c.resume();
          c.once('close', () => resolve());
        }),
    ),
  );
  let tlsFailures = 0;
  for (let i = 0; i < 40 && tlsFailures < 2; i++) {
    tlsFailures = sample(await scrape(relayMetrics), 'diode_relay_handshake_failures_total', { reason: 'tls' }) ?? 0;
    if (tlsFailures < 2) await new Promise((r) => setTimeout(r, 50));
  }
  t.is(tlsFailures, 2, 'TLS handshake failures counted by reason');

  const during = { relay: await scrape(relayMetrics), device: await scrape(deviceMetrics), socksd: await scrape(socksMetrics) };
  t.is(sample(during.device, 'diode_streams_open'), 1);
  t.is(sample(during.device, 'diode_streams_total', { result: 'ok' }), 1);
  t.true(sample(during.device, 'diode_bytes_total', { direction: 'rx' })! >= payload.length);
  t.true(sample(during.device, 'diode_bytes_total', { direction: 'tx' })! >= payload.length);
  t.is(sample(during.socksd, 'diode_streams_total', { result: 'ok' }), 1);
  t.is(sample(during.socksd, 'diode_streams_total', { result: 'no-such-port' }), 1);
  t.true(sample(during.socksd, 'diode_bytes_total', { direction: 'tx' })! >= payload.length);
  t.is(sample(during.relay, 'diode_relay_events_total', { event: 'stream_routed' }), 1);
  t.is(sample(during.relay, 'diode_relay_refusals_total', { reason: 'route_no-such-port' }), 1);
  t.is(sample(during.relay, 'diode_streams_open', { role: 'relay' }), 1);
  t.is(sample(during.relay, 'diode_relay_stream_setup_seconds_count'), 1);
  t.is(sample(during.relay, 'diode_relay_gateway_total', { event: 'socks_refused' }), 1);
  t.is(sample(during.relay, 'diode_relay_gateway_total', { event: 'socks_no_such_port' }), 1);
  t.is(sample(during.relay, 'diode_relay_handshake_failures_total', { reason: 'tls' }), 2);
  const relayRx = sample(during.relay, 'diode_bytes_total', { direction: 'rx' })!;
  t.true(relayRx - sample(before.relay, 'diode_bytes_total', { direction: 'rx' })! >= 2 * payload.length, 'relay wire bytes moved both legs');

  // /healthz: 200 while connected.
  const health = await fetch(`http://127.0.0.1:${deviceMetrics}/healthz`);
  t.is(health.status, 200);
  t.is(await health.text(), 'ok\n');

  open.socket.destroy();
  // The relay's shutdown line reads the same store as /metrics.
  await relay.proc.stop();
  const counters = JSON.parse(/counters (\{.*\})/.exec(relay.proc.output())![1]) as Record<string, number>;
  t.is(counters.stream_routed, 1);
  t.is(counters['route_no-such-port'], 1);
  t.is(counters.handshake_tls, 2);
  t.is(counters.session_opened, sample(during.relay, 'diode_relay_events_total', { event: 'session_opened' }) ?? -1);

  // Relay gone: the device's /healthz says so.
  let status = 200;
  for (let i = 0; i < 50 && status === 200; i++) {
    status = (await fetch(`http://127.0.0.1:${deviceMetrics}/healthz`)).status;
    if (status === 200) await new Promise((r) => setTimeout(r, 100));
  }
  t.is(status, 503);
});

test('--metrics with a bad address is refused before anything starts', async (t) => {
  const relay = await startRelay(t);
  const proc = start(t, ['publish', '-public', '22', '--relay', `127.0.0.1:${relay.port}`, '--home', tempDir(t), '--metrics', 'nonsense']);
  await proc.exited();
  t.is(proc.child.exitCode, 2);
  t.regex(proc.output(), /--metrics/);
  t.notRegex(proc.output(), /connected to relay/);
});
