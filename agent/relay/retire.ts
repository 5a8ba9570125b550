import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic-file.ts';
import { join } from 'node:path';
import { formatRelayEntry, parseRelayList, type RelayEntry } from '../config/relay-entry.ts';
import { DiodeError, UsageError, errorMessage } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
import type { RelayServer } from './server.ts';

/**
 * A relay that retires hands its agents over to other relays: every agent
 * with a control stream (now, and any that connects later) is told to move
 * (`retire`, docs/PROTOCOL.md); each connects to one of the named relays and
 * only then leaves, saying `moving`. The relay leaves its cluster's roster
 * at once, reports how many agents moved, and ends when no agent session is
 * left or at the deadline. The decision is kept in the state directory
 * (`retired.json`), so a restart (a service manager's, a reboot) retires
 * again instead of serving; the relay then exits with RETIRED_EXIT_CODE,
 * which its units list in RestartPreventExitStatus.
 */
export const RETIRED_FILE = 'retired.json';
/** Exit status of a relay whose retirement is complete: its service is not restarted (defined with the unit that lists it). */
export { RETIRED_EXIT_CODE } from '../ops/unit.ts';
/** s: default --retire-deadline (the agents' own limit for a session they left to finish its streams). */
export const DEFAULT_RETIRE_DEADLINE_S = 600;
/** s: the longest --retire-deadline accepted (a day). */
const MAX_RETIRE_DEADLINE_S = 86_400;
/** ms between progress lines while retiring. */
const PROGRESS_EVERY_MS = 5_000;
/** ms between checks for the last agent session to go. */
const CHECK_EVERY_MS = 250;
/**
 * ms after the relay started before "no agent left" can end a retirement: a
 * relay (re)started retiring (--retire-to at start, or retired.json after a
 * restart) has no agents yet; they come back within seconds of a relay
 * returning (their backoff is capped at 3 s) and are told to move then.
 */
export const RETIRE_GRACE_MS = 30_000;
const PROCESS_STARTED = Date.now();

export interface RetireOrder {
  to: RelayEntry[];
  deadlineS: number;
}

export interface RetireStatus {
  to: string[];
  /** ms since the epoch */
  since: number;
  /** ms since the epoch: the relay exits then at the latest */
  deadline: number;
  moved: number;
  /** agent sessions still connected */
  remaining: number;
}

/** --retire-to and --retire-deadline, checked: every relay named must be pinned, and not this relay. */
export function parseRetireOrder(toText: string | string[] | undefined, deadlineText: string | undefined, self: string): RetireOrder | undefined {
  const text = ([] as string[]).concat(toText ?? []).join(',');
  if (!text) {
    if (deadlineText !== undefined) throw new UsageError('--retire-deadline needs --retire-to 0x<relay>@host:port');
    return undefined;
  }
  const to = parseRelayList(text);
  if (to.length === 0) throw new UsageError(`--retire-to: no relay in "${text}"; give 0x<relay address>@host:port[,...]`);
  for (const entry of to) {
    if (!entry.pin) throw new UsageError(`--retire-to: "${formatRelayEntry(entry)}" is not pinned; write 0x<relay address>@${formatRelayEntry(entry)} (agents follow only pinned relays; diode relay prints its pinned form)`);
    if (entry.pin === self) throw new UsageError(`--retire-to: ${formatRelayEntry(entry)} is this relay itself; name the relays its agents should move to`);
  }
  let deadlineS = DEFAULT_RETIRE_DEADLINE_S;
  if (deadlineText !== undefined) {
    if (!/^\d{1,6}$/.test(deadlineText) || Number(deadlineText) < 1 || Number(deadlineText) > MAX_RETIRE_DEADLINE_S) {
      throw new UsageError(`--retire-deadline: "${deadlineText}" must be a whole number of seconds from 1 to ${MAX_RETIRE_DEADLINE_S}`);
    }
    deadlineS = Number(deadlineText);
  }
  return { to, deadlineS };
}

