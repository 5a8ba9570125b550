import { UsageError } from '../util/errors.ts';
// Not protocol/names.ts (its MAX_CLAIM_NAMES is this): that loads the identity code and node:crypto into every command's flag table.
import { MAX_NAMES_PER_DEVICE as MAX_CLAIM_NAMES } from '../names/name.ts';
import { MAX_DATA_PER_SESSION } from '../protocol/limits.ts';

/**
 * names: a source may claim this many at once before its per-second rate
 * applies: after a relay restart every device behind one NAT claims again
 * within seconds. (Here, below claim-rate.ts, so that the flag table every
 * command loads does not load the relay's code.)
 */
export const NAME_CLAIM_BURST = 16;

/**
 * What one source, one session or one caller may hold on a relay. Every
 * bound has a refusal with a reason, a counter (RelayStats) and a log line.
 * A source is one IPv4 address or one IPv6 /64.
 */
export interface RelayLimits {
  /** Connections: TCP connections still in TLS or hello, in total (`--max-handshakes`). */
  maxHandshakes: number;
  /** Connections: the same, from one source (`--max-handshakes-per-ip`). */
  maxHandshakesPerIp: number;
  /** Sessions: authenticated agent sessions from one source (`--max-sessions-per-ip`); 4× from one IPv6 /56, 8× from one /48 (util/sources.ts). */
  maxSessionsPerIp: number;
  /** Sessions: authenticated agent sessions in total (`--max-sessions`): each holds tens of KiB and a descriptor. */
  maxSessions: number;
  /** Streams: streams one agent session may have open through the relay at once (`--max-streams-per-session`). */
  maxStreamsPerSession: number;
  /** Streams: streams one caller (an address, or a gateway source) may have open toward one device (`--max-streams-per-caller`). */
  maxStreamsPerCaller: number;
  /** Streams: of those, not yet answered by the device (`--max-pending-per-caller`). */
  maxPendingPerCaller: number;
  /** ms without a byte either way before a relayed stream is reset (`--stream-idle-timeout`, seconds). */
  streamIdleTimeoutMs: number;
  /**
   * Bytes all streams together may make the relay hold, from their first byte: partial frames, bytes
   * behind a header the device has not answered, what a stalled far side leaves in a stream's window
   * (`--stream-buffer-budget`, MiB). Over it the stream whose bytes arrive is reset; windows also stop
   * growing past 256 KiB once their growth alone would exceed it.
   */
  streamBufferBudget: number;
  /**
   * Bytes: the same for the streams of one agent session (`--session-buffer-budget`, MiB): its own and
   * those it asked the relay to open. 32 MiB: 64 streams started at once at their 256 KiB initial
   * window, both directions (the bench's 64-stream run needs that much for a moment).
   */
  sessionBufferBudget: number;
  /**
   * Bytes: the same for every session and gateway connection of one source, IPv4 address or IPv6 /64
   * (`--source-buffer-budget`, MiB). 48 MiB: with the relay's churn on top, 256 stalled streams from
   * one source keep the relay within 64 MiB of its resting RSS (test/relay-memory.test.ts).
   */
  sourceBufferBudget: number;
  /**
   * Bytes: the largest receive window one relayed stream grows to (`--max-stream-window`, MiB).
   * What a relay holds for a stream whose far side is slower is at most this window: kept small,
   * the relay's memory stays flat under bulk transfers (glibc keeps every high-water mark).
   */
  maxStreamWindow: number;
  /** ms the relay stops accepting agent connections once it is out of file descriptors. */
  acceptPauseMs: number;
  /** Names: how many names one address may hold (`--max-names-per-address`). */
  maxNamesPerAddress: number;
  /** Names: names one source may claim per second, after a burst of NAME_CLAIM_BURST (`--name-claims-per-ip`). */
  nameClaimsPerIp: number;
  /** ms a name stays reserved for its address after the device stopped publishing (`--name-hold-days`, days). */
  nameHoldMs: number;
  /**
   * Data connections: tokens outstanding plus data connections waiting in one session's pool
   * (`--max-data-per-session`; 0 = the relay takes no data connections, every stream stays on the
   * link). Agents keep 4 ready and grow their pools to the largest burst of new streams they saw
   * lately, up to 64 (DATA_POOL_MAX: a parallel scp, a browser's burst); the default lets such a
   * pool be held. What bounds the relay's sockets and memory is per source and in total
   * (--max-data-per-ip, --max-data-conns), which a larger per-session cap does not change.
   */
  maxDataPerSession: number;
  /** Data connections: waiting (unpaired) data connections from one source (`--max-data-per-ip`). */
  maxDataPerIp: number;
  /** Data connections: waiting (unpaired) data connections in total (`--max-data-conns`); each holds a file descriptor. */
  maxDataConns: number;
}

