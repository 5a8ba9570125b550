import { randomBytes } from 'node:crypto';

// The opening of a data connection (docs/PROTOCOL.md, "Data connections"):
// shared by the agent that opens one and the relay that pairs it, so it
// lives below both. A data connection is plain TCP to the relay's agent
// port; its first bytes tell it from a relay link (whose first byte is a TLS
// record's 0x16) and name the single-use token the agent was issued.
//
//   offset  size  field
//   0       4     magic "DIOD" (0x44 0x49 0x4f 0x44)
//   4       1     protocol version, 0x04
//   5       1     kind: 0x01 an agent's data connection, 0x02 a relay's (cluster)
//   6       16    token (issued on the relay link, `tokens` answer)
//
// The relay answers one byte 0x00 (accepted: the connection is a pool member
// of the session the token was issued to), or a refusal: code (1 byte),
// length L (1 byte), L bytes of UTF-8 reason, then it closes.

/** The first four bytes of every data connection. */
export const DATA_MAGIC = Buffer.from('DIOD', 'latin1');
/** The protocol version byte of the opening (the wire protocol's version). */
export const DATA_VERSION = 4;
/** Kind byte: a data connection an agent opens for its own session. */
export const DATA_KIND_AGENT = 0x01;
/** Kind byte: a data connection a relay of the cluster opens for its relay-to-relay link (forwarded streams). (Other values are reserved: direct.) */
export const DATA_KIND_RELAY = 0x02;
export type DataKind = typeof DATA_KIND_AGENT | typeof DATA_KIND_RELAY;
/** bytes of a token: 128 random bits, unguessable. */
export const TOKEN_BYTES = 16;
/** bytes of the whole opening. */
export const DATA_HEADER_BYTES = DATA_MAGIC.length + 2 + TOKEN_BYTES;
/** The relay's one-byte acceptance. */
export const DATA_ACCEPTED = 0x00;
/** bytes: the longest reason a refusal carries (its length is one byte). */
export const MAX_REFUSAL_REASON_BYTES = 255;

/** Why a relay refuses a data connection (the code byte of its answer). */
export const DataRefusal = Object.freeze({
  /** An opening of another version or kind, or not an opening at all. */
  header: 0x01,
  /** A token the relay did not issue, already used, expired, or of a session that ended. */
  token: 0x02,
  /** The token's session came from another source (IPv4 address, IPv6 /64). */
  source: 0x03,
  /** Over one of the relay's data connection caps. */
  limit: 0x04,
});
export type DataRefusalCode = (typeof DataRefusal)[keyof typeof DataRefusal];

const REFUSAL_NAMES: Readonly<Record<number, string>> = Object.freeze(Object.fromEntries(Object.entries(DataRefusal).map(([name, code]) => [code, name])));

/** The name of a refusal code (`token`, `limit`, …), or `code N` for one this side does not know. */
export function refusalName(code: number): string {
  return REFUSAL_NAMES[code] ?? `code ${code}`;
}

/** A fresh token: 32 lower-case hex digits (how `tokens`, `connect.data` and `incoming.data` write it). */
export function newToken(): string {
  return randomBytes(TOKEN_BYTES).toString('hex');
}

export const TOKEN_HEX = /^[0-9a-f]{32}$/;

/** The opening an agent (or, with DATA_KIND_RELAY, a relay of the cluster) writes for `token` (32 lower-case hex digits). */
export function encodeOpening(token: string, kind: DataKind = DATA_KIND_AGENT): Buffer {
  if (!TOKEN_HEX.test(token)) throw new Error('a data token is 32 lower-case hex digits');
  const out = Buffer.allocUnsafe(DATA_HEADER_BYTES);
  DATA_MAGIC.copy(out, 0);
  out[4] = DATA_VERSION;
  out[5] = kind;
  out.write(token, 6, 'hex');
  return out;
}

/** True when a connection's first byte is the data magic's (a relay link starts with TLS's 0x16). */
export function startsLikeData(firstChunk: Buffer): boolean {
  return firstChunk.length > 0 && firstChunk[0] === DATA_MAGIC[0];
}

/** A parsed opening: the token, or why it is refused. */
export type Opening = { token: string; kind: DataKind } | { refusal: DataRefusalCode; reason: string };

/** Parses the first DATA_HEADER_BYTES bytes of a data connection. */
export function parseOpening(header: Buffer): Opening {
  if (header.length < DATA_HEADER_BYTES || !header.subarray(0, DATA_MAGIC.length).equals(DATA_MAGIC)) {
    return { refusal: DataRefusal.header, reason: 'not a diode data connection opening' };
  }
  if (header[4] !== DATA_VERSION) {
    return { refusal: DataRefusal.header, reason: `unsupported data connection version ${header[4]}: this relay speaks version ${DATA_VERSION} only; upgrade the older of the two` };
  }
  const kind = header[5];
  if (kind !== DATA_KIND_AGENT && kind !== DATA_KIND_RELAY) return { refusal: DataRefusal.header, reason: `unknown data connection kind ${kind}` };
  return { token: header.subarray(6, DATA_HEADER_BYTES).toString('hex'), kind };
}

/** A refusal answer: code, length, reason (cut to MAX_REFUSAL_REASON_BYTES). */
export function encodeRefusal(code: DataRefusalCode, reason: string): Buffer {
  let text = Buffer.from(reason, 'utf8');
  if (text.length > MAX_REFUSAL_REASON_BYTES) text = text.subarray(0, MAX_REFUSAL_REASON_BYTES);
  return Buffer.concat([Buffer.from([code, text.length]), text]);
}

/**
 * Reads the relay's answer from the bytes received so far: undefined while
 * incomplete, `accepted`, or the refusal with its reason. Bytes after the
 * answer belong to the stream (none arrive before the agent uses it).
 */
export function parseAnswer(bytes: Buffer): { accepted: true; rest: Buffer } | { refusal: number; reason: string } | undefined {
  if (bytes.length === 0) return undefined;
  if (bytes[0] === DATA_ACCEPTED) return { accepted: true, rest: bytes.subarray(1) };
  if (bytes.length < 2 || bytes.length < 2 + bytes[1]) return undefined;
  return { refusal: bytes[0], reason: bytes.subarray(2, 2 + bytes[1]).toString('utf8') };
}
