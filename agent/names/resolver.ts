import type { DiodeHost, DiodeTarget } from './host.ts';
import { NameError } from './name.ts';

/** What a source says a name is. */
export interface NameAnswer {
  /** Checksummed device address. */
  address: string;
  /** Who said so, for messages: "your names", "relay 0x… at host:port". */
  from: string;
}

/**
 * One place names come from: a person's own list, the relays, and later a
 * registry on a chain. Sources are asked in order and the first answer
 * wins; add a source by implementing this.
 */
export interface NameSource {
  /** For "nobody knows it" messages: where the name was looked for ("your names (diode name list)", "relay …"). */
  readonly label: string;
  /**
   * true: somebody else's word (a relay's): pinned on first use and checked
   * against the pin every time after, as ssh does with host keys. false: the
   * person's own names, taken as they are.
   */
  readonly pinned: boolean;
  /** The name's address, or undefined when this source does not know it; throws when it cannot tell (a relay unreachable). */
  lookup(name: string): Promise<NameAnswer | undefined>;
}

/** Where pins are kept (the known_names file). */
export interface Pins {
  /** The address `name` is pinned to. */
  pinned(name: string): string | undefined;
  pin(name: string, address: string, from: string): void;
  /** For messages: where the pins are ("~/.config/diode/known_names"). */
  readonly where: string;
}

export interface ResolverOptions {
  sources: readonly NameSource[];
  /** Without pins, answers are taken as they come (the gateway: its own relay's map is the only source). */
  pins?: Pins;
  /** One line for the person, once per name learned ("… pinned"): stderr for proxy, the log for socksd. */
  notice?: (line: string) => void;
}

/** A resolved host: the device and port, and the name it was reached by, if any. */
export type ResolvedTarget = DiodeTarget & { name?: string };

/**
 * The lookup chain: local names first (the person's own, never sent to a
 * relay), then the other sources in order. An answer from a pinned source
 * is checked against the pin: a first answer is pinned (and said once), a
 * later one naming another address is refused with both addresses and how
 * to accept the change. A name no source knows resolves to its pin, if it
 * has one (a relay that restarted, or a device offline for long); else it
 * is a NameError, never a DNS lookup.
 */
export class NameResolver {
  readonly #o: ResolverOptions;

  constructor(options: ResolverOptions) {
    this.#o = options;
  }

  async target(host: DiodeHost): Promise<ResolvedTarget> {
    if (host.name === undefined) return { address: host.address, port: host.port };
    const answer = await this.resolve(host.name);
    return { address: answer.address, port: host.port, name: host.name };
  }

  async resolve(name: string): Promise<NameAnswer> {
    const { sources, pins } = this.#o;
    let failure: unknown;
    for (const source of sources) {
      let answer: NameAnswer | undefined;
      try {
        answer = await source.lookup(name);
      } catch (err) {
        failure ??= err;
        continue;
      }
      if (!answer) continue;
      if (!source.pinned || !pins) return answer;
      const pinned = pins.pinned(name);
      if (pinned === undefined) {
        pins.pin(name, answer.address, answer.from);
        this.#o.notice?.(`${name}.diode is ${answer.address} (from ${answer.from}); pinned in ${pins.where}: a relay that later names another device for it is refused`);
        return answer;
      }
      if (pinned !== answer.address) {
        throw new NameError(
          'moved',
          `${name}.diode: ${answer.from} now names ${answer.address}, but this machine pinned ${name} to ${pinned} (${pins.where}); refused. If the device really changed, accept it with: diode name forget ${name}`,
        );
      }
      return answer;
    }
    const pinned = pins?.pinned(name);
    if (pinned !== undefined) return { address: pinned, from: `the pin in ${pins!.where}` };
    if (failure) throw failure;
    throw new NameError('unknown', `${name}.diode: no device has this name (looked in ${sources.map((s) => s.label).join(', ')})`);
  }
}
