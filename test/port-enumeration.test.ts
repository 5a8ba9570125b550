// Issue 24 item 7: a caller who may not use a port learns nothing about it. The relay and the
// device answer it exactly as for a port the device does not publish.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Identity } from '../agent/identity/index.ts';
import { startRelay } from '../agent/relay/listen.ts';
import { RelayLink } from '../agent/link/relay-link.ts';
import { IncomingHandler } from '../agent/device/incoming.ts';
import { dialThroughRelay, DialError } from '../agent/client/dial.ts';
import type { PortMapping } from '../agent/device/port-spec.ts';
import { silentLogger } from '../agent/util/log.ts';
import { startPublish, startRelay as startRelayProcess, tempDir } from './helpers/diode.ts';
import { socks5Connect } from './helpers/http.ts';

const run = promisify(execFile);

/** Where the answers differ only by the port they name. */
const samePortless = (text: string, port: number) => text.replaceAll(`port ${port}`, 'port N');

/** A device on its own relay link publishing `mappings`; the protected ports admit `member` only. */
async function device(t: ExecutionContext, relayPort: number, mappings: PortMapping[], member?: string) {
  const identity = Identity.random();
  const handler = new IncomingHandler(mappings, silentLogger, { identity, check: (m, client) => (m.mode === 'protected' ? client === member : m.mode === 'public' || m.allow.includes(client)) });
  const link = new RelayLink({
    relays: [{ host: '127.0.0.1', port: relayPort }],
    identity,
    log: silentLogger,
    publish: mappings.map((m) => ({ port: m.remotePort, mode: m.mode, ...(m.mode === 'private' ? { allow: m.allow } : {}) })),
    onStream: (s) => handler.handle(s),
  });
  t.teardown(() => link.stop());
  link.start();
  await link.waitForSession(10_000);
  return identity.address;
}

/** What a client with a key of its own hears when it dials `to`:`port`. */
async function dialAnswer(t: ExecutionContext, relayPort: number, to: string, port: number): Promise<string> {
  const identity = Identity.random();
  const link = new RelayLink({ relays: [{ host: '127.0.0.1', port: relayPort }], identity, log: silentLogger });
  t.teardown(() => link.stop());
  link.start();
  try {
    const socket = await dialThroughRelay(link, identity, to, port);
    socket.destroy();
    return 'ok';
  } catch (err) {
    if (!(err instanceof DialError)) throw err;
    return `${err.reply}: ${samePortless(err.message, port)}`;
  }
}

const local = (remotePort: number, mode: PortMapping['mode'], allow: string[] = []): PortMapping => ({ host: '127.0.0.1', localPort: 9, remotePort, mode, allow });

test('an agent not on a private port\'s list, or outside a protected port\'s fleet, cannot tell the port from an unpublished one', async (t) => {
  const relay = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, home: tempDir(t), identity: Identity.random(), log: silentLogger });
  t.teardown(() => relay.close());
  const someoneElse = Identity.random().address;
  // A device with a protected port: it answers for all its ports the caller may not use, inside the end-to-end layer.
  const withFleet = await device(t, relay.port, [local(8, 'private', [someoneElse]), local(9, 'protected')], someoneElse);
  const [priv, prot, none] = [await dialAnswer(t, relay.port, withFleet, 8), await dialAnswer(t, relay.port, withFleet, 9), await dialAnswer(t, relay.port, withFleet, 10)];
  t.log({ priv, prot, none });
  t.regex(none, /^no-such-port: /);
  t.is(priv, none);
  t.is(prot, none);
  // A device without one: the relay answers both itself, the same way.
  const plain = await device(t, relay.port, [local(8, 'private', [someoneElse])]);
  const [priv2, none2] = [await dialAnswer(t, relay.port, plain, 8), await dialAnswer(t, relay.port, plain, 10)];
  t.regex(none2, /^no-such-port: /);
  t.is(priv2, none2);
});

test('a gateway caller cannot tell a private port from an unpublished one (SOCKS reply, HTTP status and page)', async (t) => {
  const relay = await startRelayProcess(t, ['--gateway-socks', '127.0.0.1:0', '--gateway-http', '127.0.0.1:0', '--gateway-domain', 'gw.example.test']);
  const socks = Number((await relay.proc.waitFor(/gateway socks listening on 127\.0\.0\.1:(\d+)/))[1]);
  const http = Number((await relay.proc.waitFor(/gateway http listening on 127\.0\.0\.1:(\d+)/))[1]);
  const pub = await startPublish(t, relay.port, ['-private', `9:81,${Identity.random().address}`]);
  const address = pub.address.toLowerCase();
  const reps = [];
  for (const port of [81, 82]) {
    const reply = await socks5Connect(socks, `${address}.diode`, port);
    reply.socket.destroy();
    reps.push(reply.rep);
  }
  t.is(reps[0], reps[1], `SOCKS replies ${reps.join(' / ')}`);
  const page = async (port: number) => {
    const { stdout } = await run('curl', ['-sS', '-w', '\n%{http_code}', '--connect-to', `::127.0.0.1:${http}`, `http://${address}-${port}.gw.example.test/`], { timeout: 30_000 });
    return samePortless(stdout, port);
  };
  const [priv, none] = [await page(81), await page(82)];
  t.regex(none, /502$/);
  t.is(priv, none);
});
