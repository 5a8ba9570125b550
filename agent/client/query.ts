import type { MuxStream } from '../mux/index.ts';
import type { RelayLink } from '../link/relay-link.ts';
import { readFrame, writeFrame } from '../protocol/frames.ts';
import { parseDeviceInfo, parseReply, type DeviceInfo, type Ping, type Query } from '../protocol/messages.ts';
import { MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS } from '../protocol/limits.ts';
import { parseNameInfo, type Lookup, type NameInfo } from '../protocol/names.ts';
import { errorMessage } from '../util/errors.ts';
import { DialError, RELAY_WAIT_MS } from './dial.ts';

async function openStream(link: RelayLink): Promise<MuxStream> {
  let session;
  try {
    session = await link.waitForSession(RELAY_WAIT_MS);
  } catch (err) {
    throw new DialError('no-relay', errorMessage(err));
  }
  try {
    const stream = session.open();
    stream.on('error', () => {});
    return stream;
  } catch (err) {
    throw new DialError('no-relay', `relay session is closing: ${errorMessage(err)}`);
  }
}

/** A relay that predates `query` answers bad-request ("unexpected first message"). */
function tooOld(what: string, m: Record<string, unknown>): void {
  if (m.t === 'error') {
    const reply = parseReply(m);
    if (reply.t === 'error') throw new DialError(reply.code, reply.code === 'bad-request' ? `the relay does not answer ${what} (an older diode relay?): ${reply.message}` : reply.message);
  }
}

/** One request on a fresh stream and its one answer frame (an older relay's refusal thrown as tooOld says). */
async function ask(link: RelayLink, request: object, what: string): Promise<Record<string, unknown>> {
  const stream = await openStream(link);
  try {
    writeFrame(stream, request);
    const answer = await readFrame(stream, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS);
    tooOld(what, answer);
    return answer;
  } finally {
    stream.destroy();
  }
}

/** Asks the relay whether `address` is online there and which of its ports this key may see. */
export async function queryDevice(link: RelayLink, address: string): Promise<DeviceInfo> {
  const query: Query = { t: 'query', address };
  return parseDeviceInfo(await ask(link, query, 'queries'));
}

/** One round trip client → relay → device → relay → client on a fresh stream; resolves with its ms. */
export async function pingDevice(link: RelayLink, address: string): Promise<number> {
  const stream = await openStream(link);
  try {
    const ping: Ping = { t: 'ping', to: address };
    const started = performance.now();
    writeFrame(stream, ping);
    const answer = await readFrame(stream, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS);
    const ms = performance.now() - started;
    tooOld('pings', answer);
    const reply = parseReply(answer);
    if (reply.t !== 'ok') throw new DialError('unavailable', 'unexpected answer to a ping');
    return ms;
  } finally {
    stream.destroy();
  }
}

/** Asks the relay which device holds `name` (lower case); the answer's claim is checked by the caller (client/names.ts). */
export async function lookupName(link: RelayLink, name: string): Promise<NameInfo> {
  const lookup: Lookup = { t: 'lookup', name };
  const info = parseNameInfo(await ask(link, lookup, 'name lookups'));
  if (info.name !== name) throw new DialError('bad-request', `the relay answered a lookup of ${name} about another name`);
  return info;
}
