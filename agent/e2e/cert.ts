import { createSecureContext, type SecureContext } from 'node:tls';
import { selfSignedP256 } from '../util/self-signed.ts';

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
    const pems = await selfSignedP256('diode-device', EPHEMERAL_CERT_DAYS);
    return createSecureContext({ key: pems.key, cert: pems.cert, minVersion: 'TLSv1.3' });
  })();
  return context;
}
