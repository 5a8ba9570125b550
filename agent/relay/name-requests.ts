import type { MuxStream } from '../mux/index.ts';
import type { Logger } from '../util/log.ts';
import { errorMessage } from '../util/errors.ts';
import { writeFrame } from '../protocol/frames.ts';
import { errorReply, type Reply } from '../protocol/messages.ts';
import { parseClaim, parseLookup, type Claimed, type NameInfo } from '../protocol/names.ts';
import { addressOfPublicKey } from '../identity/checksum.ts';
import { claimant, type SignedName } from '../names/claim.ts';
import type { AgentSession } from './registry.ts';
import type { NameTable } from './names.ts';
import type { RelayLimits } from './config.ts';
import type { RelayStats } from './stats.ts';
import type { RefusalLog } from './admission.ts';
import type { ClaimRate } from './claim-rate.ts';

/** What a relay answers name claims and lookups with. */
export interface NameService {
  names: NameTable;
  limits: Readonly<RelayLimits>;
  stats: RelayStats;
  refusals: RefusalLog;
  log: Logger;
  rate: ClaimRate;
}

function answer(stream: MuxStream, message: Reply | Claimed | NameInfo): void {
  if (!stream.destroyed && stream.writable) writeFrame(stream, message);
  stream.end();
}

/**
 * A device's claim: bound to this session (its key must be the session's,
 * and the session must publish), each name signed by that key, within the
 * source's claim rate; then the table decides (first claim wins).
 */
export async function answerClaim(svc: NameService, session: AgentSession, stream: MuxStream, first: Record<string, unknown>): Promise<void> {
  const claim = parseClaim(first);
  const who = `claim of ${claim.names.map((n) => n.name).join(', ')} by ${session.address}`;
  const refuse = (counter: string, code: 'denied' | 'bad-request' | 'unavailable', why: string) => {
    svc.stats.count(`refused_${counter}`);
    svc.refusals.refused(counter, `${who}: ${why}`);
    answer(stream, errorReply(code, why));
  };
  if (session.ports.size === 0) return refuse('name_not_publishing', 'denied', 'names are claimed by a publishing device: this session publishes no port');
  let key: string;
  try {
    key = addressOfPublicKey(Buffer.from(claim.pub.slice(2), 'hex'));
  } catch {
    return refuse('name_bad_claim', 'bad-request', 'claim.pub is not a public key');
  }
  if (key !== session.address) return refuse('name_bad_claim', 'denied', `claim.pub is the key of ${key}, not of this session's ${session.address}`);
  const signed: SignedName[] = [];
  for (const { name, sig } of claim.names) {
    const one = { name, pub: claim.pub, sig };
    let by: string | undefined;
    try {
      by = claimant(one);
    } catch {
      by = undefined;
    }
    if (by !== session.address) return refuse('name_bad_claim', 'bad-request', `the signature on ${name} does not verify for ${session.address}`);
    signed.push(one);
  }
  const source = session.source ?? session.remote;
  if (!svc.rate.take(source, signed.length)) {
    return refuse('name_claims_per_ip', 'unavailable', `too many name claims from ${source} (--name-claims-per-ip ${svc.limits.nameClaimsPerIp} per second); retry later`);
  }
  let outcomes;
  try {
    outcomes = await svc.names.claim(session.address, signed, svc.limits.maxNamesPerAddress);
  } catch (err) {
    return refuse('name_table', 'unavailable', `the name table cannot answer: ${errorMessage(err)}`);
  }
  for (const o of outcomes) {
    if (o.ok) {
      svc.stats.count('name_claimed');
      svc.log.info(`${session.address} holds the name ${o.name}`);
    } else {
      svc.stats.count(`refused_name_${o.code}`);
      svc.refusals.refused(`name_${o.code}`, `claim of ${o.name} by ${session.address}: ${o.message}`);
    }
  }
  answer(stream, { t: 'claimed', names: outcomes });
}

/**
 * A client's lookup: the holder's address with its claim (key and
 * signature), which says nothing a query of that address would not, apart
 * from the name itself; or only the name when nobody holds it.
 */
export async function answerLookup(svc: NameService, stream: MuxStream, first: Record<string, unknown>): Promise<void> {
  const { name } = parseLookup(first);
  svc.stats.count('name_lookup');
  let record;
  try {
    record = await svc.names.lookup(name);
  } catch (err) {
    answer(stream, errorReply('unavailable', `the name table cannot answer: ${errorMessage(err)}`));
    return;
  }
  answer(stream, record ? { t: 'name', name, address: record.address, pub: record.pub, sig: record.sig } : { t: 'name', name });
}
