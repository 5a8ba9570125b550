import { FrameType, HEADER_LENGTH, VERSION, decodeHeader, newHeader, type FrameHeader } from './frame.ts';
import { MuxError } from './errors.ts';

/**
 * Called once per complete frame. `header` is reused between calls; `payload`
 * is a view into the received chunk (or, for a frame that spanned chunks, a
 * buffer of its own) and is empty for non-Data frames.
 */
export type FrameHandler = (header: FrameHeader, payload: Buffer) => void;

const EMPTY = Buffer.alloc(0);
const LAST_TYPE = FrameType.GoAway;

/**
 * Incremental yamux frame decoder. Feed it whatever the connection delivers;
 * it calls the handler for every complete frame. Zero-copy when a frame lies
 * inside one chunk; copies only a header or payload that spans chunks.
 */
export class FrameDecoder {
  private readonly header = newHeader();
  /** Holds a header split across chunks. */
  private readonly headerBuf = Buffer.allocUnsafe(HEADER_LENGTH);
  private headerFill = 0;
  /** Payload of a Data frame split across chunks, filled up to `payloadFill`. */
  private payload: Buffer | null = null;
  private payloadFill = 0;
  private stopped = false;

  /**
   * @param maxDataLength bytes: a Data frame longer than this is rejected as soon
   *   as its header is seen, before any of it is buffered.
   */
  constructor(
    private readonly maxDataLength: number,
    private readonly onFrame: FrameHandler,
  ) {}

  /** Bytes held for an incomplete frame. */
  get buffered(): number {
    return this.headerFill + this.payloadFill;
  }

  /** Stop delivering frames (the session is closing); later input is dropped. */
  stop(): void {
    this.stopped = true;
    this.payload = null;
  }

  /** Feed one chunk. Throws MuxError('EPROTOCOL') on a malformed frame. */
  push(chunk: Buffer): void {
    const end = chunk.length;
    let off = 0;
    while (off < end && !this.stopped) {
      if (this.payload !== null) {
        // Continue a Data payload that spans chunks.
        const n = Math.min(this.payload.length - this.payloadFill, end - off);
        chunk.copy(this.payload, this.payloadFill, off, off + n);
        this.payloadFill += n;
        off += n;
        if (this.payloadFill === this.payload.length) {
          const payload = this.payload;
          this.payload = null;
          this.payloadFill = 0;
          this.onFrame(this.header, payload);
        }
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
        this.onFrame(h, EMPTY);
      } else if (end - off >= h.length) {
        const payload = chunk.subarray(off, off + h.length);
        off += h.length;
        this.onFrame(h, payload);
      } else {
        // Spans chunks: the only place we copy. Length already bounded by validate().
        this.payload = Buffer.allocUnsafe(h.length);
        this.payloadFill = 0;
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
