import type { Duplex } from 'node:stream';
import { DiodeError } from '../util/errors.ts';

/**
 * Small messages (hello, control, stream headers) travel as one frame:
 *   u32 big-endian length | UTF-8 JSON object
 * The reader takes exactly one frame off a stream and unshifts whatever
 * follows it, so the raw bytes behind a header reach the pump untouched.
 */
export class FrameError extends DiodeError {
  constructor(code: string, message: string) {
    super(code, message);
    this.name = 'FrameError';
  }
}

const LENGTH_BYTES = 4;

export function encodeFrame(message: object): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  const header = Buffer.allocUnsafe(LENGTH_BYTES);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

export function writeFrame(stream: Duplex, message: object): boolean {
  return stream.write(encodeFrame(message));
}

/**
 * Reads one frame. Rejects a declared length above maxBytes before buffering
 * the body, a frame that does not arrive within timeoutMs, and a stream that
 * ends first.
 */
/**
 * A larger limit for frames of one kind (the `t` field), chosen before the
 * body is buffered: the kind is read from the first bytes of the body, which
 * must then begin exactly `{"t":"<kind>"` (JSON.stringify's order, no
 * spaces). Anything else keeps the base limit.
 */
export interface LargeFrameKind {
  kind: string;
  maxBytes: number;
}

/** bytes of a body read to tell its kind: `{"t":"` plus the longest kind name and its closing quote. */
const KIND_PREFIX_BYTES = 32;

/**
 * The limit that applies to a frame of `length` whose body starts with
 * `prefix` (undefined: too few bytes yet to tell).
 */
function limitFor(length: number, prefix: Buffer, maxBytes: number, large: LargeFrameKind | undefined): number | undefined {
  if (length <= maxBytes || !large || length > large.maxBytes) return maxBytes;
  const marker = `{"t":${JSON.stringify(large.kind)}`;
  if (prefix.length < Math.min(length, marker.length)) return undefined;
  return prefix.subarray(0, marker.length).toString('latin1') === marker ? large.maxBytes : maxBytes;
}

export function readFrame<T = Record<string, unknown>>(stream: Duplex, maxBytes: number, timeoutMs: number, large?: LargeFrameKind): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let buffered: Buffer = Buffer.alloc(0);
    let done = false;
    const finish = (err: Error | undefined, value?: T) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
      if (err) reject(err);
      else resolve(value as T);
    };
    const onEnd = () => finish(new FrameError('ECLOSED', 'the peer closed the stream before sending its header'));
    const onError = (err: Error) => finish(err);
    const onReadable = () => {
      let chunk: Buffer | null;
      while (!done && (chunk = stream.read() as Buffer | null) !== null) {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        if (buffered.length < LENGTH_BYTES) continue;
        const length = buffered.readUInt32BE(0);
        const limit = limitFor(length, buffered.subarray(LENGTH_BYTES, LENGTH_BYTES + KIND_PREFIX_BYTES), maxBytes, large);
        if (limit === undefined) continue;
        if (length > limit) {
          const why = large && length <= large.maxBytes ? ` (only a ${large.kind}, whose body starts {"t":"${large.kind}", may have up to ${large.maxBytes})` : '';
          finish(new FrameError('EFRAMESIZE', `frame of ${length} bytes exceeds the ${limit}-byte limit${why}`));
          return;
        }
        if (buffered.length < LENGTH_BYTES + length) continue;
        const rest = buffered.subarray(LENGTH_BYTES + length);
        let parsed: unknown;
        try {
          parsed = JSON.parse(buffered.subarray(LENGTH_BYTES, LENGTH_BYTES + length).toString('utf8'));
        } catch {
          finish(new FrameError('EFRAMEJSON', 'frame is not valid JSON'));
          return;
        }
        if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
          finish(new FrameError('EFRAMEJSON', 'frame is not a JSON object'));
          return;
        }
        if (rest.length > 0) stream.unshift(rest);
        finish(undefined, parsed as T);
        return;
      }
    };
    const timer = setTimeout(() => finish(new FrameError('ETIMEDOUT', `no header within ${timeoutMs} ms`)), timeoutMs);
    stream.on('readable', onReadable);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
    stream.once('error', onError);
    onReadable();
  });
}

/**
 * The push-side twin of readFrame, for bytes handed over as they arrive
 * (MuxStream.tapPrefix): feed it chunks; once one whole frame (at most
 * maxBytes) is in, `done` gets it and the call returns the bytes after it.
 * Returns undefined while the frame is incomplete. A frame over the limit or
 * not a JSON object ends it with an error (and returns no further bytes).
 */
export function frameTaker<T = Record<string, unknown>>(maxBytes: number, done: (err: Error | undefined, value?: T) => void): (chunk: Buffer) => Buffer | undefined {
  let buffered: Buffer = Buffer.alloc(0);
  return (chunk) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    if (buffered.length < LENGTH_BYTES) return undefined;
    const length = buffered.readUInt32BE(0);
    if (length > maxBytes) {
      done(new FrameError('EFRAMESIZE', `frame of ${length} bytes exceeds the ${maxBytes}-byte limit`));
      return Buffer.alloc(0);
    }
    if (buffered.length < LENGTH_BYTES + length) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(buffered.subarray(LENGTH_BYTES, LENGTH_BYTES + length).toString('utf8'));
    } catch {
      done(new FrameError('EFRAMEJSON', 'frame is not valid JSON'));
      return Buffer.alloc(0);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      done(new FrameError('EFRAMEJSON', 'frame is not a JSON object'));
      return Buffer.alloc(0);
    }
    done(undefined, parsed as T);
    return buffered.subarray(LENGTH_BYTES + length);
  };
}

/**
 * Reads frames one after another for the life of a control stream. Each is
 * handed to onMessage; a bad frame ends the loop with its error.
 */
export async function readFrames(stream: Duplex, maxBytes: number, onMessage: (m: Record<string, unknown>) => void): Promise<void> {
  for (;;) {
    const message = await readFrame(stream, maxBytes, 2 ** 31 - 1);
    onMessage(message);
  }
}
