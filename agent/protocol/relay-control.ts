import { parseRelayEntry, formatRelayEntry, type RelayEntry } from '../config/relay-entry.ts';
import { errorMessage } from '../util/errors.ts';
import { FrameError } from './frames.ts';
import { MAX_ANNOUNCED_RELAYS } from './limits.ts';

// Messages a relay sends its agents on their control stream after the
// publish answer (docs/PROTOCOL.md, "Relay control messages"), and the one an
// agent sends back. Every entry is a pinned relay: the agent dials it and
// refuses it unless it proves that address.

/** Relay → agent: the pinned entries of the relays of its cluster (the agent may learn them). */
export interface RelayList {
  t: 'relays';
  relays: RelayEntry[];
}

/** Relay → agent: this relay retires; connect to one of these, then leave it. */
export interface Retire {
  t: 'retire';
  to: RelayEntry[];
}

/** Agent → relay, on the control stream of the session it leaves: it is connected to `to` now. */
export interface Moving {
  t: 'moving';
  to: RelayEntry;
}

export type RelayControl = RelayList | Retire;

function fail(what: string): never {
  throw new FrameError('EPROTO', `malformed message: ${what}`);
}

/** One pinned entry as the wire carries it: "0x<address>@host:port". */
function pinnedEntry(value: unknown, field: string): RelayEntry {
  if (typeof value !== 'string' || value.length > 300) fail(`${field} is not a relay entry`);
  let entry: RelayEntry;
  try {
    entry = parseRelayEntry(value);
  } catch (err) {
    return fail(`${field}: ${errorMessage(err)}`);
  }
  if (!entry.pin) fail(`${field} is not pinned (0x<relay address>@host:port)`);
  return entry;
}

function entryList(value: unknown, field: string, min: number): RelayEntry[] {
  if (!Array.isArray(value) || value.length < min || value.length > MAX_ANNOUNCED_RELAYS) {
    fail(`${field} must list ${min} to ${MAX_ANNOUNCED_RELAYS} relays`);
  }
  const seen = new Set<string>();
  const out: RelayEntry[] = [];
  value.forEach((v, i) => {
    const entry = pinnedEntry(v, `${field}[${i}]`);
    const key = formatRelayEntry(entry);
    if (!seen.has(key)) out.push(entry);
    seen.add(key);
  });
  return out;
}

/** A frame on the control stream after the publish answer, relay → agent. Unknown kinds are refused by the caller. */
export function parseRelayControl(m: Record<string, unknown>): RelayControl {
  if (m.t === 'relays') return { t: 'relays', relays: entryList(m.relays, 'relays.relays', 0) };
  if (m.t === 'retire') return { t: 'retire', to: entryList(m.to, 'retire.to', 1) };
  return fail(`unexpected control message "${String(m.t)}"`);
}

export function parseMoving(m: Record<string, unknown>): Moving {
  if (m.t !== 'moving') fail('expected moving');
  return { t: 'moving', to: pinnedEntry(m.to, 'moving.to') };
}

/** The wire form of these messages (entries as text). */
export function encodeRelayControl(message: RelayControl | Moving): Record<string, unknown> {
  if (message.t === 'relays') return { t: 'relays', relays: message.relays.map(formatRelayEntry) };
  if (message.t === 'retire') return { t: 'retire', to: message.to.map(formatRelayEntry) };
  return { t: 'moving', to: formatRelayEntry(message.to) };
}
