// The self-signed certificates (agent/tls/self-signed.ts) of the end-to-end layer and the relay: OpenSSL must accept
// every one we make, whatever the random serial, or that process can reach no device.
import test from 'ava';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { certSerial, selfSignedEd25519 } from '../agent/tls/self-signed.ts';

const OPTIONS = { commonName: 'diode-e2e', validDays: 3650 };

const { publicKey, privateKey } = generateKeyPairSync('ed25519');

test('a serial whose random bytes start with 00 0x still gives a certificate OpenSSL parses (was: ERR_OSSL_ASN1_ILLEGAL_PADDING, 1 process in 256)', (t) => {
  for (const first of [0x00, 0x80, 0x7f, 0xff]) {
    const random = Buffer.from([first, 0x01, 2, 3, 4, 5, 6, 7]);
    const cert = new X509Certificate(selfSignedEd25519(publicKey, privateKey, { ...OPTIONS, serial: certSerial(random) }));
    t.true(cert.verify(cert.publicKey), `serial from ${random.toString('hex')}`);
    t.regex(cert.serialNumber, /^[4-7][0-9A-F]{15}$/i, 'positive, minimal, 8 bytes');
  }
});

test('2,000 certificates with random serials all parse and verify', (t) => {
  for (let i = 0; i < 2000; i++) {
    const der = selfSignedEd25519(publicKey, privateKey, OPTIONS);
    t.notThrows(() => new X509Certificate(der), `certificate ${i}: ${der.toString('hex').slice(0, 40)}…`);
  }
});
