import type { Writable } from 'node:stream';

/**
 * Uncorks due at the end of this turn, in two tiers: streams first (a
 * splice's destination, a mux stream), then connections (the socket a mux
 * session writes its frames to). A stream's uncork writes into its session,
 * so the connection's uncork must come after it: released the other way
 * round, a connection corked earlier in the turn (a reply, a window update)
 * would leave first and the stream's frames would follow in a second write
 * (another TLS record, syscall and wake-up of the peer).
 */
const dueStreams: Array<() => void> = [];
const dueConnections: Array<() => void> = [];
/** Connection uncorks held for one more round (turnCorker's `late`). */
const lateConnections: Array<() => void> = [];
let flushScheduled = false;

function runAll(list: Array<() => void>): void {
  for (let i = 0; i < list.length; i++) list[i]();
  list.length = 0;
}

/**
 * Runs this turn's uncorks. An uncork can cork another stream (the splice
 * writes into a mux stream, whose session then corks its TLS socket); that
 * uncork joins this same flush instead of waiting a whole loop iteration
 * (an extra epoll and check phase per hop, measured on the relay).
 */
function flushUncorks(): void {
  while (dueStreams.length > 0 || dueConnections.length > 0) {
    runAll(dueStreams);
    runAll(dueConnections);
  }
  flushScheduled = false;
  if (lateConnections.length > 0) {
    dueConnections.push(...lateConnections);
    lateConnections.length = 0;
    flushScheduled = true;
    setImmediate(flushUncorks);
  }
}

export interface TurnCork {
  /**
   * Holds `stream`'s writes until this turn's I/O callbacks are done. With
   * `late`, a connection's writes wait one more round of immediates, once:
   * for TLS over a mux stream during its handshake, whose socket hands its
   * next record over only in an immediate after the previous one was
   * written (Node's JSStreamSocket), so that both leave together.
   */
  (late?: boolean): void;
}

/**
 * Returns a `cork()` for `stream` that holds writes until this event-loop
 * turn's I/O callbacks are done (setImmediate), once per turn: what one
 * socket read delivers (several TLS records, frames cut at record
 * boundaries, pieces down to a few bytes) then leaves in one writev instead
 * of one syscall per piece. The next tick would be too soon: it runs after
 * each record's callback. `tier` orders the release (see dueStreams);
 * `beforeRelease` writes what the caller gathered in the turn (pump.ts).
 */
export function turnCorker(stream: Writable, tier: 'stream' | 'connection' = 'stream', beforeRelease?: () => void): TurnCork {
  let corked = false;
  let lateWanted = false;
  const due = tier === 'stream' ? dueStreams : dueConnections;
  const release = (): void => {
    corked = false;
    lateWanted = false;
    beforeRelease?.();
    stream.uncork();
  };
  const uncork = (): void => {
    if (lateWanted) {
      lateWanted = false;
      lateConnections.push(release);
      return;
    }
    release();
  };
  return (late = false) => {
    if (late && tier === 'connection') lateWanted = true;
    if (corked) return;
    corked = true;
    stream.cork();
    due.push(uncork);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flushUncorks);
    }
  };
}
