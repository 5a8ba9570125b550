import { toChecksumAddress as getAddress, isValidAddress } from '../identity/checksum.ts';
import { TOKEN_HEX } from '../data/wire.ts';
import { PUBLIC_KEY_HEX, SIGNATURE_HEX } from '../identity/identity.ts';
import { FrameError } from './frames.ts';
import { MAX_ALLOWED_ADDRESSES, MAX_DATA_PER_SESSION, MAX_PUBLISHED_PORTS, MAX_REPLY_MESSAGE_CHARS } from './limits.ts';
import { peerText } from '../util/escape.ts';

// Every message arrives from the network, so each has a parser that checks
// every field before anything uses it. See docs/PROTOCOL.md for the layout.

/**
 * 4: a stream between two agents may travel on a data connection of its own
 * from each agent to the relay (`tokens`, `connect.data`, `incoming.data`),
 * which the relay splices without reading. 3: every stream between two
 * agents runs the end-to-end layer (`connect.e2e`, `incoming.e2e`,
 * certificate-bound e2e hellos), and a hello is answered with a verdict
 * frame. 2: e2e for private/protected ports only, EKM-signed e2e hellos.
 */
export const PROTOCOL_VERSION = 4;

export type AccessMode = 'public' | 'private' | 'protected';
export const ACCESS_MODES: readonly AccessMode[] = ['public', 'private', 'protected'];

export type HelloRole = 'agent' | 'relay' | 'client' | 'device';
const HELLO_ROLES: readonly HelloRole[] = ['agent', 'relay', 'client', 'device'];

/** First frame on a fresh TLS connection (and on an end-to-end TLS session inside a stream), both directions. */
export interface Hello {
  t: 'hello';
  v: number;
  /** agent/relay on the link; client/device inside a data stream's end-to-end layer. */
  role: HelloRole;
  /** Uncompressed secp256k1 public key, 0x04 ‖ x ‖ y (the address is keccak-256 of x ‖ y, as Ethereum's). */
  pub: string;
  /** ECDSA (SHA-256) signature r ‖ s by that key over authMessage(role, exportKeyingMaterial(32, label)); see handshake.ts. */
  sig: string;
}

/** One published port as the relay sees it (the local target stays on the device). */
export interface PublishedPort {
  port: number;
  mode: AccessMode;
  /** private: the allowed client addresses (checksummed). */
  allow?: string[];
}

/** Control stream, agent → relay: the complete set of published ports (replaces the previous set). */
export interface Publish {
  t: 'publish';
  ports: PublishedPort[];
}

/** Data stream, client → relay. */
export interface Connect {
  t: 'connect';
  to: string;
  port: number;
  /** The client will run the end-to-end layer: agents always send it; the relay passes it on in `incoming`. */
  e2e?: true;
  /**
   * Token of one of this session's data connections (32 hex digits): the
   * stream's bytes travel on it, not on this stream (which carries only the
   * answer). Only with `e2e`.
   */
  data?: string;
}

/** Data stream, relay → device: who (as proven to the relay) wants which port. */
export interface Incoming {
  t: 'incoming';
  from: string;
  port: number;
  /** Address of the relay that authenticated `from`. */
  via: string;
  /** The caller asked for the end-to-end layer (always, from an agent; never from the public gateway). */
  e2e?: true;
  /** Token of one of the device's data connections: the stream's bytes travel on it (only with `e2e`). */
  data?: string;
}

/**
 * Agent → relay, first frame of a stream: `n` tokens for data connections,
 * answered by a `tokens` frame (or an error), then the stream ends.
 */
export interface TokensRequest {
  t: 'tokens';
  n: number;
  /**
   * The agent's pool grows when the relay sends it an end-to-end stream on
   * its link (none of its connections ready): the relay may then count such
   * a stream as a connection on its way (docs/PROTOCOL.md §10). Older relays
   * ignore it.
   */
  grows?: true;
}

/**
 * The relay's answer: single-use tokens, each valid for `ttl` ms. `max`: the
 * session's cap (tokens outstanding plus data connections waiting,
 * `--max-data-per-session`), so that a pool grown by a burst asks for no more
 * than the relay holds; relays before it did not send it (an agent then takes 8).
 */
