import type { AgentSession } from './registry.ts';

/**
 * ms a publishing session has, once a newer session of its address
 * published here, to show that its path still works (the answer to a ping,
 * or any bytes). A round trip on a working path, a mobile one included, is
 * far below; a device whose address changed has already given up the old
 * connection and reconnected (that is the newer session), so the old one
 * answers nothing.
 */
export const SUPERSEDED_PING_MS = 2_000;

/**
 * Checks a publishing session that a newer one of the same address just
 * replaced: pings it, and calls `onDead` with the reason if neither the
 * answer nor any other bytes arrive within SUPERSEDED_PING_MS. Closing it
 * then resets its streams, so the callers on them (an ssh through socksd)
 * see the end at once, not when the keep-alive expires (≈ 25 s).
 */
export function checkSuperseded(session: AgentSession, onDead: (why: string) => void): void {
  const mux = session.mux;
  if (mux.closed) return;
  const received = mux.chunksReceived;
  let answered = false;
  mux.ping().then(
    () => (answered = true),
    () => {},
  );
  setTimeout(() => {
    if (answered || mux.closed || mux.chunksReceived !== received) return;
    onDead(`a newer session of the address published and this one did not answer a ping within ${SUPERSEDED_PING_MS} ms: its path is dead`);
  }, SUPERSEDED_PING_MS).unref();
}
