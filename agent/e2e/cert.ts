import { constants, createHash, generateKeyPairSync, randomBytes, sign, type KeyObject, type X509Certificate } from 'node:crypto';
import { createSecureContext, DEFAULT_CIPHERS, type SecureContext, type SecureContextOptions } from 'node:tls';
import { tls13Ciphers } from '../link/dial-relay.ts';

/**
 * The end-to-end layer's TLS credentials: one ephemeral Ed25519 key and a
 * self-signed certificate for it, made once per process in memory (≈ 0.1 ms:
 * the DER is built here, no x509 library is loaded) and never stored. Both
 * ends present theirs (mutual TLS 1.3), so each TLS handshake proves, with a
 * cheap Ed25519 signature over the transcript, possession of the key of the
 * certificate whose hash the peer's hello binds to its secp256k1 identity
 * (see channel.ts).
 */

/** days: a certificate outlives any process that holds it in memory. */
const CERT_VALID_DAYS = 3650;
/** ms backdating of notBefore, for a peer whose clock is a little behind. */
const CLOCK_SKEW_MS = 86_400_000;

export interface E2ECredentials {
  /** TLS server context (device side): our certificate, a client certificate requested. */
  server: SecureContext;
  /** TLS client context (client side): the same certificate. */
  client: SecureContext;
  /** sha256 of our certificate (DER): what our hello signs. */
  certHash: Buffer;
}

let credentials: E2ECredentials | undefined;

/** This process's end-to-end credentials (made on first use). */
export function e2eCredentials(): E2ECredentials {
  if (credentials) return credentials;
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const der = selfSignedEd25519(publicKey, privateKey);
  const cert = pemOf(der, 'CERTIFICATE');
  const key = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const common = { key, cert, minVersion: 'TLSv1.3' as const };
  const ciphers = e2eCipherOptions(tls13Ciphers());
  credentials = {
    server: createSecureContext({ ...common, ...ciphers.server }),
    client: createSecureContext({ ...common, ...ciphers.client }),
    certHash: createHash('sha256').update(der).digest(),
  };
  return credentials;
}

/**
 * Cipher and ticket options of the two contexts, for this machine's suite
 * order (tls13Ciphers: ChaCha20-Poly1305 first without AES instructions,
 * undefined = OpenSSL's default). ChaCha20 whenever either end lacks AES
 * instructions (a Raspberry Pi up to the Pi 4 does AES-GCM in software,
 * several times slower): the client offers its own order, the device picks
 * by its own order but takes ChaCha20 when the client lists it first
 * (SSL_OP_PRIORITIZE_CHACHA). Two machines with AES keep OpenSSL's default.
 * No session tickets: nobody resumes these sessions, and a TLS 1.3 ticket is
 * the whole session (the client's certificate included) encoded and
 * encrypted twice per stream (≈ 15 % of the handshake's CPU, 800 bytes on
 * the wire); with SSL_OP_NO_TICKET OpenSSL sends only short session ids,
 * which no cache keeps.
 */
export function e2eCipherOptions(suites: string | undefined): { server: SecureContextOptions; client: SecureContextOptions } {
  return {
    server: { ciphers: suites ?? DEFAULT_CIPHERS, honorCipherOrder: true, secureOptions: constants.SSL_OP_NO_TICKET | constants.SSL_OP_PRIORITIZE_CHACHA },
    client: suites ? { ciphers: suites } : {},
  };
}

/** sha256 of a peer's certificate (DER), as its hello signs it. */
export function certHash(cert: X509Certificate): Buffer {
  return createHash('sha256').update(cert.raw).digest();
}

// --- a minimal DER encoder, just enough for one self-signed X.509 v3 certificate ---

function der(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const length = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), length, body]);
}

const SEQUENCE = 0x30;
const SET = 0x31;
/** 1.3.101.112, id-Ed25519 (RFC 8410): the algorithm identifier has no parameters. */
const ED25519 = der(SEQUENCE, Buffer.from([0x06, 0x03, 0x2b, 0x65, 0x70]));
/** 2.5.4.3, commonName. */
const CN_OID = Buffer.from([0x06, 0x03, 0x55, 0x04, 0x03]);

function utcTime(ms: number): Buffer {
  // UTCTime YYMMDDHHMMSSZ (valid through 2049, which CERT_VALID_DAYS keeps us inside).
  const text = new Date(ms).toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
  return der(0x17, Buffer.from(text, 'ascii'));
}

/**
 * A certificate serial as DER wants it: positive (top bit clear) and minimal
 * (no leading zero byte). Clearing only the top bit left 1 process in 256
 * with a serial starting 00 0x, which OpenSSL refuses as "illegal padding":
 * every end-to-end stream of that process failed.
 */
export function certSerial(random: Buffer = randomBytes(8)): Buffer {
  const serial = Buffer.from(random);
  serial[0] = (serial[0] & 0x7f) | 0x40;
  return serial;
}

/** @internal Exported for tests: the DER of a self-signed certificate for an Ed25519 key. */
export function selfSignedEd25519(publicKey: KeyObject, privateKey: KeyObject, serial: Buffer = certSerial()): Buffer {
  const name = der(SEQUENCE, der(SET, der(SEQUENCE, CN_OID, der(0x0c, Buffer.from('diode-e2e')))));
  const now = Date.now();
  const tbs = der(
    SEQUENCE,
    der(0xa0, der(0x02, Buffer.from([2]))), // version v3
    der(0x02, serial),
    ED25519,
    name,
    der(SEQUENCE, utcTime(now - CLOCK_SKEW_MS), utcTime(now + CERT_VALID_DAYS * 86_400_000)),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
  );
  const signature = sign(null, tbs, privateKey);
  return der(SEQUENCE, tbs, ED25519, der(0x03, Buffer.from([0]), signature));
}

function pemOf(body: Buffer, label: string): string {
  const b64 = body.toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END ${label}-----\n`;
}
