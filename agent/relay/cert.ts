import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { makeHome } from '../identity/home.ts';
import type { Identity } from '../identity/index.ts';
import { pemOf, selfSignedEd25519 } from '../tls/self-signed.ts';
import { certBindingUri, certBoundAddress } from '../protocol/cert-binding.ts';

export interface RelayCert {
  key: string;
  cert: string;
}

const CERT_FILE = 'relay-cert.pem';
const KEY_FILE = 'relay-key.pem';
/** days a certificate is valid: it carries TLS and a binding to the relay's address, so a long life is harmless (UTCTime ends in 2049). */
const CERT_VALID_DAYS = 20 * 365;

/**
 * The relay's TLS certificate from the state directory: Ed25519, with its
 * key bound to the relay's address (protocol/cert-binding.ts). One that is
 * missing, or carries no binding to this relay's address (made before
 * bindings existed, or for another key), is made anew: nobody trusts the
 * certificate itself, so replacing it costs nothing.
 */
export async function loadOrCreateRelayCert(home: string, identity: Identity): Promise<RelayCert & { made: boolean }> {
  const certPath = join(home, CERT_FILE);
  const keyPath = join(home, KEY_FILE);
  try {
    const pair = { cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8') };
    if (certBoundAddress(new X509Certificate(pair.cert)) === identity.address) return { ...pair, made: false };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== undefined && code !== 'ENOENT' && !code.startsWith('ERR_OSSL')) {
      throw new DiodeError('ECERT', `cannot read the relay certificate ${certPath} / ${keyPath}: ${errorMessage(err)}`);
    }
  }
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const der = selfSignedEd25519(publicKey, privateKey, { commonName: 'diode-relay', validDays: CERT_VALID_DAYS, uri: certBindingUri(identity, publicKey) });
  const pair = { cert: pemOf(der, 'CERTIFICATE'), key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
  makeHome(home);
  // Key first, then the certificate: a half-written pair is made anew, never half-used.
  writeAtomic(keyPath, pair.key, 0o600);
  writeAtomic(certPath, pair.cert, 0o644);
  return { ...pair, made: true };
}

function writeAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode });
  renameSync(tmp, path);
}
