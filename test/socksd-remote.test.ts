// Issue 24 item 8: socksd --allow-remote --fallback direct does not open this machine's loopback to other machines.
import test from 'ava';
import { createServer, type AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { forbiddenForRemote } from '../agent/client/socks-connector.ts';
import { start, startRelay, tempDir } from './helpers/diode.ts';
import { socks5Connect } from './helpers/http.ts';

const NOT_ALLOWED = 0x02;

/** This machine's first address that is not loopback (the one other machines reach it on). */
function outsideAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (!a.internal && a.family === 'IPv4') return a.address;
  return undefined;
}

test('a direct fallback for another machine refuses loopback, unspecified, link-local and own addresses', (t) => {
  const own = new Set(['192.0.2.2', 'fd00:0:0:0:0:0:0:2']);
  for (const ip of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1', '0.0.0.0', '::', '169.254.169.254', 'fe80::1', '192.0.2.2', 'fd00::2']) t.truthy(forbiddenForRemote(ip, own), ip);
  for (const ip of ['93.184.216.34', '10.0.0.7', '2001:db8::1', '192.0.2.3']) t.is(forbiddenForRemote(ip, own), undefined, ip);
});

test('a client on another machine cannot reach this machine\'s loopback services through socksd --allow-remote --fallback direct', async (t) => {
  const outside = outsideAddress();
  if (!outside) return t.pass('this machine has no address but loopback: nothing to tell apart');
  // A service that listens on loopback only (a database, an admin page), and one on the outside address.
  const secret = createServer((s) => s.end('loopback secret\n'));
  await new Promise<void>((r) => secret.listen(0, '127.0.0.1', r));
  t.teardown(() => secret.close());
  const own = createServer((s) => s.end('own address\n'));
  await new Promise<void>((r) => own.listen(0, outside, r));
  t.teardown(() => own.close());
  const relay = await startRelay(t);
  const socksd = start(t, ['socksd', '--listen', '0.0.0.0:0', '--allow-remote', '--fallback', 'direct', '--relay', `127.0.0.1:${relay.port}`, '--home', tempDir(t)]);
  const port = Number((await socksd.waitFor(/listening on 0\.0\.0\.0:(\d+)/))[1]);
  const secretPort = (secret.address() as AddressInfo).port;
  const ownPort = (own.address() as AddressInfo).port;
  // From "another machine": the client's connection comes from this machine's outside address.
  for (const [host, targetPort] of [['127.0.0.1', secretPort], ['localhost', secretPort], ['0.0.0.0', secretPort], [outside, ownPort]] as const) {
    const reply = await socks5FromOutside(port, outside, host, targetPort);
    t.is(reply, NOT_ALLOWED, `${host}:${targetPort} from ${outside}`);
  }
  await socksd.waitFor(/this machine's loopback, which socksd --allow-remote --fallback direct keeps from clients on other machines/);
  // A client on this very machine still gets them (its own loopback).
  const local = await socks5Connect(port, '127.0.0.1', secretPort);
  t.is(local.rep, 0);
  const text = await new Promise<string>((resolve) => {
    let got = '';
    local.socket.on('data', (b: Buffer) => (got += b.toString())).on('end', () => resolve(got)).resume();
  });
  t.is(text, 'loopback secret\n');
});

/** A SOCKS5 CONNECT by name or IP to socksd at `outside`:`port`, from `outside`; the reply code. */
async function socks5FromOutside(port: number, outside: string, host: string, targetPort: number): Promise<number> {
  const { connect } = await import('node:net');
  return new Promise((resolve, reject) => {
    const socket = connect({ host: outside, port, localAddress: outside });
    let buf = Buffer.alloc(0);
    socket.on('error', reject);
    socket.on('connect', () => {
      const name = Buffer.from(host);
      socket.write(Buffer.concat([Buffer.from([5, 1, 0]), Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([targetPort >> 8, targetPort & 0xff])]));
    });
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length >= 12) {
        socket.destroy();
        resolve(buf[3]);
      }
    });
    socket.on('close', () => reject(new Error(`socksd closed after ${buf.length} bytes`)));
  });
}
