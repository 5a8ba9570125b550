import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { selfSignedP256 } from '../util/self-signed.ts';
import { makeHome } from '../identity/home.ts';

export interface RelayCert {
  key: string;
  cert: string;
}

const CERT_FILE = 'relay-cert.pem';
const KEY_FILE = 'relay-key.pem';
/** The certificate only carries TLS; identity is the hello signature, so a long life is harmless. */
const CERT_LIFETIME_YEARS = 20;

/** Loads the relay's TLS certificate from the state directory, creating it once (P-256: TLS 1.3 refuses secp256k1). */
export async function loadOrCreateRelayCert(home: string): Promise<RelayCert> {
  const certPath = join(home, CERT_FILE);
  const keyPath = join(home, KEY_FILE);
  try {
    return { cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8') };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new DiodeError('ECERT', `cannot read the relay certificate ${certPath} / ${keyPath}: ${errorMessage(err)}`);
    }
  }
  const pems = await selfSignedP256('diode-relay', CERT_LIFETIME_YEARS * 365);
  makeHome(home);
  // Key first, then the certificate: a half-written pair is recreated, never half-used.
  writeAtomic(keyPath, pems.key, 0o600);
  writeAtomic(certPath, pems.cert, 0o644);
  return pems;
}

function writeAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode });
  renameSync(tmp, path);
}
