import test from 'ava';
import { execFile } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';
import { promisify } from 'node:util';
import { start, startRelay, startPublish, tempDir, DIODE_BUNDLE } from './helpers/diode.ts';
import { parseBindSpecs } from '../agent/client/target.ts';
import { UsageError } from '../agent/util/errors.ts';

const run = promisify(execFile);

/** Sends a line, collects everything until the far end closes. */
function exchange(port: number, line: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.on('data', (d) => (text += d.toString()));
    socket.on('error', () => {}); // a refused bind resets the connection
    socket.once('close', () => resolve(text));
    socket.end(line);
  });
}

test('diode bind forwards 127.0.0.1 ports to public and private device ports, with the private port\'s checks', async (t) => {
  // The device's local service: echoes what it got, upper-cased, then closes (exercises half-close through the tunnel).
  const sockets = new Set<Socket>();
  const echo = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    let got = '';
    s.on('data', (d) => (got += d.toString()));
    s.on('end', () => s.end(got.toUpperCase()));
  });
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    echo.close();
  });
  const echoPort = (echo.address() as { port: number }).port;

  const relay = await startRelay(t);
  const [alice, bob] = await Promise.all(
    [tempDir(t), tempDir(t)].map(async (home) => ({ home, address: (await run(process.execPath, [DIODE_BUNDLE, 'address', '--home', home])).stdout.trim() })),
  );
  const device = await startPublish(t, relay.port, ['-public', `${echoPort}:7`, '-private', `${echoPort}:8,${alice.address}`]);
  const name = `${device.address.toLowerCase()}.diode`;
  const bind = (home: string) => {
    const proc = start(t, ['bind', `0:${name}:7,0:${name}:8`, '--relay', `127.0.0.1:${relay.port}`, '--home', home]);
    return Promise.all([proc.waitFor(/bind 127\.0\.0\.1:(\d+) → \S+:7\n/), proc.waitFor(/bind 127\.0\.0\.1:(\d+) → \S+:8\n/), proc.waitFor(/connected to relay/)]).then(([pub, priv]) => ({
      proc,
      pub: Number(pub[1]),
      priv: Number(priv[1]),
    }));
  };
  const [a, b] = await Promise.all([bind(alice.home), bind(bob.home)]);

  const got = [await exchange(a.pub, 'public hello'), await exchange(a.priv, 'private hello'), await exchange(b.pub, 'public hello'), await exchange(b.priv, 'private hello')];
  if (got.join('|') !== 'PUBLIC HELLO|PRIVATE HELLO|PUBLIC HELLO|') {
    t.log(`alice bind:\n${a.proc.output()}\nbob bind:\n${b.proc.output()}\ndevice:\n${device.proc.output()}\nrelay:\n${relay.proc.output()}`);
  }
  t.deepEqual(got, ['PUBLIC HELLO', 'PRIVATE HELLO', 'PUBLIC HELLO', '']);
  await b.proc.waitFor(new RegExp(`:8: device ${device.address} does not publish port 8`));
});

test('bind specs are checked before anything connects, quoting the bad part', (t) => {
  const A = '0x0000000000000000000000000000000000000001';
  const specs = parseBindSpecs([`8080:${A}.diode:80,8081:${A.toUpperCase().replace('0X', '0x')}:22:tcp`, `0:${A}.diode.link:8`]);
  t.deepEqual(specs.map((s) => [s.localPort, s.target.port]), [[8080, 80], [8081, 22], [0, 8]]);
  const cases: Array<[string, RegExp]> = [
    ['8080:example.com:80', /"example\.com" is not a device: it does not end in \.diode/],
    [`8080:${A}.diode`, /write <local-port>:<name or address>\.diode:<remote-port>/],
    [`8080:${A}.diode:80:udp`, /only tcp/],
    [`8080:${A}.diode:70000`, /"70000" is not a port|outside 1-65535/],
    [`8080:${A}.diode:80,8080:${A}.diode:81`, /local port 8080 is bound twice/],
    ['8080:0x12.diode:80', /"0x12\.diode" is not a device: an address is 0x and 40 hex digits/],
    ['8080:ab.diode:80', /"ab\.diode" is not a device: a name has 3-63 characters/],
  ];
  for (const [spec, pattern] of cases) t.throws(() => parseBindSpecs([spec]), { instanceOf: UsageError, message: pattern }, spec);
});
