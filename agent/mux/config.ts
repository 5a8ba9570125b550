import { INITIAL_STREAM_WINDOW, MAX_UINT32 } from './frame.ts';
import { MuxError } from './errors.ts';

export interface MuxConfig {
  /** Bytes: receive window per stream at start. The spec fixes 256 KiB as what the peer assumes; larger is announced with a window update. */
  initialWindow: number;
  /** Bytes: cap for adaptive window growth; also the largest data frame we accept. */
  maxWindow: number;
  /** Streams: inbound streams waiting for a 'stream' listener before new SYNs are answered with RST. */
  acceptBacklog: number;
  /** Streams: max concurrently open streams per session (both directions). */
  maxStreams: number;
  /**
   * Milliseconds without any byte from the peer after which we send it a
   * ping (so a quiet but live peer gives us something to read); 0 = no
   * keep-alive at all (no pings, no dead-path detection).
   */
  keepAliveInterval: number;
  /**
   * Milliseconds without any byte from the peer after which the path is
   * declared dead and the session closed. Any byte counts (data, window
   * updates, pings, answers), so a slow link that still delivers is never
   * declared dead. Must be larger than keepAliveInterval.
   */
  keepAliveTimeout: number;
  /**
   * Milliseconds that bytes queued on the connection may wait without any of
   * them being taken by the transport (the kernel's send buffer stays full:
   * nothing is acknowledged). Our equivalent of TCP_USER_TIMEOUT, which Node
   * cannot set; 0 = off.
   */
  writeTimeout: number;
  /**
   * Frames: control frames (ping ACKs, window updates, RSTs, FINs, SYNs)
   * queued while the connection is blocked. At this bound we stop reading
   * from the peer until the queue drains (a peer that never reads cannot
   * make us queue without end).
   */
  maxControlQueue: number;
  /** Milliseconds the control queue may stay at its bound before the session is closed with go-away. */
  controlStallTimeout: number;
  /** Bytes: largest data payload we put in one frame (keeps one stream from hogging the connection). */
  maxFrameData: number;
  /**
   * Milliseconds a stream destroyed after its own FIN (closed, not aborted)
   * waits for the peer's FIN before it is reset: it keeps its slot that long,
   * as a TCP socket in FIN_WAIT does, instead of throwing the peer's unread
   * bytes away with an immediate RST.
   */
  lingerTimeout: number;
}

export const defaultMuxConfig: Readonly<MuxConfig> = Object.freeze({
  initialWindow: INITIAL_STREAM_WINDOW,
  maxWindow: 16 * 1024 * 1024,
  acceptBacklog: 256,
  maxStreams: 4096,
  keepAliveInterval: 10_000,
  keepAliveTimeout: 25_000,
  writeTimeout: 20_000,
  maxControlQueue: 1024,
  controlStallTimeout: 10_000,
  maxFrameData: 64 * 1024,
  lingerTimeout: 10_000,
});

function check(ok: boolean, what: string): void {
  if (!ok) throw new MuxError('ECONFIG', `invalid mux config: ${what}`);
}

const isInt = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n);

/** Throws MuxError('ECONFIG') unless every field is usable; returns the config for chaining. */
export function validateMuxConfig(c: MuxConfig): MuxConfig {
  check(isInt(c.initialWindow) && c.initialWindow >= INITIAL_STREAM_WINDOW, `initialWindow must be an integer >= ${INITIAL_STREAM_WINDOW}`);
  check(isInt(c.maxWindow) && c.maxWindow >= c.initialWindow && c.maxWindow <= MAX_UINT32, 'maxWindow must be an integer in [initialWindow, 2^32-1]');
  check(isInt(c.acceptBacklog) && c.acceptBacklog >= 1, 'acceptBacklog must be an integer >= 1');
  check(isInt(c.maxStreams) && c.maxStreams >= 1, 'maxStreams must be an integer >= 1');
  check(isInt(c.keepAliveInterval) && c.keepAliveInterval >= 0, 'keepAliveInterval must be an integer >= 0 (ms)');
  check(isInt(c.keepAliveTimeout) && c.keepAliveTimeout >= 1, 'keepAliveTimeout must be an integer >= 1 (ms)');
  check(c.keepAliveInterval === 0 || c.keepAliveTimeout > c.keepAliveInterval, 'keepAliveTimeout must be larger than keepAliveInterval');
  check(isInt(c.writeTimeout) && c.writeTimeout >= 0, 'writeTimeout must be an integer >= 0 (ms)');
  check(isInt(c.maxControlQueue) && c.maxControlQueue >= 1, 'maxControlQueue must be an integer >= 1 (frames)');
  check(isInt(c.controlStallTimeout) && c.controlStallTimeout >= 1, 'controlStallTimeout must be an integer >= 1 (ms)');
  check(isInt(c.maxFrameData) && c.maxFrameData >= 1 && c.maxFrameData <= MAX_UINT32, 'maxFrameData must be an integer in [1, 2^32-1]');
  check(isInt(c.lingerTimeout) && c.lingerTimeout >= 1, 'lingerTimeout must be an integer >= 1 (ms)');
  return c;
}
