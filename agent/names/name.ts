import { DiodeError, UsageError } from '../util/errors.ts';
import { peerText } from '../util/escape.ts';

// A device name (`kitchen` in `ssh pi@kitchen.diode`): what it may look
// like, checked the same way wherever a name enters (a host name, a claim
// from the network, `diode name set`, `publish --name`, the config).

/** chars: a name is at least this long (shorter ones are too easy to squat and to mistype). */
export const MIN_NAME_CHARS = 3;
/** chars: a name is at most one DNS label (RFC 1035: 63 octets). */
export const MAX_NAME_CHARS = 63;

const NAME_CHARS = /^[a-z0-9-]+$/;
/** A trailing `-<digits>` is a port in a host name (`kitchen-8080.diode`), never part of a name. */
const PORT_SUFFIX = /-\d+$/;
/** 40 hex digits with or without 0x: an address, never a name. */
const ADDRESS_LIKE = /^(0x)?[0-9a-f]{40}$/;

/**
 * Why `text` (already lower case) is not a name, or undefined when it is
 * one: 3–63 characters of a-z, 0-9 and `-`, not beginning or ending with
 * `-`, never confusable with an address (nothing beginning `0x`, nothing of
 * 40 hex digits), never ending in `-<digits>` (in `kitchen-22.diode` the
 * 22 is a port), and no `--` in the third and fourth places (IDNA's
 * `xn--` form, which browsers show as other letters than it is written in).
 */
export function nameProblem(text: string): string | undefined {
  if (text.length < MIN_NAME_CHARS || text.length > MAX_NAME_CHARS) return `a name has ${MIN_NAME_CHARS}-${MAX_NAME_CHARS} characters`;
  if (!NAME_CHARS.test(text)) return 'a name has only the letters a-z, digits and -';
  if (text.startsWith('-') || text.endsWith('-')) return 'a name does not begin or end with -';
  if (text.startsWith('0x') || ADDRESS_LIKE.test(text)) return 'a name may not look like an address (0x…, or 40 hex digits)';
  if (PORT_SUFFIX.test(text)) return `a name may not end in -<digits> (${text}.diode would mean ${text.replace(PORT_SUFFIX, '')} port ${text.slice(text.lastIndexOf('-') + 1)})`;
  if (text.slice(2, 4) === '--') return 'a name has no -- in its third and fourth characters (the IDNA xn-- form)';
  return undefined;
}

/** True when `text` (any case) is a valid name. */
export function isName(text: string): boolean {
  return nameProblem(text.toLowerCase()) === undefined;
}

/**
 * A name given by a person (a flag, a config value, `diode name set`): its
 * lower-case form, or a UsageError naming the input and the rule it breaks.
 */
export function parseName(text: string, what: string): string {
  const name = text.trim().toLowerCase();
  const problem = nameProblem(name);
  if (problem) throw new UsageError(`${what}: ${shownName(text)} is not a name: ${problem}`);
  return name;
}

/** names: at most this many in one list (`publish --name a,b`, the `name` config key): what a claim may carry. */
export const MAX_NAMES_PER_DEVICE = 8;

/** A comma-separated list of names (`kitchen,pantry`), each checked, none twice; lower case. */
export function parseNameList(text: string, what: string): string[] {
  const names = text.split(',').map((n) => n.trim()).filter((n) => n !== '').map((n) => parseName(n, what));
  if (names.length === 0) throw new UsageError(`${what}: ${shownName(text)} holds no name; write e.g. kitchen (ssh pi@kitchen.diode)`);
  if (names.length > MAX_NAMES_PER_DEVICE) throw new UsageError(`${what}: ${names.length} names, at most ${MAX_NAMES_PER_DEVICE}`);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice) throw new UsageError(`${what}: ${twice} is given twice`);
  return names;
}

/** A name (or what was offered as one) as it may be printed: quoted, cut, anything a terminal or a log reader would act on escaped. */
export function shownName(text: string): string {
  return `"${peerText(text, MAX_NAME_CHARS + 8)}"`;
}

/** Why a name did not resolve, with a stable code: ENAME_UNKNOWN (nobody knows it), ENAME_MOVED (a relay moved a pinned name), ENAME_BAD (a relay's answer did not verify). */
export class NameError extends DiodeError {
  readonly reason: 'unknown' | 'moved' | 'bad-answer';
  constructor(reason: NameError['reason'], message: string) {
    super(`ENAME_${reason.toUpperCase().replace(/-/g, '_')}`, message);
    this.name = 'NameError';
    this.reason = reason;
  }
}
