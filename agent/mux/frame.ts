// Wire constants and the 12-byte frame header of yamux (hashicorp spec.md).
//
// Every frame starts with this header, all fields big-endian:
//
//   0        1        2                 4                                 8                                 12
//   +--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+
//   |version |  type  |      flags      |             stream id             |              length               |
//   +--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+
//
// `length` means something different per type (see FrameType). Only Data
// frames carry a payload: exactly `length` bytes following the header.

/** Bytes in every frame header. */
export const HEADER_LENGTH = 12;

/** The only protocol version (byte 0). Anything else is a protocol error. */
export const VERSION = 0;

/** Frame type (byte 1). */
export const FrameType = {
  /** Data: stream id = stream, length = payload bytes that follow. May be empty when it only carries flags. */
  Data: 0,
  /** Window update: stream id = stream, length = bytes added to the sender's window (delta), no payload. */
  WindowUpdate: 1,
  /** Ping: stream id = 0, length = opaque value echoed back with ACK, no payload. */
  Ping: 2,
  /** Go away: stream id = 0, length = GoAwayCode, no payload. Ends the session. */
  GoAway: 3,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** Flags (bytes 2-3), a bit set; only meaningful on Data and WindowUpdate, SYN/ACK also on Ping. */
export const Flag = {
  /** 0x1: opens a new stream (or: this ping is a request). */
  SYN: 1,
  /** 0x2: acknowledges a new stream (or: this ping is a response). */
  ACK: 2,
  /** 0x4: half-close, the sender will send no more data on this stream. */
  FIN: 4,
  /** 0x8: reset, the stream is dead in both directions immediately. */
  RST: 8,
} as const;

/** Reason carried in the length field of a GoAway frame. */
export const GoAwayCode = {
  /** 0: normal termination. */
  Normal: 0,
  /** 1: the peer broke the protocol (bad frame, window exceeded, bad stream id). */
  ProtocolError: 1,
  /** 2: an internal error on the sender's side. */
  InternalError: 2,
} as const;
export type GoAwayCode = (typeof GoAwayCode)[keyof typeof GoAwayCode];

/** Receive window every stream starts with on both sides, fixed by the spec (256 KiB). */
export const INITIAL_STREAM_WINDOW = 256 * 1024;

/** Largest value of the 32-bit stream id and length fields. */
export const MAX_UINT32 = 0xffff_ffff;

/** A decoded header. Decoders reuse one instance: copy fields out, do not keep it. */
export interface FrameHeader {
  version: number;
  type: number;
  flags: number;
  streamId: number;
  length: number;
}

/** Writes a header into `buf` at `offset` (12 bytes). */
export function encodeHeader(
  buf: Uint8Array,
  offset: number,
  type: number,
  flags: number,
  streamId: number,
  length: number,
): void {
  buf[offset] = VERSION;
  buf[offset + 1] = type;
  buf[offset + 2] = flags >>> 8;
  buf[offset + 3] = flags;
  buf[offset + 4] = streamId >>> 24;
  buf[offset + 5] = streamId >>> 16;
  buf[offset + 6] = streamId >>> 8;
  buf[offset + 7] = streamId;
  buf[offset + 8] = length >>> 24;
  buf[offset + 9] = length >>> 16;
  buf[offset + 10] = length >>> 8;
  buf[offset + 11] = length;
}

/** Reads a header from `buf` at `offset` into `out` (no validation; the decoder validates). */
export function decodeHeader(buf: Uint8Array, offset: number, out: FrameHeader): FrameHeader {
  out.version = buf[offset];
  out.type = buf[offset + 1];
  out.flags = (buf[offset + 2] << 8) | buf[offset + 3];
  // `* 2 ** 24` instead of `<< 24` keeps values above 2^31 positive.
  out.streamId = buf[offset + 4] * 0x100_0000 + ((buf[offset + 5] << 16) | (buf[offset + 6] << 8) | buf[offset + 7]);
  out.length = buf[offset + 8] * 0x100_0000 + ((buf[offset + 9] << 16) | (buf[offset + 10] << 8) | buf[offset + 11]);
  return out;
}

/** A fresh, zeroed header object (for decoders that reuse one). */
export function newHeader(): FrameHeader {
  return { version: 0, type: 0, flags: 0, streamId: 0, length: 0 };
}
