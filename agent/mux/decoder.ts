import { FrameType, HEADER_LENGTH, VERSION, decodeHeader, newHeader, type FrameHeader } from './frame.ts';
import { MuxError } from './errors.ts';

/**
 * Called for every frame, and for a Data frame whose payload spans chunks
 * once per piece: `first` on the piece that came with the header (possibly
 * empty), `last` on the piece that completes the payload. A frame inside one
 * chunk is a single call with both set. `header` is reused between frames;
 * `payload` is always a view into a received chunk (never a copy) and is
 * empty for non-Data frames.
 */
export type FrameHandler = (header: FrameHeader, payload: Buffer, first: boolean, last: boolean) => void;

const EMPTY = Buffer.alloc(0);
const LAST_TYPE = FrameType.GoAway;

/**
 * Incremental yamux frame decoder. Feed it whatever the connection delivers;
 * it calls the handler for every frame. Payloads are never copied: a Data
 * frame that spans chunks (the usual case behind TLS, which delivers 16 KiB
 * records while frames carry up to 64 KiB) is handed on piece by piece as
 * views. Only a header split across chunks is copied (12 bytes).
 */
export class FrameDecoder {
  private readonly header = newHeader();
  /** Holds a header split across chunks. */
  private readonly headerBuf = Buffer.allocUnsafe(HEADER_LENGTH);
  private headerFill = 0;
  /** Bytes of the current Data payload still to come in later chunks. */
  private dataRemaining = 0;
  private stopped = false;

  /**
   * @param maxDataLength bytes: a Data frame longer than this is rejected as soon
   *   as its header is seen, before any of it is buffered.
   */
  constructor(
    private readonly maxDataLength: number,
    private readonly onFrame: FrameHandler,
  ) {}

  /** Bytes held for an incomplete frame (only ever a partial header). */
  get buffered(): number {
    return this.headerFill;
  }

  /** Stop delivering frames (the session is closing); later input is dropped. */
  stop(): void {
    this.stopped = true;
    this.dataRemaining = 0;
  }

  /** Feed one chunk. Throws MuxError('EPROTOCOL') on a malformed frame. */
  push(chunk: Buffer): void {
    const end = chunk.length;
    let off = 0;
    while (off < end && !this.stopped) {
      if (this.dataRemaining > 0) {
        // Continue a Data payload that spans chunks.
        const n = Math.min(this.dataRemaining, end - off);
        this.dataRemaining -= n;
        const piece = chunk.subarray(off, off + n);
        off += n;
        this.onFrame(this.header, piece, false, this.dataRemaining === 0);
        continue;
      }
      if (this.headerFill === 0 && end - off >= HEADER_LENGTH) {
        decodeHeader(chunk, off, this.header);
        off += HEADER_LENGTH;
      } else {
        const n = Math.min(HEADER_LENGTH - this.headerFill, end - off);
        chunk.copy(this.headerBuf, this.headerFill, off, off + n);
        this.headerFill += n;
        off += n;
        if (this.headerFill < HEADER_LENGTH) return;
        this.headerFill = 0;
        decodeHeader(this.headerBuf, 0, this.header);
      }
      const h = this.header;
      this.validate(h);
      if (h.type !== FrameType.Data || h.length === 0) {
        this.onFrame(h, EMPTY, true, true);
      } else if (end - off >= h.length) {
        const payload = chunk.subarray(off, off + h.length);
        off += h.length;
        this.onFrame(h, payload, true, true);
      } else {
        // Spans chunks: hand on what is here, the rest as it arrives.
        const piece = chunk.subarray(off, end);
        this.dataRemaining = h.length - piece.length;
        off = end;
        this.onFrame(h, piece, true, false);
      }
    }
  }

  private validate(h: FrameHeader): void {
    if (h.version !== VERSION) throw new MuxError('EPROTOCOL', `unsupported yamux version ${h.version}`);
    if (h.type > LAST_TYPE) throw new MuxError('EPROTOCOL', `unknown frame type ${h.type}`);
    if (h.type === FrameType.Data && h.length > this.maxDataLength) {
      throw new MuxError('EPROTOCOL', `data frame of ${h.length} bytes exceeds the limit of ${this.maxDataLength}`);
    }
  }
}