export interface TokensAnswer {
  t: 'tokens';
  tokens: string[];
  ttl: number;
  max?: number;
}

/** Tokens one `tokens` request may ask for (its answer stays far below MAX_STREAM_HEADER_BYTES). */
export const MAX_TOKENS_PER_REQUEST = 16;

/**
 * Relay-to-relay data stream, first frame: a stream for a device that the
 * receiving relay holds, on behalf of a caller the sending relay
 * authenticated. Only sessions whose hello proved the role `relay` (and an
 * address on --cluster-allow) may send it; the receiver routes it to its own
 * device or answers `offline`, never onward (one hop at most).
 */
export interface Forward {
  t: 'forward';
  to: string;
  port: number;
  /** The caller as proven to the sending relay; the zero address for its public gateway. */
  from: string;
  /** The caller is the sending relay's public gateway (no key): public ports only. */
  gateway?: true;
  /** The caller asked for the end-to-end layer (its `connect.e2e`), passed on in `incoming`. */
  e2e?: true;
  /**
   * Only with `e2e`: the token of a data connection the sending relay opened
   * to the receiving one (kind 02, issued on this link): the stream's bytes
   * travel on it, this stream carries only the answer.
   */
  data?: string;
}

/** Data stream, client → relay: is this device connected here, and which of its ports may I see? */
export interface Query {
  t: 'query';
  address: string;
}

/** A port as a query answer names it (no allow list: that is the device's business). */
export interface PortInfo {
  port: number;
  mode: AccessMode;
}

/**
 * The relay's answer to a query. `ports`: the public ports, and the private
 * ports whose allow list holds the caller; protected ports are never named
 * (the relay cannot check the fleet contract). `since`: ms since the epoch
 * when the device's active session started publishing.
 */
export interface DeviceInfo {
  t: 'info';
  address: string;
  online: boolean;
  since?: number;
  /** In a cluster: the device is held by this other relay, which alone knows its ports (`ports` is then empty). */
  relay?: string;
  ports: PortInfo[];
}

/**
 * Data stream: client → relay `{"t":"ping","to":"0x…"}`; the relay opens a
 * stream to the device with `{"t":"ping","from":"0x…","via":"0x…"}`; the
 * device answers ok and ends the stream; the relay passes the answer back.
 */
export interface Ping {
  t: 'ping';
  to?: string;
  from?: string;
  via?: string;
}

export type ReplyCode = 'offline' | 'no-such-port' | 'denied' | 'refused' | 'bad-request' | 'unavailable' | 'data-closed';
export const REPLY_CODES: readonly ReplyCode[] = ['offline', 'no-such-port', 'denied', 'refused', 'bad-request', 'unavailable', 'data-closed'];

/**
 * Answer to a publish, connect or incoming header. `e2e: true` on the answer
 * to a data stream says the bytes that follow are a TLS 1.3 session between
 * client and device (private and protected ports; see docs/PROTOCOL.md); the
 * relay passes it on to the client.
 */
export type Reply = { t: 'ok'; address?: string; e2e?: true } | { t: 'error'; code: ReplyCode; message: string };

function fail(what: string): never {
  throw new FrameError('EPROTO', `malformed message: ${what}`);
}

function isPort(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;
}

/**
 * An address field: 0x and 40 hex digits, all lower case, all upper case, or
 * a valid EIP-55 checksum (a mixed-case address with a wrong checksum is a
 * typo, refused as `diode query` refuses it); returned checksummed.
 */
function checkedAddress(value: unknown, field: string): string {
  if (typeof value !== 'string' || !/^0x[0-9a-fA-F]{40}$/.test(value)) fail(`${field} is not an address`);
  if (!isValidAddress(value)) fail(`${field} has mixed case but not a valid EIP-55 checksum (write it all lower case, or with its checksum)`);
  return getAddress(value);
}

function checkedToken(value: unknown, field: string): string {
  if (typeof value !== 'string' || !TOKEN_HEX.test(value)) fail(`${field} is not a data token (32 lower-case hex digits)`);
  return value;
}

