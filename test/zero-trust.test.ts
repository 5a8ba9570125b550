import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { connect as netConnect, createServer } from 'node:net';
import { TLSSocket, connect as tlsConnect, createSecureContext } from 'node:tls';
import { secp256k1 } from '@noble/curves/secp256k1';
import { Identity, authMessage, verifyAuth } from '../agent/identity/index.ts';
import { loadOrCreateRelayCert } from '../agent/relay/cert.ts';
import { startRelay } from '../agent/relay/listen.ts';
import { exchangeHello, EKM_LABEL, EKM_LENGTH } from '../agent/protocol/handshake.ts';
import { encodeFrame, readFrame, writeFrame } from '../agent/protocol/frames.ts';
import { dialRelay } from '../agent/link/dial-relay.ts';
import { MuxSession, type MuxStream } from '../agent/mux/index.ts';
import { silentLogger } from '../agent/util/log.ts';
import { start, tempDir } from './helpers/diode.ts';
import { listenTlsRelay } from './helpers/hostile-relay.ts';

/**
 * A relay that authenticates properly (its own fresh key) but answers every
 * `connect` with a bare `{"t":"ok"}`, as if the device had taken a plain
 * stream, and records whatever the client sends after that.
 */
async function bareOkRelay(t: ExecutionContext): Promise<{ port: number; address: string; received: () => Buffer[]; connects: () => number }> {
  const identity = Identity.random();
  /** Per connect stream: what the client sent after the connect. */
  const streams: Buffer[][] = [];
  let connects = 0;
  const port = await listenTlsRelay(t, identity, (tls) => {
    exchangeHello(tls, identity, 'relay', 5000).then(() => {
      const mux = new MuxSession(tls, { role: 'server' });
      mux.on('stream', (stream: MuxStream) => {
        stream.on('error', () => {});
        readFrame(stream, 4096, 5000).then((header) => {
          if (header.t !== 'connect') return;
          connects++;
          writeFrame(stream, { t: 'ok' });
          const chunks: Buffer[] = [];
          streams.push(chunks);
          stream.on('data', (c: Buffer) => chunks.push(c));
        }, () => {});
      });
    }, () => tls.destroy());
  });
  return { port, address: identity.address, received: () => streams.map((c) => Buffer.concat(c)), connects: () => connects };
}

/** SOCKS5 CONNECT, then (if granted) the secret; resolves with the reply code. */
function socksConnectAndSend(socksPort: number, host: string, port: number, secret: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = netConnect(socksPort, '127.0.0.1');
    s.on('error', () => {});
    const name = Buffer.from(host);
    const p = Buffer.alloc(2);
    p.writeUInt16BE(port);
    s.write(Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0, 3, name.length]), name, p]));
    let buf = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= 4) {
        const rep = buf[3];
        if (rep === 0) s.write(secret);
        setTimeout(() => {
          s.destroy();
          resolve(rep);
        }, 300);
      }
    });
    s.once('close', () => (buf.length < 4 ? reject(new Error('closed before the SOCKS reply')) : undefined));
  });
}

const DEVICE = '0x63115a27c3d1b549011198c69f4120ca4ea12ee9';

/**
 * What a relay may see of a client that asked for the end-to-end layer:
 * nothing, or the TLS ClientHello the client sends right behind its
 * connect (one handshake record holding a ClientHello: random, key share,
 * cipher list; its certificate and hello only follow inside TLS). Returns
 * why not, or undefined.
 */
function notJustClientHello(bytes: Buffer): string | undefined {
  if (bytes.length === 0) return undefined;
  if (bytes.length < 9 || bytes[0] !== 0x16 || bytes[1] !== 0x03) return 'not a TLS handshake record';
  if (bytes.length !== 5 + bytes.readUInt16BE(3)) return `${bytes.length} bytes: more than one TLS record`;
  if (bytes[5] !== 0x01) return `handshake message ${bytes[5]}, not a ClientHello`;
  return undefined;
}

