import type { Writable } from 'node:stream';

/** Uncorks due at the end of this turn, in the order their corks were taken. */
const dueUncorks: Array<() => void> = [];
let flushScheduled = false;

/**
 * Runs this turn's uncorks. An uncork can cork another stream (the splice
 * writes into a mux stream, whose session then corks its TLS socket); that
 * uncork joins this same flush instead of waiting a whole loop iteration
 * (an extra epoll and check phase per hop, measured on the relay).
 */
function flushUncorks(): void {
  for (let i = 0; i < dueUncorks.length; i++) dueUncorks[i]();
  dueUncorks.length = 0;
  flushScheduled = false;
}

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
    dueUncorks.push(uncork);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flushUncorks);
    }
  };
}
