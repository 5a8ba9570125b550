import test from 'ava';
import { randomBytes } from 'node:crypto';
import {
  FrameDecoder,
  FrameType,
  Flag,
  GoAwayCode,
  HEADER_LENGTH,
  MuxError,
  decodeHeader,
  encodeHeader,
  newHeader,
  type FrameHeader,
} from '../agent/mux/index.ts';

interface Frame {
  type: number;
  flags: number;
  streamId: number;
  length: number;
  payload: string; // hex, for deep equality
}

function encodeFrame(type: number, flags: number, streamId: number, length: number, payload?: Buffer): Buffer {
  const h = Buffer.alloc(HEADER_LENGTH);
  encodeHeader(h, 0, type, flags, streamId, length);
  return payload === undefined ? h : Buffer.concat([h, payload]);
}

/** Naive reference decoder: whole input at once, DataView reads, no state. */
function referenceDecode(input: Buffer): Frame[] {
  const out: Frame[] = [];
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  let off = 0;
  while (off + 12 <= input.length) {
    const type = view.getUint8(off + 1);
    const flags = view.getUint16(off + 2);
    const streamId = view.getUint32(off + 4);
    const length = view.getUint32(off + 8);
    off += 12;
    const n = type === 0 ? length : 0;
    out.push({ type, flags, streamId, length, payload: input.subarray(off, off + n).toString('hex') });
    off += n;
  }
  return out;
}

/** Reassembles pieces of spanning Data frames, so frames compare with the reference decoder's. */
function collect(decoder: (onFrame: (h: FrameHeader, p: Buffer, first: boolean, last: boolean) => void) => FrameDecoder) {
  const frames: Frame[] = [];
  let pieces: Buffer[] = [];
  const d = decoder((h, p, first, last) => {
    if (first) pieces = [];
    pieces.push(p);
    if (last) frames.push({ type: h.type, flags: h.flags, streamId: h.streamId, length: h.length, payload: Buffer.concat(pieces).toString('hex') });
  });
  return { d, frames };
}

const fixtures: Array<[string, string, Partial<FrameHeader>]> = [
  ['a SYN window update opening stream 1', '000100010000000100000000', { type: FrameType.WindowUpdate, flags: Flag.SYN, streamId: 1, length: 0 }],
  ['a data frame of 5 bytes on stream 2', '000000000000000200000005', { type: FrameType.Data, flags: 0, streamId: 2, length: 5 }],
  ['a FIN data frame on stream 3', '000000040000000300000000', { type: FrameType.Data, flags: Flag.FIN, streamId: 3, length: 0 }],
  ['an RST window update on the highest stream id', '00010008ffffffff00000000', { type: FrameType.WindowUpdate, flags: Flag.RST, streamId: 0xffffffff, length: 0 }],
  ['a window update of 16 MiB minus 256 KiB', '0001000200000004' + '00fc0000', { type: FrameType.WindowUpdate, flags: Flag.ACK, streamId: 4, length: 16 * 1024 * 1024 - 256 * 1024 }],
  ['a ping request with opaque 0x01020304', '000200010000000001020304', { type: FrameType.Ping, flags: Flag.SYN, streamId: 0, length: 0x01020304 }],
  ['a ping answer with opaque 2^32-1', '0002000200000000ffffffff', { type: FrameType.Ping, flags: Flag.ACK, streamId: 0, length: 0xffffffff }],
  ['a protocol-error go-away', '000300000000000000000001', { type: FrameType.GoAway, flags: 0, streamId: 0, length: GoAwayCode.ProtocolError }],
];

for (const [what, hex, fields] of fixtures) {
  test(`the header of ${what} encodes to ${hex} and decodes back`, (t) => {
    const buf = Buffer.alloc(12);
    encodeHeader(buf, 0, fields.type!, fields.flags!, fields.streamId!, fields.length!);
    t.is(buf.toString('hex'), hex);
    t.deepEqual(decodeHeader(Buffer.from(hex, 'hex'), 0, newHeader()), { version: 0, ...fields } as FrameHeader);
  });
}