test('a relay answering connect with a bare ok gets no plaintext: socksd answers 0x01 naming the relay, diode proxy exits 1', async (t) => {
  const relay = await bareOkRelay(t);
  const home = tempDir(t);
  const socksd = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relay.port}`, '--home', home]);
  const m = await socksd.waitFor(/listening on 127\.0\.0\.1:(\d+)/);
  await socksd.waitFor(/connected to relay/);
  const rep = await socksConnectAndSend(Number(m[1]), `${DEVICE}.diode`, 22, 'Authorization: Basic c2VjcmV0');
  t.is(rep, 0x01, 'SOCKS5 general failure');
  t.is(relay.connects(), 1);
  await new Promise((r) => setTimeout(r, 200));
  for (const bytes of relay.received()) {
    t.is(notJustClientHello(bytes), undefined, `the relay received ${JSON.stringify(bytes.toString('latin1'))}`);
    t.false(bytes.includes('Authorization'));
  }
  const line = await socksd.waitFor(new RegExp(`relay ${relay.address} at 127\\.0\\.0\\.1:${relay.port} answered the connect to ${DEVICE}:22 without the end-to-end layer`, 'i'));
  t.truthy(line);

  // diode proxy: one line, exit 1, nothing of stdin reaches the relay.
  const proxy = start(t, ['proxy', `${DEVICE}.diode`, '22', '--relay', `127.0.0.1:${relay.port}`, '--home', home]);
  const code = await proxy.exited();
  t.is(code, 1);
  const lines = proxy.output().trim().split('\n');
  t.is(lines.length, 1, proxy.output());
  t.regex(lines[0], new RegExp(`relay ${relay.address}.*without the end-to-end layer`, 'i'));
  t.is(relay.received().length, 2);
  for (const bytes of relay.received()) t.is(notJustClientHello(bytes), undefined, `the relay received ${JSON.stringify(bytes.toString('latin1'))}`);
});

for (const v of [2, 3]) {
  test(`a hello of protocol version ${v} is answered with a readable one-line reason before the close`, async (t) => {
    const relay = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, home: tempDir(t), identity: Identity.random(), log: silentLogger });
    t.teardown(() => relay.close());
    const me = Identity.random();
    const socket = await new Promise<TLSSocket>((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port: relay.port, rejectUnauthorized: false, minVersion: 'TLSv1.3' }, () => resolve(s));
      s.once('error', reject);
    });
    t.teardown(() => socket.destroy());
    const ekm = socket.exportKeyingMaterial(EKM_LENGTH, EKM_LABEL, Buffer.alloc(0));
    socket.write(encodeFrame({ t: 'hello', v, role: 'agent', ...me.signAuth('agent', ekm) }));
    const hello = await readFrame(socket, 1024, 5000);
    t.is(hello.t, 'hello');
    t.is(hello.v, 4);
    const reason = await readFrame(socket, 1024, 5000);
    t.is(reason.t, 'error');
    t.is(reason.code, 'bad-request');
    t.is(reason.message, `hello refused: unsupported protocol version ${v}: this side speaks version 4 only; upgrade the older of the two`);
    await new Promise((resolve) => socket.once('close', resolve));
    t.is(relay.server.stats.get('hello_rejected'), 1);
  });
}

test('an agent whose hello the relay refuses reports the relay\'s reason', async (t) => {
  // A relay that refuses every agent's signature (it checks against other keying material).
  const relayId = Identity.random();
  const cert = await loadOrCreateRelayCert(tempDir(t), relayId);
  const context = createSecureContext({ key: cert.key, cert: cert.cert, minVersion: 'TLSv1.3' });
  const server = createServer((raw) => {
    raw.on('error', () => {});
    const tls = new TLSSocket(raw, { isServer: true, secureContext: context });
    tls.on('error', () => {});
    tls.once('secure', () => {
      const ekm = tls.exportKeyingMaterial(EKM_LENGTH, EKM_LABEL, Buffer.alloc(0));
      tls.write(encodeFrame({ t: 'hello', v: 4, role: 'relay', ...relayId.signAuth('relay', ekm) }));
      tls.write(encodeFrame({ t: 'error', code: 'bad-request', message: 'hello refused: hello signature does not verify for this TLS session' }));
      tls.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const err = await t.throwsAsync(dialRelay({ host: '127.0.0.1', port: (server.address() as { port: number }).port }, Identity.random()));
  t.regex(err!.message, /the peer refused our hello: hello refused: hello signature does not verify/);
});

test('hello keys and signatures: upper-case hex is accepted, and so is a high-S signature', (t) => {
  const id = Identity.random();
  const ekm = randomBytes(32);
  const proof = id.signAuth('agent', ekm);
  // Upper-case hex digits (the 0x prefix stays lower case).
  t.is(verifyAuth('agent', ekm, { pub: `0x${proof.pub.slice(2).toUpperCase()}`, sig: `0x${proof.sig.slice(2).toUpperCase()}` }), id.address);
  // Both S forms of one signature verify: (r, s) and (r, n - s).
  const digest = createHash('sha256').update(authMessage('agent', ekm)).digest();
  const low = secp256k1.sign(digest, id.privateKey.slice(2), { lowS: true });
  const high = new secp256k1.Signature(low.r, secp256k1.CURVE.n - low.s);
  t.true(high.hasHighS());
  t.is(verifyAuth('agent', ekm, { pub: proof.pub, sig: `0x${low.toCompactHex()}` }), id.address);
  t.is(verifyAuth('agent', ekm, { pub: proof.pub, sig: `0x${high.toCompactHex()}` }), id.address);
  // The signed text names the ekm in lower-case hex: a signer that upper-cases it proves nothing.
  const upperText = authMessage('agent', ekm).replace(/0x([0-9a-f]+)$/, (_, hex: string) => `0x${hex.toUpperCase()}`);
  const wrong = secp256k1.sign(createHash('sha256').update(upperText).digest(), id.privateKey.slice(2));
  t.throws(() => verifyAuth('agent', ekm, { pub: proof.pub, sig: `0x${wrong.toCompactHex()}` }), { message: /does not verify/ });
});
