import test from 'ava';
import { Identity } from '../agent/identity/index.ts';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { TLSSocket, connect, createSecureContext } from 'node:tls';
import { tls13Ciphers } from '../agent/link/dial-relay.ts';
import { e2eCipherOptions } from '../agent/e2e/cert.ts';
import { loadOrCreateRelayCert } from '../agent/relay/cert.ts';

test('an ARM CPU without the aes feature (Pi up to 4) offers ChaCha20-Poly1305 first', (t) => {
  const pi4 = 'processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n';
  t.regex(tls13Ciphers(pi4) ?? '', /^TLS_CHACHA20_POLY1305_SHA256:/);
});

test('a CPU with AES instructions keeps Node default order', (t) => {
  t.is(tls13Ciphers('flags\t\t: fpu vme sse2 aes avx2\n'), undefined);
  t.is(tls13Ciphers('Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n'), undefined);
});

test('unknown or unreadable cpuinfo keeps Node default order', (t) => {
  t.is(tls13Ciphers(''), undefined);
  t.is(tls13Ciphers('nothing useful\n'), undefined);
});

/** The suite a client and a device of the given CPUs agree on with the end-to-end contexts' options. */
async function negotiated(clientCpu: string, deviceCpu: string): Promise<string> {
  // Any certificate does for the suite choice: the relay's self-signed kind.
  const pair = await loadOrCreateRelayCert(mkdtempSync(join(tmpdir(), 'diode-ciphers-')), Identity.random());
  const device = e2eCipherOptions(tls13Ciphers(deviceCpu)).server;
  const client = e2eCipherOptions(tls13Ciphers(clientCpu)).client;
  let a!: Duplex, b!: Duplex;
  const mk = (peer: () => Duplex) => new Duplex({ write(c, _e, cb) { peer().push(c); cb(); }, read() {} });
  a = mk(() => b);
  b = mk(() => a);
  const server = new TLSSocket(b, { isServer: true, secureContext: createSecureContext({ key: pair.key, cert: pair.cert, minVersion: 'TLSv1.3', ...device }) });
  const socket = connect({ socket: a, rejectUnauthorized: false, secureContext: createSecureContext({ minVersion: 'TLSv1.3', ...client }) });
  await new Promise((resolve) => socket.once('secureConnect', resolve));
  const name = socket.getCipher().standardName;
  socket.destroy();
  server.destroy();
  return name;
}

const PI4 = 'Features\t: fp asimd evtstrm crc32 cpuid\n';
const X86 = 'flags\t\t: fpu vme sse2 aes avx2\n';

test('end-to-end layer: ChaCha20-Poly1305 when either end lacks AES instructions, OpenSSL default between two with AES', async (t) => {
  t.is(await negotiated(PI4, X86), 'TLS_CHACHA20_POLY1305_SHA256', 'a Pi client, a device with AES');
  t.is(await negotiated(X86, PI4), 'TLS_CHACHA20_POLY1305_SHA256', 'a client with AES, a Pi device');
  t.is(await negotiated(PI4, PI4), 'TLS_CHACHA20_POLY1305_SHA256');
  t.is(await negotiated(X86, X86), 'TLS_AES_256_GCM_SHA384');
});
