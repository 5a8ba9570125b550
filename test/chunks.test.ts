// Issue 28 item 1: each command loads only the chunks it uses. The agent
// commands (publish, socksd, proxy, bind) never load ethers, the fleet
// admin, the relay or the gateway, not at start and not while a stream
// goes through; a -protected port does load the fleet client (so this test
// can see a chunk load at all). Which source files each chunk holds comes
// from dist/chunks/inputs.json, written by scripts/build.mjs.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { DIODE_BUNDLE, start, startRelay, tempDir, type Running } from './helpers/diode.ts';
import { freePort } from './helpers/sshd.ts';

const TRACE = { DIODE_TRACE_CHUNKS: '1' };
const INPUTS: Record<string, string[]> = JSON.parse(readFileSync(join(DIODE_BUNDLE, '..', 'chunks', 'inputs.json'), 'utf8'));

/** Source files no agent command may load unless a protected port needs the fleet client. */
const FORBIDDEN: ReadonlyArray<[string, RegExp]> = [
  // Paths are esbuild's, relative to the clone (through a symlinked node_modules they lead elsewhere).
  ['ethers', /(^|\/)node_modules\/ethers\//],
  ['the fleet admin and fleet client', /^agent\/fleet\/(?!rpc-url\.ts$)/],
  ['the relay', /^agent\/relay\/(?!config\.ts$)/],
  ['the gateway', /^agent\/gateway\/(?!(config|limits)\.ts$)/],
  ['the relay\'s certificate code', /(^|\/)node_modules\/(selfsigned|@peculiar)\//],
  ['ioredis', /(^|\/)node_modules\/ioredis\//],
];

function loadedChunks(output: string): string[] {
  return [...output.matchAll(/diode: loading chunk (\S+)/g)].map((m) => m[1]);
}

function forbiddenIn(chunks: string[]): string[] {
  const found = new Set<string>();
  for (const chunk of chunks) {
    for (const input of INPUTS[chunk] ?? []) for (const [what, re] of FORBIDDEN) if (re.test(input)) found.add(`${what} (${input} in ${chunk})`);
  }
  return [...found];
}

async function echoServer(t: Parameters<typeof tempDir>[0]): Promise<number> {
  const server = createServer((s) => s.pipe(s));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  return (server.address() as AddressInfo).port;
}

/** One round trip through a local TCP port (bind) or a SOCKS5 proxy (socksd). */
async function roundTrip(port: number, socksTarget?: { host: string; port: number }): Promise<string> {
  const socket = connect({ host: '127.0.0.1', port });
  await once(socket, 'connect');
  if (socksTarget) {
    const name = Buffer.from(socksTarget.host);
    socket.write(Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0, 3, name.length]), name, Buffer.from([socksTarget.port >> 8, socksTarget.port & 0xff])]));
    let got = Buffer.alloc(0);
    while (got.length < 12) got = Buffer.concat([got, (await once(socket, 'data'))[0] as Buffer]);
  }
  socket.write('ping');
  const [reply] = await once(socket, 'data');
  socket.destroy();
  return String(reply);
}

async function published(t: Parameters<typeof tempDir>[0], relayPort: number, flags: string[], home = tempDir(t)): Promise<{ proc: Running; address: string }> {
  const proc = start(t, ['publish', ...flags, '--relay', `127.0.0.1:${relayPort}`, '--home', home], { env: TRACE });
  const address = (await proc.waitFor(/ as (0x[0-9a-fA-F]{40})/))[1];
  await proc.waitFor(/connected to relay/);
  return { proc, address };
}

