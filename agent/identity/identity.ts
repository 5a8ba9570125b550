import { secp256k1 } from '@noble/curves/secp256k1';
import { keccak_256 } from '@noble/hashes/sha3';
import { bytesToHex, hexToBytes, concatBytes, utf8ToBytes } from '@noble/hashes/utils';
import { addressOfPublicKey } from './checksum.ts';

/** Who signs a session proof: keeps an agent's proof from being replayed as a relay's. */
export type AuthRole = 'agent' | 'relay' | 'client' | 'device';

/**
 * The text signed to prove a key on one TLS session (or one end-to-end
 * channel). The keying material is unique to the session, so a signature
 * cannot be replayed on another connection.
 */
export function authMessage(role: AuthRole, keyingMaterial: Uint8Array): string {
  return `diode-auth/v1 ${role} 0x${bytesToHex(keyingMaterial)}`;
}

/** EIP-191 (personal_sign) digest, as wallets and ethers' signMessage compute it. */
function personalMessageHash(message: string): Uint8Array {
  const body = utf8ToBytes(message);
  return keccak_256(concatBytes(utf8ToBytes(`\x19Ethereum Signed Message:\n${body.length}`), body));
}

export class Identity {
  readonly address: string;
  readonly #key: Uint8Array;

  constructor(privateKey: string) {
    const hex = privateKey.startsWith('0x') ? privateKey.slice(2) : privateKey;
    if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new Error('a private key is 32 bytes of hex');
    this.#key = hexToBytes(hex);
    if (!secp256k1.utils.isValidPrivateKey(this.#key)) throw new Error('the private key is out of range for secp256k1');
    this.address = addressOfPublicKey(secp256k1.getPublicKey(this.#key, false));
  }

  static random(): Identity {
    return new Identity(bytesToHex(secp256k1.utils.randomPrivateKey()));
  }

  /** EIP-191 signature (r ‖ s ‖ v, v = 27/28) over authMessage(role, keyingMaterial). */
  signAuth(role: AuthRole, keyingMaterial: Uint8Array): string {
    const sig = secp256k1.sign(personalMessageHash(authMessage(role, keyingMaterial)), this.#key);
    return `0x${sig.toCompactHex()}${(27 + sig.recovery).toString(16)}`;
  }

  get privateKey(): string {
    return `0x${bytesToHex(this.#key)}`;
  }
}

/** Recovers the checksummed address that signed authMessage(role, km); throws on a malformed signature. */
export function recoverAuth(role: AuthRole, keyingMaterial: Uint8Array, signature: string): string {
  if (!/^0x[0-9a-fA-F]{130}$/.test(signature)) throw new Error('a signature is 65 bytes of hex');
  const v = parseInt(signature.slice(130, 132), 16);
  const recovery = v >= 27 ? v - 27 : v;
  if (recovery !== 0 && recovery !== 1) throw new Error(`bad signature recovery byte ${v}`);
  const sig = secp256k1.Signature.fromCompact(signature.slice(2, 130)).addRecoveryBit(recovery);
  const publicKey = sig.recoverPublicKey(personalMessageHash(authMessage(role, keyingMaterial))).toRawBytes(false);
  return addressOfPublicKey(publicKey);
}
