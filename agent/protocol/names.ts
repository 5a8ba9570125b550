import { toChecksumAddress } from '../identity/checksum.ts';
import { PUBLIC_KEY_HEX, SIGNATURE_HEX } from '../identity/identity.ts';
import { MAX_NAMES_PER_DEVICE, nameProblem } from '../names/name.ts';
import { FrameError } from './frames.ts';
import { MAX_REPLY_MESSAGE_CHARS } from './limits.ts';
import { peerText } from '../util/escape.ts';

// Names on the wire (docs/PROTOCOL.md, "Names"): a device's claim and a
// client's lookup, each the first frame of a stream of its own, each
// answered with one frame, then the stream ends. Every field is checked
// here before anything uses it.

/** Names one claim may carry (a relay admits --max-names-per-address of them, 1 by default). */
export const MAX_CLAIM_NAMES = MAX_NAMES_PER_DEVICE;

/** Agent → relay: the complete set of names this device wants, each signed (names/claim.ts). */
export interface Claim {
  t: 'claim';
  /** The device's public key: its address must be the session's. */
  pub: string;
  names: Array<{ name: string; sig: string }>;
}

/** Why one name of a claim was not taken. */
export type ClaimRefusal = 'held' | 'limit' | 'full' | 'unavailable';
export const CLAIM_REFUSALS: readonly ClaimRefusal[] = ['held', 'limit', 'full', 'unavailable'];

/** The outcome for one name of a claim. */
export type ClaimOutcome = { name: string; ok: true } | { name: string; ok: false; code: ClaimRefusal; holder?: string; message: string };

/** Relay → agent: one outcome per claimed name, in the claim's order. */
export interface Claimed {
  t: 'claimed';
  names: ClaimOutcome[];
}

/** Client → relay: which device holds this name? */
export interface Lookup {
  t: 'lookup';
  name: string;
}

/** Relay → client: the holder with its claim signature, or only `name` when nobody holds it. */
export interface NameInfo {
  t: 'name';
  name: string;
  address?: string;
  pub?: string;
  sig?: string;
}

function fail(what: string): never {
  throw new FrameError('EPROTO', `malformed message: ${what}`);
}

function checkedName(value: unknown, field: string): string {
  if (typeof value !== 'string') fail(`${field} is not a string`);
  const problem = nameProblem(value);
  if (problem) fail(`${field} is not a name (${problem}; lower case)`);
  return value;
}

function checkedAddress(value: unknown, field: string): string {
  if (typeof value !== 'string' || !/^0x[0-9a-fA-F]{40}$/.test(value)) fail(`${field} is not an address`);
  return toChecksumAddress(value.toLowerCase());
}

function checkedHex(value: unknown, pattern: RegExp, field: string): string {
  if (typeof value !== 'string' || !pattern.test(value)) fail(field);
  return value;
}

export function parseClaim(m: Record<string, unknown>): Claim {
  if (m.t !== 'claim') fail('expected claim');
  const pub = checkedHex(m.pub, PUBLIC_KEY_HEX, 'claim.pub');
  if (!Array.isArray(m.names) || m.names.length === 0) fail('claim.names is not a non-empty list');
  if (m.names.length > MAX_CLAIM_NAMES) fail(`claim.names has ${m.names.length} names, at most ${MAX_CLAIM_NAMES}`);
  const seen = new Set<string>();
  const names = m.names.map((n: unknown, i) => {
    const entry = (n ?? {}) as Record<string, unknown>;
    const name = checkedName(entry.name, `claim.names[${i}].name`);
    if (seen.has(name)) fail(`claim.names[${i}]: ${name} twice`);
    seen.add(name);
    return { name, sig: checkedHex(entry.sig, SIGNATURE_HEX, `claim.names[${i}].sig`) };
  });
  return { t: 'claim', pub, names };
}

export function parseClaimed(m: Record<string, unknown>): Claimed {
  if (m.t !== 'claimed') fail('expected claimed');
  if (!Array.isArray(m.names) || m.names.length > MAX_CLAIM_NAMES) fail('claimed.names');
  const names = m.names.map((n: unknown, i): ClaimOutcome => {
    const entry = (n ?? {}) as Record<string, unknown>;
    const name = checkedName(entry.name, `claimed.names[${i}].name`);
    if (entry.ok === true) return { name, ok: true };
    if (!CLAIM_REFUSALS.includes(entry.code as ClaimRefusal)) fail(`claimed.names[${i}].code`);
    const message = typeof entry.message === 'string' ? peerText(entry.message, MAX_REPLY_MESSAGE_CHARS) : '';
    return {
      name,
      ok: false,
      code: entry.code as ClaimRefusal,
      ...(entry.holder !== undefined ? { holder: checkedAddress(entry.holder, `claimed.names[${i}].holder`) } : {}),
      message,
    };
  });
  return { t: 'claimed', names };
}

export function parseLookup(m: Record<string, unknown>): Lookup {
  if (m.t !== 'lookup') fail('expected lookup');
  return { t: 'lookup', name: checkedName(m.name, 'lookup.name') };
}

export function parseNameInfo(m: Record<string, unknown>): NameInfo {
  if (m.t !== 'name') fail('expected name');
  const name = checkedName(m.name, 'name.name');
  if (m.address === undefined) return { t: 'name', name };
  return {
    t: 'name',
    name,
    address: checkedAddress(m.address, 'name.address'),
    pub: checkedHex(m.pub, PUBLIC_KEY_HEX, 'name.pub'),
    sig: checkedHex(m.sig, SIGNATURE_HEX, 'name.sig'),
  };
}
