import type { Writable } from 'node:stream';

/**
 * Returns a `cork()` for `stream` that holds writes until this event-loop
 * turn's I/O callbacks are done (setImmediate), once per turn: what one
 * socket read delivers (several TLS records, frames cut at record
 * boundaries, pieces down to a few bytes) then leaves in one writev instead
 * of one syscall per piece. The next tick would be too soon: it runs after
 * each record's callback.
 */
export function turnCorker(stream: Writable): () => void {
  let corked = false;
  const uncork = (): void => {
    corked = false;
    stream.uncork();
  };
  return () => {
    if (corked) return;
    corked = true;
    stream.cork();
    setImmediate(uncork);
  };
}
