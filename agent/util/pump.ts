import { Socket } from 'node:net';
import { finished, type Duplex } from 'node:stream';
import { turnCorker } from './cork.ts';

const noop = (): void => {};

/**
 * Tears `s` down as an abort: a plain TCP socket is reset (RST), so the
 * program on its other end (nc, ssh, a browser) sees the failure at once
 * instead of an orderly FIN it would wait behind; a mux stream is reset
 * (RST); anything else (a TLS socket over a stream) is destroyed.
 */
export function abort(s: Duplex): void {
  s.on('error', noop);
  // A mux stream: reset() is the abort (its destroy() after end() is a graceful close).
  const resettable = s as Duplex & { reset?: () => void };
  if (typeof resettable.reset === 'function') return resettable.reset();
  if (s instanceof Socket && !s.destroyed) {
    try {
      s.resetAndDestroy(); // throws for a socket without a TCP handle (TLS over a mux stream)
      return;
    } catch {
      // fall through
    }
  }
  s.destroy();
}

/** Bytes a destination may hold queued before the source is paused (a socket's own mark is 16 KiB). */
const FORWARD_BUFFER = 128 * 1024;

/**
 * Copies `src` into `dst` like `src.pipe(dst)`, but batches writes: the
 * destination is corked for the rest of the event-loop turn (turnCorker).
 * Chunks are passed on as they are (no copy); a destination holding
 * FORWARD_BUFFER pauses the source, its 'drain' resumes it, and the
 * source's end ends the destination.
 */
function forward(src: Duplex, dst: Duplex): void {
  const cork = turnCorker(dst);
  src.on('data', (chunk: Buffer) => {
    cork();
    dst.write(chunk);
    if (dst.writableLength >= FORWARD_BUFFER) src.pause();
  });
  dst.on('drain', () => src.resume());
  src.once('end', () => dst.end());
  // As pipe() does: a source paused before (a handshake read in paused mode) starts flowing now.
  src.resume();
}

/**
 * Joins two duplex streams both ways: the tunnel's hot path.
 *
 * Backpressure holds end to end (the mux window on one side, the TCP window
 * on the other). An end in one direction is passed on as an end
 * (half-close), so `ssh` sending EOF while output still flows back works. If
 * either side fails or closes before ending (the tunnel died: session lost,
 * stream reset, relay gone), both are aborted: plain TCP legs are reset, not
 * ended, and nothing stays half-open.
 */
export function splice(a: Duplex, b: Duplex, onDone?: (err?: Error) => void): void {
  let settled = 0;
  let failed = false;
  const done = (err?: Error | null) => {
    if (err && !failed) {
      failed = true;
      abort(a);
      abort(b);
      onDone?.(err);
      return;
    }
    if (!err && ++settled === 2 && !failed) onDone?.();
  };
  forward(a, b);
  forward(b, a);
  // finished() reports an error or a premature close (closed without end).
  finished(a, (err) => done(err));
  finished(b, (err) => done(err));
}