const DAY_MS = 86_400_000;
/** days: the longest name hold the flag accepts (ten years: a device in a drawer). */
const MAX_NAME_HOLD_DAYS = 3650;

export const DEFAULT_RELAY_LIMITS: Readonly<RelayLimits> = Object.freeze({
  maxHandshakes: 1024,
  maxHandshakesPerIp: 64,
  maxSessionsPerIp: 256,
  maxSessions: 60_000,
  maxStreamsPerSession: 1024,
  maxStreamsPerCaller: 256,
  maxPendingPerCaller: 32,
  streamIdleTimeoutMs: 15 * 60_000,
  streamBufferBudget: 256 * 1024 * 1024,
  sessionBufferBudget: 32 * 1024 * 1024,
  sourceBufferBudget: 48 * 1024 * 1024,
  maxStreamWindow: 4 * 1024 * 1024,
  acceptPauseMs: 1_000,
  maxNamesPerAddress: 1,
  nameClaimsPerIp: 1,
  nameHoldMs: 30 * DAY_MS,
  maxDataPerSession: 64,
  maxDataPerIp: 512,
  maxDataConns: 32_768,
});

const MIB = 1024 * 1024;
/** s: the longest stream idle timeout the flag accepts (a day). */
const MAX_IDLE_TIMEOUT_S = 86_400;

/** Refuses limits that cannot work, before anything listens. */
export function validateRelayLimits(l: RelayLimits): RelayLimits {
  const int = (n: number, what: string, min: number, max: number) => {
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`${what} must be an integer from ${min} to ${max} (got ${n})`);
  };
  int(l.maxHandshakes, '--max-handshakes', 1, 1_000_000);
  int(l.maxHandshakesPerIp, '--max-handshakes-per-ip', 1, l.maxHandshakes);
  int(l.maxSessions, '--max-sessions', 1, 10_000_000);
  int(l.maxSessionsPerIp, '--max-sessions-per-ip', 1, l.maxSessions);
  int(l.maxStreamsPerSession, '--max-streams-per-session', 1, 1_000_000);
  int(l.maxStreamsPerCaller, '--max-streams-per-caller', 1, 1_000_000);
  int(l.maxPendingPerCaller, '--max-pending-per-caller', 1, l.maxStreamsPerCaller);
  int(l.streamIdleTimeoutMs, 'stream idle timeout (ms)', 1, MAX_IDLE_TIMEOUT_S * 1000);
  // The three budgets nest (a session within its source, a source within the total); a larger inner one is cut to the outer.
  int(l.streamBufferBudget, 'stream buffer budget (bytes)', MIB, 1024 * 1024 * MIB);
  int(l.sourceBufferBudget, 'source buffer budget (bytes)', MIB, 1024 * 1024 * MIB);
  int(l.sessionBufferBudget, 'session buffer budget (bytes)', MIB, 1024 * 1024 * MIB);
  int(l.maxStreamWindow, 'max stream window (bytes)', MIB, 4095 * MIB);
  int(l.acceptPauseMs, 'accept pause (ms)', 1, 60_000);
  int(l.maxNamesPerAddress, '--max-names-per-address', 0, MAX_CLAIM_NAMES);
  int(l.nameClaimsPerIp, '--name-claims-per-ip', 1, 1_000_000);
  int(l.nameHoldMs, 'name hold (ms)', 1, MAX_NAME_HOLD_DAYS * DAY_MS);
  int(l.maxDataPerSession, '--max-data-per-session', 0, MAX_DATA_PER_SESSION);
  int(l.maxDataPerIp, '--max-data-per-ip', 0, 1_000_000);
  int(l.maxDataConns, '--max-data-conns', 0, 1_000_000);
  return l;
}

