import type { RelayLink } from '../link/relay-link.ts';
import { claimant } from '../names/claim.ts';
import { NameError } from '../names/name.ts';
import { NameResolver, type NameAnswer, type NameSource } from '../names/resolver.ts';
import { filePins, knownNamesFile, localNameSource, localNamesFile } from '../names/local.ts';
import { lookupName } from './query.ts';
import { setBounded } from '../util/bounded-map.ts';

function describeRelay(link: RelayLink): string {
  return `relay ${link.relayAddress ?? '(unknown address)'}${link.relayEndpoint ? ` at ${link.relayEndpoint}` : ''}`;
}

/** One relay's answer, its claim checked: the key must be the address's and must have signed this very name. */
async function askRelay(link: RelayLink, name: string): Promise<NameAnswer | undefined> {
  const info = await lookupName(link, name);
  if (info.address === undefined) return undefined;
  let by: string | undefined;
  try {
    by = claimant({ name, pub: info.pub!, sig: info.sig! });
  } catch {
    by = undefined;
  }
  if (by !== info.address) {
    throw new NameError('bad-answer', `${name}.diode: ${describeRelay(link)} named ${info.address}, but with a claim that key never signed; refused (a relay that forges names)`);
  }
  return { address: info.address, from: describeRelay(link) };
}

/**
 * ms a relay's answer is reused by a long-running client (socksd, bind): a
 * browser opening many connections to kitchen.diode asks the relay once a
 * minute, not once a connection. Only answers that name a device are kept
 * (a name claimed a moment ago is found at once).
 */
export const RELAY_ANSWER_CACHE_MS = 60_000;
/** Names whose relay answers are kept; the oldest go first. */
const RELAY_ANSWER_CACHE_MAX = 1024;

/**
 * The relays as a name source: the relays with a live session are asked
 * at once (all of them when none is up yet), and the answer of the first
 * in the list that knows the name wins. A relay that cannot answer counts
 * only when none could. Answers are reused for RELAY_ANSWER_CACHE_MS.
 */
export function relayNameSource(links: readonly RelayLink[], now: () => number = Date.now): NameSource {
  const cache = new Map<string, { answer: NameAnswer; at: number }>();
  return {
    label: links.length === 1 ? 'the relay' : `the ${links.length} relays`,
    pinned: true,
    lookup: async (name) => {
      const kept = cache.get(name);
      if (kept && now() - kept.at < RELAY_ANSWER_CACHE_MS) return kept.answer;
      const answer = await askRelays(links, name);
      if (answer) setBounded(cache, name, { answer, at: now() }, RELAY_ANSWER_CACHE_MAX);
      else cache.delete(name);
      return answer;
    },
  };
}

/** Every relay asked at once (those up, else all); the first in list order that knows the name wins (its claim checked). */
async function askRelays(links: readonly RelayLink[], name: string): Promise<NameAnswer | undefined> {
  const up = links.filter((l) => l.session !== undefined && !l.session.closed);
  const ask = up.length > 0 ? up : links;
  const results = await Promise.allSettled(ask.map((link) => askRelay(link, name)));
  for (const r of results) if (r.status === 'fulfilled' && r.value) return r.value;
  // A forged answer is worth more than silence from the others.
  const forged = results.find((r) => r.status === 'rejected' && r.reason instanceof NameError);
  if (forged) throw (forged as PromiseRejectedResult).reason;
  if (results.some((r) => r.status === 'fulfilled')) return undefined;
  throw (results[0] as PromiseRejectedResult).reason;
}

/**
 * A client's lookup chain: the person's own names (state directory file
 * `names`), then the relays, pinned in `known_names`. `notice` gets the one
 * line said when a name is first learned.
 */
export function clientResolver(home: string, links: readonly RelayLink[], notice: (line: string) => void): NameResolver {
  return new NameResolver({
    sources: [localNameSource(localNamesFile(home)), relayNameSource(links)],
    pins: filePins(knownNamesFile(home)),
    notice,
  });
}
