// Issue 27 item 8: an independent implementation of version 3 found that a
// device refusing a client's end-to-end hello reset the stream right behind
// its bad-request verdict, so the verdict never reached the client. It must
// close in order (close_notify and FIN), as docs/PROTOCOL.md says: on the
// relay link and on a data connection alike.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { e2eCredentials } from '../agent/e2e/cert.ts';
import { readFrame, writeFrame } from '../agent/protocol/frames.ts';
import { requestStream, requestStreamAhead } from '../agent/protocol/request.ts';
import { PROTOCOL_VERSION } from '../agent/protocol/messages.ts';
import type { MuxStream } from '../agent/mux/index.ts';
import { clientHere, deviceHere, echoServer, poolReady, relayHere } from './helpers/agents.ts';

/** A client's end-to-end TLS over `under`, then a hello whose signature proves nothing (signed over another certificate's hash). */
async function badHelloClient(under: Duplex, signer: { signAuth: (role: 'client', bytes: Uint8Array, purpose: 'diode-e2e') => { pub: string; sig: string } }): Promise<TLSSocket> {
  const socket = tlsConnect({ socket: under, secureContext: e2eCredentials().client, rejectUnauthorized: false });
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
  writeFrame(socket, { t: 'hello', v: PROTOCOL_VERSION, role: 'client', ...signer.signAuth('client', randomBytes(32), 'diode-e2e') });
  return socket;
}

for (const leg of ['the relay link', 'a data connection'] as const) {
  test(`a device that refuses a client's end-to-end hello gets its bad-request verdict to the client on ${leg}`, async (t) => {
    const relay = await relayHere(t);
    const echo = await echoServer(t);
    const pool = leg === 'a data connection' ? 2 : 0;
    const device = await deviceHere(t, relay.port, { localPort: echo.port, dataPool: pool });
    const client = await clientHere(t, relay.port, pool);
    const session = await client.link.waitForSession(5000);
    const stream: MuxStream = session.open();
    stream.on('error', () => {});
    let under: Duplex = stream;
    const header = { t: 'connect', to: device.identity.address, port: 22, e2e: true };
    if (leg === 'a data connection') {
      t.true(await poolReady(client.link, 2));
      t.true(await poolReady(device.link, 2));
      const conn = client.link.dataPool!.take()!;
      under = conn.socket;
      await requestStream(stream, { ...header, data: conn.token });
    } else {
      await requestStreamAhead(stream, header);
    }
    const socket = await badHelloClient(under, client.identity);
    const hello = await readFrame(socket, 1024, 5000);
    t.is(hello.t, 'hello');
    t.is(hello.role, 'device');
    const verdict = await readFrame(socket, 4096, 5000);
    t.is(verdict.t, 'error');
    t.is(verdict.code, 'bad-request');
    t.regex(String(verdict.message), /^end-to-end hello refused: peer hello does not prove its key for this TLS session/);
    // Then the device's close_notify and FIN: an orderly end, no reset.
    const ended = await new Promise<string>((resolve) => {
      socket.once('end', () => resolve('end'));
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      socket.resume();
    });
    t.is(ended, 'end');
    t.is(relay.server.stats.get(`stream_legs_${leg === 'a data connection' ? 'data_data' : 'link_link'}`), 1);
  });
}

test('a client that presents no TLS certificate completes TLS and gets the bad-request verdict, in order', async (t) => {
  const relay = await relayHere(t);
  const echo = await echoServer(t);
  const device = await deviceHere(t, relay.port, { localPort: echo.port, dataPool: 0 });
  const client = await clientHere(t, relay.port, 0);
  const stream = (await client.link.waitForSession(5000)).open();
  stream.on('error', () => {});
  await requestStreamAhead(stream, { t: 'connect', to: device.identity.address, port: 22, e2e: true });
  const socket = tlsConnect({ socket: stream, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
  writeFrame(socket, { t: 'hello', v: PROTOCOL_VERSION, role: 'client', ...client.identity.signAuth('client', randomBytes(32), 'diode-e2e') });
  t.is((await readFrame(socket, 1024, 5000)).role, 'device');
  const verdict = await readFrame(socket, 4096, 5000);
  t.like(verdict, { t: 'error', code: 'bad-request', message: 'end-to-end hello refused: peer presented no TLS certificate' });
});
