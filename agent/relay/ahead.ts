import type { Duplex, Writable } from 'node:stream';
import { MAX_EARLY_BYTES } from '../protocol/limits.ts';
import { abort } from '../util/pump.ts';

/**
 * What a caller sends behind its header before the device answered: the
 * client's end-to-end TLS ClientHello, sent without waiting, so that the
 * device's answer can come back with its TLS server flight (one round trip
 * less). It goes to the device leg being tried as it arrives (on a data
 * connection it may arrive after the `connect`, which travels on the relay
 * link), and a copy is kept until the device answered: a device leg found
 * dead (`data-closed`, or a relay of the cluster that no longer holds the
 * device) is replaced and the copy sent again. At most MAX_EARLY_BYTES are
 * taken before the answer; then the caller is not read until it comes.
 * Where the caller's leg is a data connection (whose bytes no stream hold
 * counted on arrival) `charge` counts them against the caller's hold; a
 * refusal resets the caller.
 */
export class Ahead {
  readonly #src: Duplex;
  #copy: Buffer[] = [];
  #bytes = 0;
  #dst: Writable | undefined;
  #listening = false;
  #done = false;
  readonly #charge: ((bytes: number) => boolean) | undefined;

  constructor(src: Duplex, charge?: (bytes: number) => boolean) {
    this.#src = src;
    this.#charge = charge;
  }

  /** Sends what was taken so far to `dst`, then whatever follows, until detach() or commit(). */
  to(dst: Writable): void {
    if (this.#done) return;
    this.#dst = dst;
    for (const chunk of this.#copy) dst.write(chunk);
    if (!this.#listening) {
      this.#listening = true;
      this.#src.on('data', this.#onData);
    }
  }

  /** The leg was refused: nothing more goes to it; the copy waits for the next. */
  detach(): void {
    this.#dst = undefined;
  }

  /** The leg answered ok: the splice takes the caller from here (paused until it starts). */
  commit(): void {
    this.#done = true;
    this.#dst = undefined;
    this.#copy = [];
    this.#src.off('data', this.#onData);
    this.#src.pause();
  }

  readonly #onData = (chunk: Buffer): void => {
    if (this.#charge && !this.#charge(chunk.length)) {
      this.#src.off('data', this.#onData);
      this.#dst = undefined;
      this.#copy = [];
      return abort(this.#src);
    }
    this.#copy.push(chunk);
    this.#bytes += chunk.length;
    this.#dst?.write(chunk);
    if (this.#bytes >= MAX_EARLY_BYTES) this.#src.pause();
  };
}
