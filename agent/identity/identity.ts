import { createECDH, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { addressOfPublicKey } from './checksum.ts';
import { setBounded } from '../util/bounded-map.ts';

// secp256k1 through node:crypto (OpenSSL): key checks, signing and
// verification are native. A JavaScript curve library made every agent
// optimise its big-number code at start-up (≈ 8 MB of RSS for the JIT) and
// made the relay spend half its admission CPU recovering keys from
// signatures; OpenSSL verifies a signature against a given key ≈ 3× faster.

/** Who signs a session proof: keeps an agent's proof from being replayed as a relay's. */
export type AuthRole = 'agent' | 'relay' | 'client' | 'device';

/** What a hello carries to prove a key: the key itself and its signature. */
export interface AuthProof {
  /** Uncompressed secp256k1 public key: 0x04 ‖ x ‖ y, as 0x + 130 hex digits. */
  pub: string;
  /** ECDSA over SHA-256 of authMessage(role, keyingMaterial): r ‖ s, 0x + 128 hex digits. */
  sig: string;
}

export const PUBLIC_KEY_HEX = /^0x04[0-9a-fA-F]{128}$/;
export const SIGNATURE_HEX = /^0x[0-9a-fA-F]{128}$/;

/**
 * What a signature proves a key for: `diode-auth` a relay link's TLS session
 * (the bytes are its exported keying material), `diode-e2e` an end-to-end
 * session inside a data stream (the bytes are the sha256 of the signer's
 * TLS certificate key), `diode-relay-cert` a relay's TLS certificate (the
 * bytes are the sha256 of its key, SubjectPublicKeyInfo DER).
 */
export type AuthPurpose = 'diode-auth' | 'diode-e2e' | 'diode-relay-cert';

/** The protocol version named in every signed text (a proof made for one version is no proof for another). */
export const AUTH_TEXT_VERSION = 4;

/**
 * The text signed to prove a key: `<purpose>/v4 <role> 0x<bytes as lower-case hex>`.
 * The keying material is unique to the session, so a link signature
 * cannot be replayed on another connection; the role keeps a proof from
 * being reflected as the other side's.
 */
export function authMessage(role: AuthRole, bytes: Uint8Array, purpose: AuthPurpose = 'diode-auth'): string {
  return `${purpose}/v${AUTH_TEXT_VERSION} ${role} 0x${Buffer.from(bytes).toString('hex')}`;
}

const b64url = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64url');

function jwkOf(publicKey: Uint8Array): { kty: 'EC'; crv: 'secp256k1'; x: string; y: string } {
  return { kty: 'EC', crv: 'secp256k1', x: b64url(publicKey.subarray(1, 33)), y: b64url(publicKey.subarray(33, 65)) };
}

export class Identity {
  readonly address: string;
  /** Uncompressed public key (65 bytes, 0x04 prefix). */
  readonly publicKey: Buffer;
  readonly #key: Buffer;
  readonly #signingKey: KeyObject;

  constructor(privateKey: string) {
    const hex = privateKey.startsWith('0x') ? privateKey.slice(2) : privateKey;
    if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new Error('a private key is 32 bytes of hex');
    this.#key = Buffer.from(hex, 'hex');
    const ecdh = createECDH('secp256k1');
    try {
      ecdh.setPrivateKey(this.#key); // refuses 0 and anything ≥ the curve order
    } catch {
      throw new Error('the private key is out of range for secp256k1');
    }
    this.publicKey = ecdh.getPublicKey();
    this.#signingKey = createPrivateKey({ key: { ...jwkOf(this.publicKey), d: b64url(this.#key) }, format: 'jwk' });
    this.address = addressOfPublicKey(this.publicKey);
  }

  static random(): Identity {
    const ecdh = createECDH('secp256k1');
    ecdh.generateKeys();
    return new Identity(ecdh.getPrivateKey('hex').padStart(64, '0'));
  }

  /** Proof of this key over authMessage(role, bytes, purpose). */
  signAuth(role: AuthRole, bytes: Uint8Array, purpose: AuthPurpose = 'diode-auth'): AuthProof {
    return this.signText(authMessage(role, bytes, purpose));
  }

  /** Proof of this key over an ASCII text (the text says what it proves: a session, a name claim). */
  signText(text: string): AuthProof {
    const sig = sign('sha256', Buffer.from(text), { key: this.#signingKey, dsaEncoding: 'ieee-p1363' });
    return { pub: `0x${this.publicKey.toString('hex')}`, sig: `0x${sig.toString('hex')}` };
  }

  get privateKey(): string {
    return `0x${this.#key.toString('hex')}`;
  }
}

/**
 * The checksummed address proven by `proof` for authMessage(role, km).
 * Throws on a malformed key or signature, a key not on the curve, or a
 * signature that does not verify. Hex digits of `pub` and `sig` may be of
 * either case, and a high-S signature (s > n/2) is accepted as well as its
 * low-S twin: the signed text holds fresh session bytes, so the malleability
 * that low-S rules guard against (a second valid encoding of a transaction)
 * gains nobody anything here. Signers here make either.
 */
export function verifyAuth(role: AuthRole, bytes: Uint8Array, proof: AuthProof, purpose: AuthPurpose = 'diode-auth'): string {
  return verifyText(authMessage(role, bytes, purpose), proof);
}

/** The checksummed address whose key made `proof` over `text`; throws as verifyAuth does. */
export function verifyText(text: string, proof: AuthProof): string {
  if (!PUBLIC_KEY_HEX.test(proof.pub)) throw new Error('a public key is 65 bytes of hex starting 0x04');
  if (!SIGNATURE_HEX.test(proof.sig)) throw new Error('a signature is 64 bytes of hex');
  const publicKey = Buffer.from(proof.pub.slice(2), 'hex');
  const key = peerKey(publicKey);
  const ok = verify('sha256', Buffer.from(text), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(proof.sig.slice(2), 'hex'));
  if (!ok) throw new Error('the signature does not verify');
  return addressOfPublicKey(publicKey);
}

/** SubjectPublicKeyInfo DER in front of an uncompressed secp256k1 point (id-ecPublicKey, secp256k1, BIT STRING of 65 bytes). */
const SPKI_SECP256K1_PREFIX = Buffer.from('3056301006072a8648ce3d020106052b8104000a034200', 'hex');
/** Peer keys imported lately: an agent verifies the same relay, a device the same clients, again and again. */
const PEER_KEY_CACHE = 256;
const peerKeys = new Map<string, KeyObject>();

/**
 * The peer's public key as a KeyObject. The DER import checks that the
 * point is on the curve (a point off it is "decode error") and costs about
 * half of the JWK import it replaced; a relay still imports each new
 * device's key once per connection, an agent its relay's once.
 */
function peerKey(publicKey: Buffer): KeyObject {
  const id = publicKey.toString('hex');
  const cached = peerKeys.get(id);
  if (cached) return cached;
  const key = createPublicKey({ key: Buffer.concat([SPKI_SECP256K1_PREFIX, publicKey]), format: 'der', type: 'spki' });
  setBounded(peerKeys, id, key, PEER_KEY_CACHE);
  return key;
}
