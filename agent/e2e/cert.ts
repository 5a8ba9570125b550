import { constants, createHash, generateKeyPairSync, type X509Certificate } from 'node:crypto';
import { createSecureContext, DEFAULT_CIPHERS, type SecureContext, type SecureContextOptions } from 'node:tls';
import { tls13Ciphers } from '../link/dial-relay.ts';
import { pemOf, selfSignedEd25519 } from '../tls/self-signed.ts';

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
  const der = selfSignedEd25519(publicKey, privateKey, { commonName: 'diode-e2e', validDays: CERT_VALID_DAYS });
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
