/** A PEM key and certificate pair. */
export interface PemPair {
  key: string;
  cert: string;
}

/**
 * A self-signed P-256 certificate for TLS 1.3 (which refuses secp256k1).
 * Nobody trusts it: identities are proven by signing the session's keying
 * material. The x509/ASN.1 code is loaded only here, on first use, because
 * it is ≈ 15 MB of RSS that a public-only device never needs.
 */
export async function selfSignedP256(commonName: string, validDays: number): Promise<PemPair> {
  const { default: selfsigned } = await import('selfsigned');
  const pems = await selfsigned.generate([{ name: 'commonName', value: commonName }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notAfterDate: new Date(Date.now() + validDays * 86_400_000),
  });
  return { key: pems.private, cert: pems.cert };
}