function randomFrames(count: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const kind = Math.floor(Math.random() * 6);
    const id = 1 + Math.floor(Math.random() * 100);
    if (kind <= 2) {
      const n = kind === 0 ? 0 : Math.floor(Math.random() * (kind === 1 ? 40 : 70_000));
      parts.push(encodeFrame(FrameType.Data, kind === 0 ? Flag.FIN : 0, id, n, randomBytes(n)));
    } else if (kind === 3) parts.push(encodeFrame(FrameType.WindowUpdate, Flag.ACK, id, Math.floor(Math.random() * 2 ** 32)));
    else if (kind === 4) parts.push(encodeFrame(FrameType.Ping, Flag.SYN, 0, Math.floor(Math.random() * 2 ** 32)));
    else parts.push(encodeFrame(FrameType.GoAway, 0, 0, GoAwayCode.Normal));
  }
  return Buffer.concat(parts);
}

test('the decoder yields the same frames as a naive reference decoder when input is split at random points', (t) => {
  for (let round = 0; round < 30; round++) {
    const input = randomFrames(60);
    const expected = referenceDecode(input);
    const { d, frames } = collect((f) => new FrameDecoder(1 << 20, f));
    let off = 0;
    while (off < input.length) {
      // Mix tiny splits (inside headers) with large ones.
      const n = Math.random() < 0.3 ? 1 + Math.floor(Math.random() * 13) : 1 + Math.floor(Math.random() * 100_000);
      d.push(input.subarray(off, off + n));
      off += n;
    }
    t.deepEqual(frames, expected);
    t.is(d.buffered, 0);
  }
});

test('the decoder yields the same frames when fed one byte at a time', (t) => {
  const input = randomFrames(20).subarray(0); // keep it modest: 1-byte pushes
  const { d, frames } = collect((f) => new FrameDecoder(1 << 20, f));
  for (let i = 0; i < input.length; i++) d.push(input.subarray(i, i + 1));
  t.deepEqual(frames, referenceDecode(input));
});

test('a payload inside one chunk is handed out as a view of that chunk, not a copy', (t) => {
  const chunk = encodeFrame(FrameType.Data, 0, 1, 4, Buffer.from('abcd'));
  let payload: Buffer | undefined;
  new FrameDecoder(1024, (_h, p) => (payload = p)).push(chunk);
  t.is(payload!.buffer, chunk.buffer);
  t.is(payload!.byteOffset, chunk.byteOffset + 12);
});

test('a data frame longer than the limit is rejected from its header alone, before buffering', (t) => {
  let frames = 0;
  const d = new FrameDecoder(1000, () => frames++);
  const err = t.throws(() => d.push(encodeFrame(FrameType.Data, 0, 1, 1001)), { instanceOf: MuxError });
  t.is(err.code, 'EPROTOCOL');
  t.is(err.goAwayCode, GoAwayCode.ProtocolError);
  t.is(d.buffered, 0);
  t.is(frames, 0);
});

test('a window update with a huge delta is not mistaken for an oversize payload', (t) => {
  const { d, frames } = collect((f) => new FrameDecoder(1000, f));
  d.push(encodeFrame(FrameType.WindowUpdate, 0, 1, 0xffffffff));
  t.is(frames.length, 1);
});

test('an unknown version or frame type is a protocol error', (t) => {
  const bad = Buffer.from('010000000000000100000000', 'hex');
  t.throws(() => new FrameDecoder(1000, () => {}).push(bad), { instanceOf: MuxError, message: /version/ });
  const badType = Buffer.from('000400000000000100000000', 'hex');
  t.throws(() => new FrameDecoder(1000, () => {}).push(badType), { instanceOf: MuxError, message: /type/ });
});

test('a payload spanning chunks is handed on piece by piece as views of each chunk, flagged first and last', (t) => {
  const frame = encodeFrame(FrameType.Data, Flag.FIN, 3, 40_000, Buffer.alloc(40_000, 7));
  const chunks = [frame.subarray(0, 12 + 1000), frame.subarray(12 + 1000, 20_000), frame.subarray(20_000)].map((c) => Buffer.from(c));
  const pieces: Array<{ buffer: ArrayBufferLike; length: number; first: boolean; last: boolean }> = [];
  const d = new FrameDecoder(1 << 20, (_h, p, first, last) => pieces.push({ buffer: p.buffer, length: p.length, first, last }));
  for (const c of chunks) d.push(c);
  t.deepEqual(pieces.map((p) => [p.length, p.first, p.last]), [[1000, true, false], [20_000 - 1012, false, false], [frame.length - 20_000, false, true]]);
  pieces.forEach((p, i) => t.is(p.buffer, chunks[i].buffer));
  t.is(d.buffered, 0);
});
