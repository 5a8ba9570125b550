import { keccak_256 } from '@noble/hashes/sha3';
import { bytesToHex } from '@noble/hashes/utils';
import { setBounded } from '../util/bounded-map.ts';

// EIP-55 addresses with @noble/hashes directly: the device agent never loads
// ethers (≈ 17 MB of RSS), which only the fleet admin code needs.

const HEX40 = /^0x[0-9a-fA-F]{40}$/;

/**
 * Addresses checksummed lately (lower-case hex → EIP-55): every stream header
 * names one or two addresses, and a JavaScript keccak per header was ≈ 0.1 ms
 * of each process's set-up cost. Oldest entry out first.
 */
const CHECKSUM_CACHE_MAX = 4096;
const checksummed = new Map<string, string>();

/** EIP-55 checksummed form of a 0x + 40 hex address (any case in). */
export function toChecksumAddress(address: string): string {
  const lower = address.slice(2).toLowerCase();
  const known = checksummed.get(lower);
  if (known !== undefined) return known;
  const hash = bytesToHex(keccak_256(new TextEncoder().encode(lower)));
  let out = '0x';
  for (let i = 0; i < 40; i++) out += parseInt(hash[i], 16) >= 8 ? lower[i].toUpperCase() : lower[i];
  setBounded(checksummed, lower, out, CHECKSUM_CACHE_MAX);
  return out;
}

/** True for 0x + 40 hex digits that are all-lower, all-upper, or a valid EIP-55 checksum. */
export function isValidAddress(address: string): boolean {
  if (!HEX40.test(address)) return false;
  const body = address.slice(2);
  if (body === body.toLowerCase() || body === body.toUpperCase()) return true;
  return toChecksumAddress(address) === address;
}

/** Address of an uncompressed secp256k1 public key (65 bytes, 0x04 prefix). */
export function addressOfPublicKey(uncompressed: Uint8Array): string {
  return toChecksumAddress('0x' + bytesToHex(keccak_256(uncompressed.subarray(1)).subarray(12)));
}
