import { verifyText, type AuthProof, type Identity } from '../identity/index.ts';

// A device's signature on a name it claims. The relay takes a claim only
// on a session authenticated as the signing key (so nobody claims a name
// for an address they do not hold), stores the signature with the name,
// and hands it out with every lookup: a client (and a relay reading the
// cluster's shared map) checks it, so whoever keeps the map can point a
// name only at a device that claimed that very name itself.

/** The text a device signs to claim `name` (lower case): `diode-name/v4 <name>`. */
export function claimText(name: string): string {
  return `diode-name/v4 ${name}`;
}

/** A name and the claim signature of the device that holds it. */
export interface SignedName {
  name: string;
  /** The device's uncompressed secp256k1 public key, 0x04 ‖ x ‖ y. */
  pub: string;
  /** ECDSA (SHA-256) over claimText(name) by that key, r ‖ s. */
  sig: string;
}

/** This device's claim of `name`. */
export function signName(identity: Identity, name: string): SignedName {
  return { name, ...identity.signText(claimText(name)) };
}

/** The checksummed address that claimed `name`; throws when the signature does not verify or the key is malformed. */
export function claimant(claim: SignedName): string {
  const proof: AuthProof = { pub: claim.pub, sig: claim.sig };
  return verifyText(claimText(claim.name), proof);
}
