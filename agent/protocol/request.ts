import type { Duplex } from 'node:stream';
import { frameTaker, readFrame, writeFrame } from './frames.ts';
import { parseReply, type Reply } from './messages.ts';
import { MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS } from './limits.ts';

/** Why a stream header got no usable answer; `reply` is set when the peer answered with an error. */
export class HeaderRefused extends Error {
  readonly reply?: Extract<Reply, { t: 'error' }>;
  constructor(message: string, reply?: Extract<Reply, { t: 'error' }>) {
    super(message);
    this.name = 'HeaderRefused';
    this.reply = reply;
  }
}

/**
 * Sends a data stream's header and waits for its ok. On an error answer, a
 * malformed one or none within timeoutMs, the stream is destroyed and
 * HeaderRefused says why; on ok the stream is ready for bytes.
 */
export async function requestStream(stream: Duplex, header: object, timeoutMs = STREAM_HEADER_TIMEOUT_MS): Promise<Extract<Reply, { t: 'ok' }>> {
  writeFrame(stream, header);
  let reply: Reply;
  try {
    reply = parseReply(await readFrame(stream, MAX_STREAM_HEADER_BYTES, timeoutMs));
  } catch (err) {
    stream.destroy();
    throw new HeaderRefused(err instanceof Error ? err.message : String(err));
  }
  if (reply.t === 'error') {
    stream.destroy();
    throw new HeaderRefused(reply.message || reply.code, reply);
  }
  return reply;
}

/** A stream whose first inbound bytes can be taken before its reader sees them (MuxStream). */
export interface PrefixTappable extends Duplex {
  tapPrefix(tap: (chunk: Buffer) => Buffer | undefined): void;
}

/**
 * Sends a data stream's header and returns its answer as requestStream
 * does, but leaves the stream's readable side to a reader the caller
 * attaches at once: the answer frame is taken off in front of it
 * (tapPrefix), so the caller may send its next bytes (the end-to-end TLS
 * ClientHello) right behind the header, one round trip earlier. On an error
 * answer, a malformed one or none within timeoutMs, the stream is destroyed
 * and HeaderRefused says why.
 */
export function requestStreamAhead(stream: PrefixTappable, header: object, timeoutMs = STREAM_HEADER_TIMEOUT_MS): Promise<Extract<Reply, { t: 'ok' }>> {
  writeFrame(stream, header);
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (err: Error | undefined, reply?: Extract<Reply, { t: 'ok' }>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
      if (err) {
        stream.destroy();
        reject(err);
      } else resolve(reply!);
    };
    const onEnd = () => settle(new HeaderRefused('the peer closed the stream before sending its header'));
    const onError = (err: Error) => settle(new HeaderRefused(err.message));
    const timer = setTimeout(() => settle(new HeaderRefused(`no header within ${timeoutMs} ms`)), timeoutMs);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
    stream.once('error', onError);
    stream.tapPrefix(
      frameTaker(MAX_STREAM_HEADER_BYTES, (err, frame) => {
        if (err) return settle(new HeaderRefused(err.message));
        let reply: Reply;
        try {
          reply = parseReply(frame!);
        } catch (e) {
          return settle(new HeaderRefused(e instanceof Error ? e.message : String(e)));
        }
        if (reply.t === 'error') settle(new HeaderRefused(reply.message || reply.code, reply));
        else settle(undefined, reply);
      }),
    );
  });
}
