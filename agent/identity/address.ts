import { isValidAddress, toChecksumAddress } from './checksum.ts';
import { UsageError } from '../util/errors.ts';

/**
 * Validates a client address: 0x + 40 hex digits; all-lower or all-upper hex
 * is accepted as is, mixed case must carry a valid EIP-55 checksum.
 * Returns the checksummed form.
 */
export function parseAddress(text: string, what = 'address'): string {
  const t = text.trim();
  if (!/^0x[0-9a-fA-F]*$/.test(t)) throw new UsageError(`${what}: "${text}" is not a 0x-prefixed hex address`);
  if (t.length !== 42) throw new UsageError(`${what}: "${text}" has ${t.length - 2} hex digits, an address has 40`);
  if (!isValidAddress(t)) throw new UsageError(`${what}: "${text}" has a bad EIP-55 checksum (mixed case must match; write it all lower-case to skip the check)`);
  return toChecksumAddress(t);
}

/** Same as parseAddress but returns undefined instead of throwing. */
export function tryParseAddress(text: string): string | undefined {
  try {
    return parseAddress(text);
  } catch {
    return undefined;
  }
}
