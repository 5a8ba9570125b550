import type { MuxStream, StreamHoldHook } from '../mux/index.ts';
import type { SpliceMeter } from '../util/pump.ts';

/**
 * Bytes a peer makes the relay hold, from the first byte: partial frames,
 * bytes sent behind a header before the device answered, and whatever a
 * relayed stream holds because its far side reads slower than its near side
 * sends (up to its window, both directions). What one session, one source
 * (IPv4 address or IPv6 /64) and everyone together may hold is capped; a
 * stream whose bytes arrive over a cap is reset, and the refusal counted.
 * Idle streams hold nothing, so the caps bound memory, not concurrency.
 */
export type HoldLevel = 'session' | 'source' | 'total';

/** Bytes: the caps of HoldBudget. */
export interface HoldLimits {
  session: number;
  source: number;
  total: number;
}

/**
 * Share of a budget above which its streams stop growing their windows and
 * shrink them as they grant them again (below the spec's 256 KiB): honest
 * streams that flow slow down instead of reaching the cap, where the next
 * stream to bring bytes is reset.
 */
const PRESSED_SHARE = 0.5;

/** Hears of each refusal: the level whose cap was hit and the holder that hit it. */
export type HoldRefused = (level: HoldLevel, holder: Holder) => void;

/** The relay's ledger: bytes held per source and in total, and the holders (one per session or gateway connection). */
export class HoldBudget {
  readonly limits: Readonly<HoldLimits>;
  readonly #bySource = new Map<string, number>();
  readonly #onRefused: HoldRefused;
  #total = 0;

  constructor(limits: HoldLimits, onRefused: HoldRefused) {
    this.limits = Object.freeze({ ...limits });
    this.#onRefused = onRefused;
  }

  /** Bytes held now, by everyone. */
  get used(): number {
    return this.#total;
  }

  /** Bytes held now by `source`. */
  usedBy(source: string): number {
    return this.#bySource.get(source) ?? 0;
  }

  /**
   * A holder for one session (or gateway connection) from `source`; `who`
   * names it in the refusal line. `sessionCap` replaces the per-session cap
   * and `sourced` false exempts it from the per-source cap: for the streams
   * another relay of the cluster forwards, whose callers that relay
   * charges, only the total applies.
   */
  holder(source: string, who: string, options: { sessionCap?: number; sourced?: boolean } = {}): Holder {
    return new Holder(this, source, who, options.sessionCap ?? this.limits.session, options.sourced !== false);
  }

