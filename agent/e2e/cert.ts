import { createSecureContext, type SecureContext } from 'node:tls';

/** days: the ephemeral certificate only carries one process's end-to-end TLS; identity is the signed hello. */
const EPHEMERAL_CERT_DAYS = 30;

let context: Promise<SecureContext> | undefined;

/**
 * The device's TLS context for end-to-end sessions: an ephemeral P-256
 * self-signed certificate (TLS 1.3 refuses secp256k1), made once per
 * process on first use and never written to disk. Nobody verifies it: the
 * device proves its key by signing the session's keying material instead.
 */
export function deviceTlsContext(): Promise<SecureContext> {
  context ??= (async () => {
    const notAfter = new Date(Date.now() + EPHEMERAL_CERT_DAYS * 86_400_000);
    // Loaded on first use: x509 and ASN.1 code is ≈ 15 MB of RSS that a public-only device never needs.
    const { default: selfsigned } = await import('selfsigned');
    const pems = await selfsigned.generate([{ name: 'commonName', value: 'diode-device' }], {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      notAfterDate: notAfter,
    });
    return createSecureContext({ key: pems.private, cert: pems.cert, minVersion: 'TLSv1.3' });
  })();
  return context;
}