/** `data` is only meaningful on a stream that runs the end-to-end layer: nothing else may travel unread by the relay. */
function dataField(m: Record<string, unknown>, what: string): { data?: string } {
  if (m.data === undefined) return {};
  if (m.e2e !== true) fail(`${what}.data needs ${what}.e2e: only end-to-end streams travel on data connections`);
  return { data: checkedToken(m.data, `${what}.data`) };
}

export function parseHello(m: Record<string, unknown>): Hello {
  if (m.t !== 'hello') fail('expected hello');
  if (m.v !== PROTOCOL_VERSION) {
    throw new FrameError('EVERSION', `unsupported protocol version ${JSON.stringify(m.v)}: this side speaks version ${PROTOCOL_VERSION} only; upgrade the older of the two`);
  }
  if (!HELLO_ROLES.includes(m.role as HelloRole)) fail('hello.role');
  if (typeof m.pub !== 'string' || !PUBLIC_KEY_HEX.test(m.pub)) fail('hello.pub');
  if (typeof m.sig !== 'string' || !SIGNATURE_HEX.test(m.sig)) fail('hello.sig');
  return { t: 'hello', v: m.v, role: m.role as HelloRole, pub: m.pub, sig: m.sig };
}

export function parsePublish(m: Record<string, unknown>): Publish {
  if (m.t !== 'publish') fail('expected publish');
  if (!Array.isArray(m.ports)) fail('publish.ports');
  if (m.ports.length > MAX_PUBLISHED_PORTS) {
    throw new FrameError('ELIMIT', `publish set refused: ${m.ports.length} ports, at most ${MAX_PUBLISHED_PORTS} may be published`);
  }
  const seen = new Set<number>();
  const ports = m.ports.map((p: unknown, i): PublishedPort => {
    if (p === null || typeof p !== 'object') fail(`publish.ports[${i}]`);
    const entry = p as Record<string, unknown>;
    if (!isPort(entry.port) || seen.has(entry.port)) fail(`publish.ports[${i}].port`);
    seen.add(entry.port);
    if (!ACCESS_MODES.includes(entry.mode as AccessMode)) fail(`publish.ports[${i}].mode`);
    const out: PublishedPort = { port: entry.port, mode: entry.mode as AccessMode };
    if (entry.allow !== undefined) {
      if (!Array.isArray(entry.allow)) fail(`publish.ports[${i}].allow`);
      if (entry.allow.length > MAX_ALLOWED_ADDRESSES) {
        throw new FrameError('ELIMIT', `publish set refused: port ${entry.port} lists ${entry.allow.length} addresses, at most ${MAX_ALLOWED_ADDRESSES} per port`);
      }
      out.allow = entry.allow.map((a, j) => checkedAddress(a, `publish.ports[${i}].allow[${j}]`));
    }
    return out;
  });
  return { t: 'publish', ports };
}

export function parseConnect(m: Record<string, unknown>): Connect {
  if (m.t !== 'connect') fail('expected connect');
  if (!isPort(m.port)) fail('connect.port');
  return { t: 'connect', to: checkedAddress(m.to, 'connect.to'), port: m.port, ...(m.e2e === true ? { e2e: true as const } : {}), ...dataField(m, 'connect') };
}

export function parseIncoming(m: Record<string, unknown>): Incoming {
  if (m.t !== 'incoming') fail('expected incoming');
  if (!isPort(m.port)) fail('incoming.port');
  return {
    t: 'incoming',
    from: checkedAddress(m.from, 'incoming.from'),
    port: m.port,
    via: checkedAddress(m.via, 'incoming.via'),
    ...(m.e2e === true ? { e2e: true as const } : {}),
    ...dataField(m, 'incoming'),
  };
}

export function parseTokensRequest(m: Record<string, unknown>): TokensRequest {
  if (m.t !== 'tokens') fail('expected tokens');
  if (typeof m.n !== 'number' || !Number.isInteger(m.n) || m.n < 1 || m.n > MAX_TOKENS_PER_REQUEST) fail(`tokens.n (1 to ${MAX_TOKENS_PER_REQUEST})`);
  return { t: 'tokens', n: m.n, ...(m.grows === true ? { grows: true as const } : {}) };
}

