import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic-file.ts';
import { join } from 'node:path';
import { formatRelayEntry, parseRelayEntry, type RelayEntry } from '../config/relay-entry.ts';
import { errorMessage } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';

/**
 * Relays an agent learned from the relays it pinned, kept in the state
 * directory (`learned-relays.json`, mode 0600) so a device that sat in a
 * drawer for years still knows where its relays went:
 *
 *     {"v":1,"relays":[{"relay":"0x…@host:port","lastSeen":<ms>,"from":"0x…"}],
 *      "retired":[{"address":"0x…","at":<ms>,"to":["0x…@host:port"]}]}
 *
 * - `relays`: pinned entries a relay named (its cluster, or where it retired
 *   to), newest `lastSeen` first. Age alone never removes one (a device may
 *   be offline for years); beyond MAX_LEARNED_RELAYS the least recently seen go.
 * - `retired`: relays that said they retire; the agent tries them last.
 *   A relay listed again by a pinned relay is back in service and leaves it.
 *
 * Several agents of one home (publish, socksd) share the file: every change
 * re-reads it first and writes it whole with a rename.
 */
export const LEARNED_RELAYS_FILE = 'learned-relays.json';
/** Entries kept: a cluster's relays several times over; the least recently seen go first. */
export const MAX_LEARNED_RELAYS = 32;
/** Retired relays remembered; the oldest go first. */
export const MAX_RETIRED_RELAYS = 32;
/**
 * ms the configured relays must have failed (no session on any of them)
 * before the learned ones are dialled too. A relay restart is over well
 * within it; a relay that moved or retired for good is not. A learned relay
 * never displaces a configured one: once a configured relay answers again
 * the link moves back to it.
 */
export const LEARNED_RELAY_DELAY_MS = 30_000;
/** bytes: a larger file is not read (it was not written by diode). */
const MAX_FILE_BYTES = 64 * 1024;
/** ms: a relay seen again updates its `lastSeen` on disk at most this often (SD cards wear; the figure is for people). */
const LAST_SEEN_RESOLUTION_MS = 24 * 3_600_000;

export interface LearnedRelay {
  entry: RelayEntry;
  /** ms since the epoch: when a relay last named it. */
  lastSeen: number;
  /** The pinned relay that named it. */
  from: string;
}

export interface RetiredRelay {
  address: string;
  at: number;
  to: string[];
}

interface FileShape {
  relays: LearnedRelay[];
  retired: RetiredRelay[];
}

export function learnedRelaysPath(home: string): string {
  return join(home, LEARNED_RELAYS_FILE);
}

const ADDRESS = /^0x[0-9a-fA-F]{40}$/;

/** Reads the file; anything malformed in it is dropped entry by entry (`problem` says what was). */
export function readLearnedRelays(home: string): FileShape & { problem?: string } {
  const path = learnedRelaysPath(home);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { relays: [], retired: [] };
    return { relays: [], retired: [], problem: `cannot read ${path}: ${errorMessage(err)}` };
  }
  if (text.length > MAX_FILE_BYTES) return { relays: [], retired: [], problem: `${path} is larger than ${MAX_FILE_BYTES} bytes; ignored` };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { relays: [], retired: [], problem: `${path} is not valid JSON; ignored (it is rewritten when a relay is learned)` };
  }
  const raw = (parsed ?? {}) as { relays?: unknown; retired?: unknown };
  const relays: LearnedRelay[] = [];
  for (const r of Array.isArray(raw.relays) ? raw.relays : []) {
    const item = (r ?? {}) as Record<string, unknown>;
    try {
      const entry = parseRelayEntry(String(item.relay));
      if (!entry.pin || typeof item.lastSeen !== 'number' || typeof item.from !== 'string' || !ADDRESS.test(item.from)) continue;
      relays.push({ entry, lastSeen: item.lastSeen, from: item.from });
    } catch {
      // a bad entry is dropped, the others kept
    }
  }
  const retired: RetiredRelay[] = [];
  for (const r of Array.isArray(raw.retired) ? raw.retired : []) {
    const item = (r ?? {}) as Record<string, unknown>;
    if (typeof item.address !== 'string' || !ADDRESS.test(item.address) || typeof item.at !== 'number') continue;
    retired.push({ address: item.address, at: item.at, to: Array.isArray(item.to) ? item.to.filter((x): x is string => typeof x === 'string').slice(0, 16) : [] });
  }
  relays.sort((a, b) => b.lastSeen - a.lastSeen);
  return { relays: relays.slice(0, MAX_LEARNED_RELAYS), retired: retired.slice(-MAX_RETIRED_RELAYS) };
}

