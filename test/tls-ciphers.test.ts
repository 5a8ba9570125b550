import test from 'ava';
import { tls13Ciphers } from '../agent/link/dial-relay.ts';

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