/** Flag values of `diode relay`, as the command table declares them. */
export interface RelayLimitFlags {
  'max-handshakes'?: string;
  'max-handshakes-per-ip'?: string;
  'max-sessions-per-ip'?: string;
  'max-sessions'?: string;
  'max-streams-per-session'?: string;
  'max-streams-per-caller'?: string;
  'max-pending-per-caller'?: string;
  'stream-idle-timeout'?: string;
  'stream-buffer-budget'?: string;
  'session-buffer-budget'?: string;
  'source-buffer-budget'?: string;
  'max-stream-window'?: string;
  'max-names-per-address'?: string;
  'name-claims-per-ip'?: string;
  'name-hold-days'?: string;
  'max-data-per-session'?: string;
  'max-data-per-ip'?: string;
  'max-data-conns'?: string;
}

function intFlag(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d{1,9}$/.test(value)) throw new UsageError(`--${flag}: "${value}" is not a whole number`);
  return Number(value);
}

/** Builds and validates the relay limits from `diode relay` flags. */
export function relayLimitsFromFlags(flags: RelayLimitFlags): RelayLimits {
  const d = DEFAULT_RELAY_LIMITS;
  const f = (name: keyof RelayLimitFlags, fallback: number) => intFlag(flags[name], name, fallback);
  return validateRelayLimits({
    ...d,
    maxHandshakes: f('max-handshakes', d.maxHandshakes),
    maxHandshakesPerIp: f('max-handshakes-per-ip', d.maxHandshakesPerIp),
    maxSessionsPerIp: f('max-sessions-per-ip', d.maxSessionsPerIp),
    maxSessions: f('max-sessions', d.maxSessions),
    maxStreamsPerSession: f('max-streams-per-session', d.maxStreamsPerSession),
    maxStreamsPerCaller: f('max-streams-per-caller', d.maxStreamsPerCaller),
    maxPendingPerCaller: f('max-pending-per-caller', d.maxPendingPerCaller),
    streamIdleTimeoutMs: f('stream-idle-timeout', d.streamIdleTimeoutMs / 1000) * 1000,
    streamBufferBudget: f('stream-buffer-budget', d.streamBufferBudget / MIB) * MIB,
    sessionBufferBudget: f('session-buffer-budget', d.sessionBufferBudget / MIB) * MIB,
    sourceBufferBudget: f('source-buffer-budget', d.sourceBufferBudget / MIB) * MIB,
    maxStreamWindow: f('max-stream-window', d.maxStreamWindow / MIB) * MIB,
    maxNamesPerAddress: f('max-names-per-address', d.maxNamesPerAddress),
    nameClaimsPerIp: f('name-claims-per-ip', d.nameClaimsPerIp),
    nameHoldMs: f('name-hold-days', d.nameHoldMs / DAY_MS) * DAY_MS,
    maxDataPerSession: f('max-data-per-session', d.maxDataPerSession),
    maxDataPerIp: f('max-data-per-ip', d.maxDataPerIp),
    maxDataConns: f('max-data-conns', d.maxDataConns),
  });
}

