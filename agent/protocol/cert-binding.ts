import { createHash, type KeyObject, type X509Certificate } from 'node:crypto';
import { verifyAuth, type Identity } from '../identity/index.ts';

// A relay's TLS certificate carries a proof, made with the relay's
// secp256k1 key, that binds the certificate's key to the relay's address
// (a subjectAltName URI, docs/PROTOCOL.md §1). The TLS handshake proves the
// certificate's key, so an agent knows which relay it talks to as soon as
// TLS is up, one round trip before the relay's hello arrives: it can send
// its hello, its verdict and its first streams at once, and still refuse a
// relay pinned to another address before anything of its own is sent.

/** The subjectAltName URI's scheme: `diode-relay-cert:0x04<public key hex>:0x<signature hex>`. */
export const CERT_BINDING_SCHEME = 'diode-relay-cert';

const BINDING_URI = new RegExp(`(?:^|, )URI:${CERT_BINDING_SCHEME}:(0x04[0-9a-fA-F]{128}):(0x[0-9a-fA-F]{128})(?:,|$)`);

/** sha256 of a certificate key's SubjectPublicKeyInfo DER: what the binding signs. */
export function certKeyHash(key: KeyObject): Buffer {
  return createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest();
}

/** The subjectAltName URI that binds `certKey` to `identity` (role relay). */
export function certBindingUri(identity: Identity, certKey: KeyObject): string {
  const proof = identity.signAuth('relay', certKeyHash(certKey), 'diode-relay-cert');
  return `${CERT_BINDING_SCHEME}:${proof.pub}:${proof.sig}`;
}

/** The address a relay certificate is bound to; undefined when it carries no binding, or one that does not verify for its key. */
export function certBoundAddress(cert: X509Certificate): string | undefined {
  const m = BINDING_URI.exec(cert.subjectAltName ?? '');
  if (!m) return undefined;
  try {
    return verifyAuth('relay', certKeyHash(cert.publicKey), { pub: m[1], sig: m[2] }, 'diode-relay-cert');
  } catch {
    return undefined;
  }
}