export function parseTokensAnswer(m: Record<string, unknown>): TokensAnswer {
  if (m.t !== 'tokens') fail('expected tokens');
  if (!Array.isArray(m.tokens) || m.tokens.length > MAX_TOKENS_PER_REQUEST) fail('tokens.tokens');
  if (typeof m.ttl !== 'number' || !Number.isFinite(m.ttl) || m.ttl <= 0) fail('tokens.ttl');
  if (m.max !== undefined && (typeof m.max !== 'number' || !Number.isInteger(m.max) || m.max < 1 || m.max > MAX_DATA_PER_SESSION)) fail(`tokens.max (1 to ${MAX_DATA_PER_SESSION})`);
  return { t: 'tokens', tokens: m.tokens.map((x, i) => checkedToken(x, `tokens.tokens[${i}]`)), ttl: m.ttl, ...(m.max !== undefined ? { max: m.max } : {}) };
}

export function parseForward(m: Record<string, unknown>): Forward {
  if (m.t !== 'forward') fail('expected forward');
  if (!isPort(m.port)) fail('forward.port');
  if (m.gateway !== undefined && m.gateway !== true) fail('forward.gateway');
  if (m.gateway === true && m.e2e === true) fail('forward.e2e: the gateway runs no end-to-end layer');
  return {
    t: 'forward',
    to: checkedAddress(m.to, 'forward.to'),
    port: m.port,
    from: checkedAddress(m.from, 'forward.from'),
    ...(m.gateway === true ? { gateway: true as const } : {}),
    ...(m.e2e === true ? { e2e: true as const } : {}),
    ...dataField(m, 'forward'),
  };
}

export function parseQuery(m: Record<string, unknown>): Query {
  if (m.t !== 'query') fail('expected query');
  return { t: 'query', address: checkedAddress(m.address, 'query.address') };
}

export function parseDeviceInfo(m: Record<string, unknown>): DeviceInfo {
  if (m.t !== 'info') fail('expected info');
  if (typeof m.online !== 'boolean') fail('info.online');
  if (m.since !== undefined && (typeof m.since !== 'number' || !Number.isFinite(m.since))) fail('info.since');
  if (!Array.isArray(m.ports) || m.ports.length > MAX_PUBLISHED_PORTS) fail('info.ports');
  const ports = m.ports.map((p: unknown, i): PortInfo => {
    const entry = (p ?? {}) as Record<string, unknown>;
    if (!isPort(entry.port) || !ACCESS_MODES.includes(entry.mode as AccessMode)) fail(`info.ports[${i}]`);
    return { port: entry.port, mode: entry.mode as AccessMode };
  });
  return {
    t: 'info',
    address: checkedAddress(m.address, 'info.address'),
    online: m.online,
    ...(m.since !== undefined ? { since: m.since as number } : {}),
    ...(m.relay !== undefined ? { relay: checkedAddress(m.relay, 'info.relay') } : {}),
    ports,
  };
}

/** A client's ping names `to`; the relay's ping to a device names `from` and `via`. */
export function parsePing(m: Record<string, unknown>, side: 'relay' | 'device'): Ping {
  if (m.t !== 'ping') fail('expected ping');
  if (side === 'relay') return { t: 'ping', to: checkedAddress(m.to, 'ping.to') };
  return { t: 'ping', from: checkedAddress(m.from, 'ping.from'), via: checkedAddress(m.via, 'ping.via') };
}

export function parseReply(m: Record<string, unknown>): Reply {
  if (m.t === 'ok') {
    return {
      t: 'ok',
      ...(typeof m.address === 'string' ? { address: checkedAddress(m.address, 'ok.address') } : {}),
      ...(m.e2e === true ? { e2e: true as const } : {}),
    };
  }
  if (m.t !== 'error') fail('expected ok or error');
  if (!REPLY_CODES.includes(m.code as ReplyCode)) fail('error.code');
  // Printable text of bounded length: `diode proxy` prints it on ssh's terminal.
  const message = typeof m.message === 'string' ? peerText(m.message, MAX_REPLY_MESSAGE_CHARS) : '';
  return { t: 'error', code: m.code as ReplyCode, message };
}

export function errorReply(code: ReplyCode, message: string): Reply {
  return { t: 'error', code, message };
}