/** The command table's flag specs for these limits (name, default, what it bounds). */
export const RELAY_LIMIT_FLAGS: ReadonlyArray<{ name: keyof RelayLimitFlags; placeholder: string; defaultValue: string; description: string }> = [
  { name: 'max-handshakes', placeholder: 'N', defaultValue: String(DEFAULT_RELAY_LIMITS.maxHandshakes), description: 'agent connections still in TLS or hello, in total; over it: closed at once' },
  { name: 'max-handshakes-per-ip', placeholder: 'N', defaultValue: String(DEFAULT_RELAY_LIMITS.maxHandshakesPerIp), description: 'the same per IPv4 address / IPv6 /64 (4× per IPv6 /56, 8× per /48)' },
  { name: 'max-sessions', placeholder: 'N', defaultValue: String(DEFAULT_RELAY_LIMITS.maxSessions), description: 'authenticated agent sessions in total; over it: closed' },
  { name: 'max-sessions-per-ip', placeholder: 'N', defaultValue: String(DEFAULT_RELAY_LIMITS.maxSessionsPerIp), description: 'authenticated agent sessions per IPv4 address / IPv6 /64 (4× per IPv6 /56, 8× per /48); over it: closed' },
  { name: 'max-streams-per-session', placeholder: 'N', defaultValue: String(DEFAULT_RELAY_LIMITS.maxStreamsPerSession), description: 'streams one agent session may have open; over it: reset' },
  { name: 'max-streams-per-caller', placeholder: 'N', defaultValue: String(DEFAULT_RELAY_LIMITS.maxStreamsPerCaller), description: 'streams one caller (address or gateway IP) may have open toward one device; over it: "unavailable"' },
  { name: 'max-pending-per-caller', placeholder: 'N', defaultValue: String(DEFAULT_RELAY_LIMITS.maxPendingPerCaller), description: 'of those, streams the device has not answered yet' },
  { name: 'stream-idle-timeout', placeholder: 'SECONDS', defaultValue: String(DEFAULT_RELAY_LIMITS.streamIdleTimeoutMs / 1000), description: 'reset a relayed stream after this long with no byte either way' },
  { name: 'stream-buffer-budget', placeholder: 'MIB', defaultValue: String(DEFAULT_RELAY_LIMITS.streamBufferBudget / MIB), description: 'bytes all streams together may make the relay hold, from the first byte (partial frames, unanswered early bytes, stalled windows); over it the stream whose bytes arrive is reset, and windows stop growing' },
  { name: 'session-buffer-budget', placeholder: 'MIB', defaultValue: String(DEFAULT_RELAY_LIMITS.sessionBufferBudget / MIB), description: 'the same for the streams of one agent session (its own and those it asked for)' },
  { name: 'source-buffer-budget', placeholder: 'MIB', defaultValue: String(DEFAULT_RELAY_LIMITS.sourceBufferBudget / MIB), description: 'the same for all sessions and gateway connections of one IPv4 address / IPv6 /64' },
  { name: 'max-stream-window', placeholder: 'MIB', defaultValue: String(DEFAULT_RELAY_LIMITS.maxStreamWindow / MIB), description: 'the largest receive window one relayed stream grows to (what the relay may hold for it)' },
  { name: 'max-names-per-address', placeholder: 'N', defaultValue: String(DEFAULT_RELAY_LIMITS.maxNamesPerAddress), description: 'names one device address may hold (0: this relay takes no name claims)' },
  { name: 'name-claims-per-ip', placeholder: 'N', defaultValue: String(DEFAULT_RELAY_LIMITS.nameClaimsPerIp), description: `names one IPv4 address / IPv6 /64 may claim per second (after ${NAME_CLAIM_BURST} at once); over it: "unavailable", the device retries` },
  { name: 'name-hold-days', placeholder: 'DAYS', defaultValue: String(DEFAULT_RELAY_LIMITS.nameHoldMs / DAY_MS), description: 'days a name stays reserved for its device after it went offline' },
  { name: 'max-data-per-session', placeholder: 'N', defaultValue: String(DEFAULT_RELAY_LIMITS.maxDataPerSession), description: 'data connections (tokens issued plus connections waiting) per agent session; 0: no data connections, streams stay on the relay link' },
  { name: 'max-data-per-ip', placeholder: 'N', defaultValue: String(DEFAULT_RELAY_LIMITS.maxDataPerIp), description: 'waiting data connections per IPv4 address / IPv6 /64; over it: refused' },
  { name: 'max-data-conns', placeholder: 'N', defaultValue: String(DEFAULT_RELAY_LIMITS.maxDataConns), description: 'waiting data connections in total; over it: refused' },
];