  /** @internal */
  _take(holder: Holder, bytes: number): HoldLevel | undefined {
    const sourceUsed = holder.sourced ? (this.#bySource.get(holder.source) ?? 0) : 0;
    let level: HoldLevel | undefined;
    if (holder.used + bytes > holder.cap) level = 'session';
    else if (holder.sourced && sourceUsed + bytes > this.limits.source) level = 'source';
    else if (this.#total + bytes > this.limits.total) level = 'total';
    if (level !== undefined) {
      this.#onRefused(level, holder);
      return level;
    }
    this._add(holder, bytes);
    return undefined;
  }

  /** @internal Whether `holder`, its source or everyone holds at least PRESSED_SHARE of the budget. */
  _pressed(holder: Holder): boolean {
    return (
      holder.used >= holder.cap * PRESSED_SHARE ||
      (holder.sourced && (this.#bySource.get(holder.source) ?? 0) >= this.limits.source * PRESSED_SHARE) ||
      this.#total >= this.limits.total * PRESSED_SHARE
    );
  }

  /** @internal Adds (or, negative, gives back) bytes without a check. */
  _add(holder: Holder, bytes: number): void {
    holder.used += bytes;
    this.#total += bytes;
    if (!holder.sourced) return;
    const n = (this.#bySource.get(holder.source) ?? 0) + bytes;
    if (n <= 0) this.#bySource.delete(holder.source);
    else this.#bySource.set(holder.source, n);
  }
}

/** What one session (or gateway connection) holds. */
export class Holder {
  used = 0;
  readonly #budget: HoldBudget;
  readonly source: string;
  readonly who: string;
  readonly cap: number;
  readonly sourced: boolean;

  /** @internal Made by HoldBudget.holder. */
  constructor(budget: HoldBudget, source: string, who: string, cap: number, sourced: boolean) {
    this.#budget = budget;
    this.source = source;
    this.who = who;
    this.cap = cap;
    this.sourced = sourced;
  }

  /** Takes `bytes` if every cap allows; else says which did not (the refusal is reported) and takes nothing. */
  take(bytes: number): HoldLevel | undefined {
    return this.#budget._take(this, bytes);
  }

  give(bytes: number): void {
    if (bytes > 0) this.#budget._add(this, -Math.min(bytes, this.used));
  }

  /** True while this holder, its source or everyone holds half its budget or more (streams then shrink their windows). */
  get pressed(): boolean {
    return this.#budget._pressed(this);
  }

  /** Adds bytes held already (a count made exact), past the caps if need be: nothing can be refused any more. */
  force(bytes: number): void {
    if (bytes > 0) this.#budget._add(this, bytes);
  }
}

/**
 * How bytes a stream holds are given back between two `settle`s:
 * - `none`: only by the next settle (a control stream, after each frame);
 * - `sent`: as they leave on either leg of a spliced pair (what a pair sends
 *   on one leg it received on the other);
 * - `granted`: as its reader takes them (the window is granted again), for a
 *   stream read by the relay itself (the gateway's HTTP client, its sockets).
 */
export type HoldRelease = 'none' | 'sent' | 'granted';

/**
 * What one stream holds, or a spliced pair together (both legs share one):
 * bytes received count from the first; before the splice bytes sent are the
 * relay's own headers and answers, which give nothing back. The count is
 * made exact (`settle`) where the relay knows it: at the splice, and after
 * each control frame. Given back in full once every stream it is attached
 * to is released.
 */
export class StreamHold implements StreamHoldHook {
  readonly holder: Holder;
  #held = 0;
  /** The streams attached and not yet released (one, or the two legs of a pair). */
  readonly #streams: MuxStream[] = [];
  #release: HoldRelease = 'none';

  constructor(holder: Holder) {
    this.holder = holder;
  }

  /** Charges `stream`'s bytes here (false: the stream was already released, nothing attached). */
  attach(stream: MuxStream): boolean {
    if (!stream.setHold(this)) return false;
    this.#streams.push(stream);
    return true;
  }

  get held(): number {
    return this.#held;
  }

  received(bytes: number): boolean {
    if (this.holder.take(bytes) !== undefined) return false;
    this.#held += bytes;
    return true;
  }

  sent(bytes: number): void {
    if (this.#release === 'sent') this.#giveBack(bytes);
  }

  pressed(): boolean {
    return this.holder.pressed;
  }

  granted(bytes: number): void {
    if (this.#release === 'granted') this.#giveBack(bytes);
  }

  #giveBack(bytes: number): void {
    const n = Math.min(bytes, this.#held);
    this.#held -= n;
    this.holder.give(n);
  }

  /** The streams hold exactly `bytes` now (their readable and writable buffers); `release` says how they give bytes back from here on. */
  settle(bytes: number, release: HoldRelease): void {
    if (bytes > this.#held) this.holder.force(bytes - this.#held);
    else this.holder.give(this.#held - bytes);
    this.#held = bytes;
    this.#release = release;
  }

  /** A leg was destroyed (its buffers dropped): what is held is what the legs still alive buffer. */
  destroyed(): void {
    let buffered = 0;
    for (const s of this.#streams) if (!s.destroyed) buffered += s.readableLength + s.writableLength;
    this.settle(buffered, this.#release);
  }

  released(stream: MuxStream): void {
    const i = this.#streams.indexOf(stream);
    if (i >= 0) this.#streams.splice(i, 1);
    if (this.#streams.length > 0) return;
    this.holder.give(this.#held);
    this.#held = 0;
  }
}

/** Bytes `streams` hold in their buffers right now (what settle wants). */
export function bufferedIn(...streams: MuxStream[]): number {
  let n = 0;
  for (const s of streams) n += s.readableLength + s.writableLength;
  return n;
}

/**
 * What the relay's own splice holds of a pair with a data connection for a
 * leg (docs/PROTOCOL.md §10): each chunk read from one leg until the other
 * took it, charged to `holder` (the caller's session, as for a pair of mux
 * legs), so that stalled data connections meet the same per-session,
 * per-source and total caps. Whatever is still charged when the pair ends
 * is given back at once; later write callbacks give nothing.
 */
export class SpliceHold implements SpliceMeter {
  readonly holder: Holder;
  #held = 0;
  #closed = false;

  constructor(holder: Holder) {
    this.holder = holder;
  }

  get held(): number {
    return this.#held;
  }

  take(bytes: number): boolean {
    if (this.#closed) return true;
    if (this.holder.take(bytes) !== undefined) return false;
    this.#held += bytes;
    return true;
  }

  give(bytes: number): void {
    if (this.#closed) return;
    const n = Math.min(bytes, this.#held);
    this.#held -= n;
    this.holder.give(n);
  }

  pressed(): boolean {
    return this.holder.pressed;
  }

  /** The pair ended: its buffers are gone. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.holder.give(this.#held);
    this.#held = 0;
  }
}
