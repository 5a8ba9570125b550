import { finished, type Duplex } from 'node:stream';

/**
 * Joins two duplex streams both ways: the tunnel's hot path.
 *
 * `pipe` moves the chunks it is given without copying and stops reading when
 * the destination's buffer is full (backpressure end to end: the mux window
 * on one side, the TCP window on the other). An end in one direction is
 * passed on as an end (half-close), so `ssh` sending EOF while output still
 * flows back works. If either side fails or closes before ending, both are
 * destroyed: nothing stays half-open.
 */
export function splice(a: Duplex, b: Duplex, onDone?: (err?: Error) => void): void {
  let settled = 0;
  let failed = false;
  const done = (err?: Error | null) => {
    if (err && !failed) {
      failed = true;
      a.destroy();
      b.destroy();
      onDone?.(err);
      return;
    }
    if (!err && ++settled === 2 && !failed) onDone?.();
  };
  a.pipe(b);
  b.pipe(a);
  // finished() reports an error or a premature close (closed without end).
  finished(a, (err) => done(err));
  finished(b, (err) => done(err));
}