/** The order as a file: the retired record in the state directory, or the hand-over to a running relay. */
export function writeRetireOrder(path: string, order: RetireOrder): void {
  writeFileAtomic(path, JSON.stringify({ to: order.to.map(formatRelayEntry), deadlineS: order.deadlineS, at: Date.now() }) + '\n');
}

/** Reads an order file; undefined when there is none. A file that does not parse is an error naming it. */
export function readRetireOrder(path: string, self: string): RetireOrder | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new DiodeError('ERETIRE', `cannot read ${path}: ${errorMessage(err)}`);
  }
  try {
    const parsed = JSON.parse(text) as { to?: unknown; deadlineS?: unknown };
    const to = Array.isArray(parsed.to) ? parsed.to.map(String) : [];
    return parseRetireOrder(to, String(parsed.deadlineS ?? DEFAULT_RETIRE_DEADLINE_S), self);
  } catch (err) {
    throw new DiodeError('ERETIRE', `${path} is not a retirement this relay can follow (${errorMessage(err)}); fix or delete it`);
  }
}

export function retiredPath(home: string): string {
  return join(home, RETIRED_FILE);
}

/** One relay's retirement, from the order to its end. */
export class Retirement {
  readonly #server: RelayServer;
  readonly #order: RetireOrder;
  readonly #log: Logger;
  readonly #since = Date.now();
  readonly #deadline: number;
  readonly #movedBefore: number;
  readonly done: Promise<'empty' | 'deadline'>;
  #timers: NodeJS.Timeout[] = [];

  constructor(server: RelayServer, order: RetireOrder, log: Logger) {
    this.#server = server;
    this.#order = order;
    this.#log = log;
    this.#deadline = this.#since + order.deadlineS * 1000;
    this.#movedBefore = server.stats.get('agent_moved');
    this.done = new Promise((resolve) => {
      const check = setInterval(() => {
        if (server.registry.size === 0 && Date.now() - PROCESS_STARTED >= RETIRE_GRACE_MS) finish('empty');
        else if (Date.now() >= this.#deadline) finish('deadline');
      }, CHECK_EVERY_MS);
      const progress = setInterval(() => this.#progress(), PROGRESS_EVERY_MS);
      this.#timers = [check, progress];
      const finish = (how: 'empty' | 'deadline') => {
        for (const timer of this.#timers) clearInterval(timer);
        const s = this.status();
        this.#log.info(
          how === 'empty'
            ? `retired: ${s.moved} agent${s.moved === 1 ? '' : 's'} moved, none left`
            : `retired: deadline reached; ${s.moved} agent${s.moved === 1 ? '' : 's'} moved, ${s.remaining} session${s.remaining === 1 ? '' : 's'} still connected are closed`,
        );
        resolve(how);
      };
    });
  }

  /** Tells every agent to move and leaves the cluster's roster. */
  async start(): Promise<void> {
    const to = this.#order.to.map(formatRelayEntry).join(', ');
    this.#log.warn(`retiring: telling ${this.#server.controls.size} agent${this.#server.controls.size === 1 ? '' : 's'} to move to ${to}; exiting when none is left or at ${new Date(this.#deadline).toISOString()}`);
    this.#server.controls.retire(this.#order.to);
    await this.#server.directory.retire();
  }

  status(): RetireStatus {
    return {
      to: this.#order.to.map(formatRelayEntry),
      since: this.#since,
      deadline: this.#deadline,
      moved: this.#server.stats.get('agent_moved') - this.#movedBefore,
      remaining: this.#server.registry.size,
    };
  }

  #progress(): void {
    const s = this.status();
    this.#log.info(`retiring: ${s.moved} agent${s.moved === 1 ? '' : 's'} moved, ${s.remaining} session${s.remaining === 1 ? '' : 's'} still connected; deadline in ${Math.max(0, Math.round((s.deadline - Date.now()) / 1000))} s`);
  }
}
