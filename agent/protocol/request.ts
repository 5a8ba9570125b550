import type { Duplex } from 'node:stream';
import { readFrame, writeFrame } from './frames.ts';
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
