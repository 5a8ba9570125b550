import type { MuxSession } from '../mux/index.ts';
import type { RelayLink } from '../link/relay-link.ts';
import type { Identity } from '../identity/index.ts';
import type { Logger } from '../util/log.ts';
import { errorMessage } from '../util/errors.ts';
import { readFrame, writeFrame } from '../protocol/frames.ts';
import { parseReply } from '../protocol/messages.ts';
import { parseClaimed, type Claim, type ClaimOutcome } from '../protocol/names.ts';
import { MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS } from '../protocol/limits.ts';
import { signName, type SignedName } from '../names/claim.ts';

/** ms before a claim the relay could not answer (`unavailable`: its claim rate, Redis away) is sent again; jittered ±50 %. */
export const CLAIM_RETRY_MS = 15_000;

/** Where a name stands, for `diode status` and the log. */
export interface NameState {
  name: string;
  state: 'pending' | 'held' | 'refused';
  /** held: the relay that holds it for us; refused: the relay that said no. */
  relay?: string;
  /** refused because another address holds it. */
  holder?: string;
  message?: string;
}

/**
 * The device's names: signed once at start, claimed on every session the
 * link opens (a claim is the complete set, on a stream of its own, after
 * the publish set), retried while the relay cannot answer, and reported in
 * one line per change: held, or refused with the holder. Publishing goes on
 * whatever the answer.
 */
export class NameClaimer {
  readonly #signed: SignedName[];
  readonly #pub: string;
  readonly #log: Logger;
  readonly #link: RelayLink;
  readonly #states = new Map<string, NameState>();
  #retry: NodeJS.Timeout | undefined;

  constructor(options: { identity: Identity; names: readonly string[]; log: Logger; link: RelayLink }) {
    this.#signed = options.names.map((name) => signName(options.identity, name));
    this.#pub = `0x${options.identity.publicKey.toString('hex')}`;
    this.#log = options.log;
    this.#link = options.link;
    for (const name of options.names) this.#states.set(name, { name, state: 'pending' });
    if (this.#signed.length > 0) options.link.on('up', (session: MuxSession) => this.#claim(session));
  }

  status(): NameState[] {
    return [...this.#states.values()];
  }

  stop(): void {
    clearTimeout(this.#retry);
  }

  #relay(): string {
    return `relay ${this.#link.relayEndpoint ?? '?'}`;
  }

  async #claim(session: MuxSession): Promise<void> {
    clearTimeout(this.#retry);
    if (session.closed || this.#link.session !== session) return;
    const claim: Claim = { t: 'claim', pub: this.#pub, names: this.#signed.map(({ name, sig }) => ({ name, sig })) };
    let answer: Record<string, unknown>;
    try {
      const stream = session.open();
      stream.on('error', () => {});
      writeFrame(stream, claim);
      try {
        answer = await readFrame(stream, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS);
      } finally {
        stream.destroy();
      }
    } catch (err) {
      if (!session.closed) this.#later(session, `no answer to the name claim: ${errorMessage(err)}`);
      return;
    }
    try {
      if (answer.t === 'error') {
        const reply = parseReply(answer);
        const message = reply.t === 'error' ? reply.message || reply.code : '';
        if (reply.t === 'error' && reply.code === 'unavailable') return this.#later(session, message);
        const why = reply.t === 'error' && reply.code === 'bad-request' && /unexpected first message/.test(message) ? 'it takes no name claims (an older diode relay?)' : message;
        for (const name of this.#states.keys()) this.#set({ name, state: 'refused', relay: this.#relay(), message: why });
        return;
      }
      for (const outcome of parseClaimed(answer).names) this.#report(outcome);
    } catch (err) {
      this.#log.warn(`${this.#relay()} answered the name claim with ${errorMessage(err)}`);
    }
  }

  #later(session: MuxSession, why: string): void {
    const ms = Math.round(CLAIM_RETRY_MS * (0.5 + Math.random()));
    this.#log.info(`${this.#relay()} cannot take the name claim now (${why}); trying again in ${Math.round(ms / 1000)} s`);
    this.#retry = setTimeout(() => void this.#claim(session), ms);
    this.#retry.unref();
  }

  #report(outcome: ClaimOutcome): void {
    if (!this.#states.has(outcome.name)) return;
    if (outcome.ok) this.#set({ name: outcome.name, state: 'held', relay: this.#relay() });
    else this.#set({ name: outcome.name, state: 'refused', relay: this.#relay(), message: outcome.message, ...(outcome.holder ? { holder: outcome.holder } : {}) });
  }

  /** Records a name's state; one log line when it changed. */
  #set(next: NameState): void {
    const last = this.#states.get(next.name);
    this.#states.set(next.name, next);
    if (last && last.state === next.state && last.relay === next.relay && last.holder === next.holder && last.message === next.message) return;
    if (next.state === 'held') {
      this.#log.info(`name ${next.name} claimed at ${next.relay}: this device is ${next.name}.diode`);
    } else if (next.holder) {
      this.#log.warn(`name ${next.name} is held by ${next.holder} at ${next.relay}; publishing without it (choose another name, or ask the holder to give it up)`);
    } else {
      this.#log.warn(`name ${next.name} refused by ${next.relay}: ${next.message}; publishing without it`);
    }
  }
}
