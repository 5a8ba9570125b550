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
 * A larger limit for frames of one kind (the `t` field), chosen before the
 * body is buffered: the kind is read from the first bytes of the body, which
 * must then begin exactly `{"t":"<kind>"` (JSON.stringify's order, no
 * spaces). Anything else keeps the base limit. `claim`, when given, is asked
 * once before the larger limit applies and may say no (a relay grants it to
 * one control stream per session only).
 */
export interface LargeFrameKind {
  kind: string;
  maxBytes: number;
  claim?: () => boolean;
}

/** How readFrame bounds one frame besides its size and overall timeout. */
export interface ReadFrameOptions {
  large?: LargeFrameKind;
  /** ms from the frame's first byte to its last: a body trickled or left unfinished is refused (ETIMEDOUT). */
  bodyTimeoutMs?: number;
}

/** bytes of a body read to tell its kind: `{"t":"` plus the longest kind name and its closing quote. */
const KIND_PREFIX_BYTES = 32;

/**
 * The limit that applies to a frame of `length` whose body starts with
 * `prefix` (undefined: too few bytes yet to tell). A body whose first bytes
 * already differ from `{"t":"<kind>"` keeps the base limit at once; one that
 * begins so gets the kind's limit, and a frame above even that is refused
 * naming it.
 */
function limitFor(length: number, prefix: Buffer, maxBytes: number, large: LargeFrameKind | undefined): number | undefined {
  if (length <= maxBytes || !large) return maxBytes;
  const marker = `{"t":${JSON.stringify(large.kind)}`;
  const have = prefix.subarray(0, Math.min(prefix.length, marker.length)).toString('latin1');
  if (!marker.startsWith(have)) return maxBytes;
  if (have.length < Math.min(length, marker.length)) return undefined;
  return !large.claim || large.claim() ? large.maxBytes : maxBytes;
}

/**
 * Reads one frame. Rejects a declared length above its limit before
 * buffering the body, a frame that does not arrive within timeoutMs (or
 * whose body takes longer than options.bodyTimeoutMs from its first byte),
 * and a stream that ends first.
 */
export function readFrame<T = Record<string, unknown>>(stream: Duplex, maxBytes: number, timeoutMs: number, options: ReadFrameOptions = {}): Promise<T> {
  const { large, bodyTimeoutMs } = options;
  return new Promise<T>((resolve, reject) => {
    let buffered: Buffer = Buffer.alloc(0);
    let done = false;
    let limit: number | undefined;
    let bodyTimer: NodeJS.Timeout | undefined;
    const finish = (err: Error | undefined, value?: T) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(bodyTimer);
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
        if (buffered.length === 0 && bodyTimeoutMs !== undefined && bodyTimer === undefined) {
          bodyTimer = setTimeout(() => finish(new FrameError('ETIMEDOUT', `frame not complete within ${bodyTimeoutMs} ms of its first byte`)), bodyTimeoutMs);
        }
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        if (buffered.length < LENGTH_BYTES) continue;
        const length = buffered.readUInt32BE(0);
        limit ??= limitFor(length, buffered.subarray(LENGTH_BYTES, LENGTH_BYTES + KIND_PREFIX_BYTES), maxBytes, large);
        if (limit === undefined) continue;
        if (length > limit) {
          const why = large && length <= large.maxBytes ? ` (only a ${large.kind}, whose body starts {"t":"${large.kind}", may have up to ${large.maxBytes}${large.claim ? ', and only on one stream at a time' : ''})` : '';
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

/** ms: the longest wait setTimeout takes (about 24.8 days): a control stream may stay quiet that long between frames. */
const FOREVER_MS = 2 ** 31 - 1;

/**
 * Reads frames one after another for the life of a control stream. Each is
 * handed to onMessage; a bad frame ends the loop with its error. The stream
 * may be quiet between frames, but a frame once begun must be complete
 * within bodyTimeoutMs.
 */
export async function readFrames(stream: Duplex, maxBytes: number, bodyTimeoutMs: number, onMessage: (m: Record<string, unknown>) => void): Promise<void> {
  for (;;) {
    const message = await readFrame(stream, maxBytes, FOREVER_MS, { bodyTimeoutMs });
    onMessage(message);
  }
}
