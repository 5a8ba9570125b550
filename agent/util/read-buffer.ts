import { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';

/**
 * Reads of a plain TCP socket into a buffer the reader reuses, instead of
 * the fresh 64 KiB ArrayBuffer Node allocates for every read: a relay's
 * splice did ≈ 16,800 reads per GiB, and the young generation's scavenges
 * and the ArrayBuffers' sweeping were 17 % of its CPU (`--cpu-prof`).
 *
 * This is net.Socket's `onread: { buffer, callback }` option (Node ≥ 12.2),
 * which only a socket the caller constructs takes: the relay's and the
 * device's sockets come from a server's accept and from earlier reads in
 * the ordinary mode. So the same three fields the constructor sets are set
 * on the live socket (found by their symbols' names, which Node 20's
 * `lib/internal/stream_base_commons.js` defines: kBuffer, kBufferGen,
 * kBufferCb), and its handle is switched with `useUserBuffer`, as
 * `initSocketHandle` does. From then on Node's own code runs each read:
 * `onStreamRead` calls the callback with the bytes read, asks kBufferGen
 * for the buffer of the next read, and `pause()`/`resume()` stop and start
 * the handle (a socket in this mode holds nothing in its readable buffer).
 * Where any of it is missing (another Node), nothing is switched and the
 * socket keeps its 'data' events.
 *
 * The contract that keeps bytes intact: a chunk passed to `onChunk` is a
 * view of the buffer the next read overwrites. A reader that keeps it
 * beyond the callback (a write that did not leave at once, see `taken`)
 * calls `lend()`; the next read then goes into a new buffer, and the lent
 * one belongs to whoever holds it.
 */
export interface ReusedReads {
  /** The chunk just delivered is kept by the reader: the next read takes a new buffer. */
  lend(): void;
}

interface Fields {
  buffer: symbol;
  gen: symbol;
  cb: symbol;
}

let fields: Fields | null | undefined;

/** The socket fields of Node's onread mode, by their symbols' names (null: not this Node). */
function fieldsOf(socket: Socket): Fields | null {
  if (fields !== undefined) return fields;
  const byName = new Map(Object.getOwnPropertySymbols(socket).map((s) => [s.description, s]));
  const buffer = byName.get('kBuffer');
  const gen = byName.get('kBufferGen');
  const cb = byName.get('kBufferCb');
  fields = buffer && gen && cb ? { buffer, gen, cb } : null;
  return fields;
}

type Handle = { useUserBuffer?: (buf: Uint8Array) => void };

/** Bytes of the small buffer of reuseReads, for a read that may take no more. */
const SMALL_READ_BYTES = 16 * 1024;
/** Bytes of the read right after a lend by a paused source (see reuseReads): the reused buffers come back with the read after it. */
const AFTER_LEND_BYTES = 4 * 1024;

/**
 * Switches `socket` (a plain TCP socket, open, in ordinary mode) to reads
 * into reused buffers of `size` bytes, each delivered to `onChunk`; with
 * `limit`, each read takes at most what it answers (asked before each read);
 * while `shed` answers true the reused buffers are let go (a source paused
 * under a pressed budget: hundreds of stalled streams would each keep theirs).
 * Undefined where it cannot (a TLS socket, a socket without a TCP handle,
 * one already switched, a Node without the fields).
 */
export function reuseReads(socket: Socket, size: number, onChunk: (chunk: Buffer) => void, limit?: () => number, shed?: () => boolean): ReusedReads | undefined {
  if (!(socket instanceof Socket) || socket instanceof TLSSocket || socket.destroyed || socket.connecting) return undefined;
  const handle = (socket as Socket & { _handle?: Handle })._handle;
  const f = fieldsOf(socket);
  if (!f || typeof handle?.useUserBuffer !== 'function') return undefined;
  const own = socket as unknown as Record<symbol, unknown>;
  if (!(f.buffer in own) || own[f.buffer] !== null) return undefined;
  /** The full-size buffer and a small one (SMALL_READ_BYTES), each reused until lent. */
  let buffer: Buffer | undefined = Buffer.allocUnsafeSlow(size);
  let small: Buffer | undefined;
  /** The buffer of the read just delivered. */
  let last: Buffer | undefined = buffer;
  let lent = false;
  own[f.gen] = () => {
    const afterLend = lent;
    if (lent) {
      lent = false;
      if (last === buffer) buffer = undefined;
      else if (last === small) small = undefined;
    }
    const n = Math.min(limit?.() ?? size, size);
    // The read right after a lend by a paused source goes into a buffer of its own, a small one: a
    // full-size buffer taken then would sit there (resident) for as long as a stall lasts (with 512
    // stalled data connections the relay's RSS was 25 MiB higher so). Not while the source flows:
    // small reads of a bulk flow look like a trickle to the splice, which then holds its reading
    // (single stream 69 MB/s in a bench run, socksd 2.9 s/GiB). A read that may take little (a pressed budget) goes into the small
    // reused buffer: a lent buffer stays whole in memory for whatever part of it waits in a queue.
    if (shed?.()) {
      buffer = small = undefined;
      return (last = Buffer.allocUnsafeSlow(AFTER_LEND_BYTES));
    }
    if (afterLend && socket.isPaused()) return (last = Buffer.allocUnsafeSlow(AFTER_LEND_BYTES));
    if (n <= SMALL_READ_BYTES) {
      small ??= Buffer.allocUnsafeSlow(SMALL_READ_BYTES);
      return (last = small);
    }
    buffer ??= Buffer.allocUnsafeSlow(size);
    last = buffer;
    return n < size ? buffer.subarray(0, n) : buffer;
  };
  own[f.cb] = (n: number, buf: Buffer) => {
    onChunk(buf.subarray(0, n));
  };
  own[f.buffer] = buffer;
  handle.useUserBuffer(buffer);
  return { lend: () => void (lent = true) };
}

/**
 * Where chunks written to `dst` can be known to be off our hands once
 * write() returned: a plain TCP socket (libuv's try_write sent them to the
 * kernel, or they stay counted in writableLength until their callback:
 * Node keeps a reference, never a copy, of a queued chunk) and a TLS
 * socket (its TLSWrap copies the cleartext into OpenSSL, or into a buffer
 * of its own, inside the write call, when Node's stream hands it over at
 * once). Anything else (a mux stream) may keep the chunk: no reuse.
 */
export function reusableInto(dst: unknown): dst is Socket {
  return dst instanceof Socket;
}

/**
 * Called right before `dst.write(chunk)`: true when the chunk will go
 * straight to the handle (nothing queued in Node's stream, not corked, not
 * connecting). What `taken` needs for a TLS socket, whose writes complete
 * only in a later turn.
 */
export function straight(dst: Socket): boolean {
  return dst.writableLength === 0 && dst.writableCorked === 0 && !dst.connecting;
}

/**
 * Called right after `dst.write(chunk)` with straight()'s answer from
 * before it: true when the chunk's bytes are off our hands, so its buffer
 * may be read into again. A plain TCP socket: the kernel took all of it
 * (a partial or queued write stays in writableLength until its callback).
 * A TLS socket: it went straight to the handle, whose write copied it.
 */
export function taken(dst: Socket, wasStraight: boolean): boolean {
  return dst instanceof TLSSocket ? wasStraight : dst.writableLength === 0;
}

/**
 * A TLS socket's cleartext gathered into slabs the reader reuses. Node's
 * TLSWrap hands over what it decrypts one record at a time (≤ 16 KiB,
 * SSL_read into a stack buffer, then a fresh ArrayBuffer and a copy per
 * record): four allocations, stream events and writes per 64 KiB. Here
 * each record is copied by TLSWrap into the slab right behind the one
 * before (the kBuffer fields as in reuseReads; TLSWrap is a StreamBase
 * too), and what a turn gathered leaves in one write (`flush`).
 *
 * A slab is never read into again before every write of it completed: a
 * full slab is flushed and left for the next one (the spare, once its
 * writes are done, else a new slab), so two slabs alternate in a steady
 * flow and a slow writer holds at most what backpressure lets it queue.
 */
export interface GatheredReads {
  /** Bytes read and not yet handed to `write`. */
  readonly unflushed: number;
  /** Hands what was read since the last flush to `write` (one region of one slab), if anything. */
  flush(): void;
}

interface Slab {
  buffer: Buffer;
  /** Writes of this slab not completed yet. */
  pending: number;
  done: () => void;
}

function newSlab(size: number): Slab {
  const slab: Slab = { buffer: Buffer.allocUnsafeSlow(size), pending: 0, done: () => void slab.pending-- };
  return slab;
}

/** Bytes below which a slab's room is not offered to a read (a TLS record's cleartext is at most 16 KiB). */
const MIN_ROOM = 16 * 1024;

/**
 * Switches `socket` (a TLS socket, secure, in ordinary mode) to gathered
 * reads into slabs of `size` bytes: `onRead(n)` after each record,
 * `write(region, done)` on flush, `done` to be called once the region's
 * bytes are off the writer's hands (a write callback). Undefined where it
 * cannot.
 */
export function gatherReads(socket: TLSSocket, size: number, onRead: (n: number) => void, write: (region: Buffer, done: () => void) => void): GatheredReads | undefined {
  if (!(socket instanceof TLSSocket) || socket.destroyed) return undefined;
  const handle = (socket as Socket & { _handle?: Handle })._handle;
  const f = fieldsOf(socket);
  if (!f || typeof handle?.useUserBuffer !== 'function') return undefined;
  const own = socket as unknown as Record<symbol, unknown>;
  if (!(f.buffer in own) || own[f.buffer] !== null) return undefined;
  let slab = newSlab(size);
  let spare: Slab | undefined;
  /** The region read and not flushed: [start, end) of the current slab. */
  let start = 0;
  let end = 0;
  const gathered: GatheredReads = {
    get unflushed() {
      return end - start;
    },
    flush() {
      if (end === start) return;
      slab.pending++;
      const region = slab.buffer.subarray(start, end);
      start = end;
      write(region, slab.done);
    },
  };
  own[f.gen] = () => {
    if (size - end >= MIN_ROOM) return slab.buffer.subarray(end);
    gathered.flush();
    const next = spare && spare.pending === 0 ? spare : newSlab(size);
    spare = slab;
    slab = next;
    start = end = 0;
    return slab.buffer;
  };
  own[f.cb] = (n: number) => {
    end += n;
    onRead(n);
  };
  own[f.buffer] = slab.buffer;
  handle.useUserBuffer(slab.buffer);
  return gathered;
}