const sameAddress = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

/** The learned relays of one state directory, as one agent uses them. */
export class LearnedRelays {
  readonly #home: string;
  readonly #log: Logger;
  #state: FileShape;

  constructor(home: string, log: Logger) {
    this.#home = home;
    this.#log = log;
    const read = readLearnedRelays(home);
    if (read.problem) log.warn(read.problem);
    this.#state = read;
  }

  /** Newest first. */
  get relays(): readonly LearnedRelay[] {
    return this.#state.relays;
  }

  get retired(): readonly RetiredRelay[] {
    return this.#state.retired;
  }

  isRetired(address: string | undefined): boolean {
    return address !== undefined && this.#state.retired.some((r) => sameAddress(r.address, address));
  }

  /**
   * Entries a pinned relay (`from`) named: new ones are added, known ones seen
   * again. A relay named again is back in service (no longer retired). Returns
   * the entries that were new.
   */
  learn(entries: readonly RelayEntry[], from: string, now = Date.now()): RelayEntry[] {
    const added: RelayEntry[] = [];
    this.#update((state) => {
      let changed = false;
      for (const entry of entries) {
        const key = formatRelayEntry(entry);
        const known = state.relays.find((r) => formatRelayEntry(r.entry) === key);
        if (known) {
          if (now - known.lastSeen >= LAST_SEEN_RESOLUTION_MS) {
            known.lastSeen = now;
            known.from = from;
            changed = true;
          }
        } else {
          state.relays.push({ entry, lastSeen: now, from });
          added.push(entry);
          changed = true;
        }
        const before = state.retired.length;
        state.retired = state.retired.filter((r) => !sameAddress(r.address, entry.pin!));
        changed ||= state.retired.length !== before;
      }
      state.relays.sort((a, b) => b.lastSeen - a.lastSeen);
      state.relays = state.relays.slice(0, MAX_LEARNED_RELAYS);
      return changed;
    });
    return added;
  }

  /** `address` said it retires (to `to`): it is tried last from now on. */
  markRetired(address: string, to: readonly RelayEntry[], now = Date.now()): void {
    this.#update((state) => {
      if (state.retired.some((r) => sameAddress(r.address, address))) return false;
      state.retired.push({ address, at: now, to: to.map(formatRelayEntry) });
      state.retired = state.retired.slice(-MAX_RETIRED_RELAYS);
      return true;
    });
  }

  /** Re-reads the file (another agent of this home may have changed it), applies `change`, writes it if it changed. */
  #update(change: (state: FileShape) => boolean): void {
    const current = readLearnedRelays(this.#home);
    const state: FileShape = current.problem ? this.#state : current;
    if (!change(state)) {
      this.#state = state;
      return;
    }
    this.#state = state;
    const body = {
      v: 1,
      relays: state.relays.map((r) => ({ relay: formatRelayEntry(r.entry), lastSeen: r.lastSeen, from: r.from })),
      retired: state.retired,
    };
    try {
      writeFileAtomic(learnedRelaysPath(this.#home), JSON.stringify(body, null, 1) + '\n');
    } catch (err) {
      this.#log.warn(`cannot save the learned relays: ${errorMessage(err)} (they are used until the agent stops)`);
    }
  }
}
