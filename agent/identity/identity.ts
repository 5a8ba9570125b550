import { Wallet, verifyMessage, getAddress, hexlify } from 'ethers';

/** Who signs a session proof: keeps an agent's proof from being replayed as a relay's. */
export type AuthRole = 'agent' | 'relay' | 'client' | 'device';

/**
 * The text signed to prove a key on one TLS session (or one end-to-end
 * channel). The keying material is unique to the session, so a signature
 * cannot be replayed on another connection.
 */
export function authMessage(role: AuthRole, keyingMaterial: Uint8Array): string {
  return `diode-auth/v1 ${role} ${hexlify(keyingMaterial)}`;
}

export class Identity {
  readonly address: string;
  readonly #wallet: Wallet;

  constructor(privateKey: string) {
    this.#wallet = new Wallet(privateKey);
    this.address = this.#wallet.address;
  }

  static random(): Identity {
    return new Identity(Wallet.createRandom().privateKey);
  }

  /** EIP-191 signature over authMessage(role, keyingMaterial). */
  signAuth(role: AuthRole, keyingMaterial: Uint8Array): string {
    return this.#wallet.signMessageSync(authMessage(role, keyingMaterial));
  }

  get privateKey(): string {
    return this.#wallet.privateKey;
  }
}

/** Recovers the checksummed address that signed authMessage(role, km); throws on a malformed signature. */
export function recoverAuth(role: AuthRole, keyingMaterial: Uint8Array, signature: string): string {
  return getAddress(verifyMessage(authMessage(role, keyingMaterial), signature));
}