test('publish, socksd, proxy and bind load neither ethers, the fleet admin, the relay nor the gateway, also while a stream goes through', async (t) => {
  const relay = await startRelay(t);
  const echo = await echoServer(t);
  const device = await published(t, relay.port, ['-public', `${echo}:7`]);
  const target = `${device.address.toLowerCase()}.diode`;

  const socksd = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relay.port}`, '--home', tempDir(t)], { env: TRACE });
  const socksPort = Number((await socksd.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  await socksd.waitFor(/connected to relay/);
  t.is(await roundTrip(socksPort, { host: target, port: 7 }), 'ping');

  const bindPort = await freePort();
  const bind = start(t, ['bind', `${bindPort}:${target}:7`, '--relay', `127.0.0.1:${relay.port}`, '--home', tempDir(t)], { env: TRACE });
  await bind.waitFor(/127\.0\.0\.1:\d+/);
  t.is(await roundTrip(bindPort), 'ping');

  const proxyErr = await proxyPing(t, [target, '7', '--relay', `127.0.0.1:${relay.port}`, '--home', tempDir(t)]);

  const runs: Array<[string, string]> = [['publish', device.proc.output()], ['socksd', socksd.output()], ['bind', bind.output()], ['proxy', proxyErr]];
  for (const [name, output] of runs) {
    const chunks = loadedChunks(output);
    t.true(chunks.length > 0, `${name} reports the chunks it loads`);
    t.deepEqual(forbiddenIn(chunks), [], `${name} loaded what it does not use`);
  }
});

test('a -protected port loads the fleet client, with ethers (the check above can see a load)', async (t) => {
  const relay = await startRelay(t);
  const home = tempDir(t);
  const config = start(t, ['config', '-set', 'fleet=0x1111111111111111111111111111111111111111', '-set', `rpc=http://127.0.0.1:${await freePort()}`, '--home', home]);
  t.is(await config.exited(), 0);
  const device = await published(t, relay.port, ['-protected', '22'], home);
  t.true(forbiddenIn(loadedChunks(device.proc.output())).some((f) => f.startsWith('ethers')));
});

/** What `diode proxy` leaves to a running socksd of its home: the relay link, TLS, the mux, the key and its curve, the config. */
const LEFT_TO_THE_AGENT: ReadonlyArray<[string, RegExp]> = [
  ['the relay link', /^agent\/link\//],
  ['the end-to-end layer', /^agent\/e2e\//],
  ['the mux', /^agent\/mux\//],
  ['the key', /^agent\/identity\/(identity|keyfile|checksum|address)\.ts$/],
  ['keccak', /(^|\/)node_modules\/@noble\//],
  ['the config', /^agent\/config\//],
  ['the dial', /^agent\/client\/(dial|session|lookup|proxy-session)\.ts$/],
];

test('diode proxy through a running socksd of its home loads none of the relay session\'s code: no link, TLS, mux, key or config', async (t) => {
  const relay = await startRelay(t);
  const echo = await echoServer(t);
  const device = await published(t, relay.port, ['-public', `${echo}:7`]);
  const home = tempDir(t);
  const socksd = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relay.port}`, '--home', home]);
  await socksd.waitFor(/connected to relay/);
  const proxyErr = await proxyPing(t, [`${device.address.toLowerCase()}.diode`, '7', '--relay', `127.0.0.1:${relay.port}`, '--home', home]);
  const inputs = loadedChunks(proxyErr).flatMap((c) => INPUTS[c] ?? []);
  t.true(inputs.includes('agent/client/agent-stream.ts'), proxyErr);
  const found = inputs.flatMap((input) => LEFT_TO_THE_AGENT.filter(([, re]) => re.test(input)).map(([what]) => `${what} (${input})`));
  t.deepEqual(found, []);
  t.deepEqual(forbiddenIn(loadedChunks(proxyErr)), []);
});

/** `diode proxy ARGS` with the chunk trace on: 'ping' through it must come back; returns its stderr (the trace). */
async function proxyPing(t: ExecutionContext, args: string[]): Promise<string> {
  const proxy = spawn(process.execPath, [DIODE_BUNDLE, 'proxy', ...args], { env: { ...process.env, ...TRACE } });
  t.teardown(() => proxy.kill('SIGKILL'));
  let err = '';
  proxy.stderr.on('data', (b: Buffer) => (err += b));
  proxy.stdin.write('ping');
  const [echoed] = await once(proxy.stdout, 'data');
  t.is(String(echoed), 'ping');
  proxy.stdin.end();
  await once(proxy, 'close');
  return err;
}
