import { readFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { connect, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import type { Identity } from '../identity/index.ts';
import { exchangeHelloAccepting, pipelinedHello } from '../protocol/handshake.ts';
import { certBoundAddress } from '../protocol/cert-binding.ts';
import { HANDSHAKE_TIMEOUT_MS, RELAY_CONNECT_TIMEOUT_MS, TCP_KEEPALIVE_MS } from '../protocol/limits.ts';
import { formatHostPort, type HostPort } from '../util/hostport.ts';
import { DiodeError } from '../util/errors.ts';

export interface RelayConnection {
  socket: TLSSocket;
  /** The relay's proven address. */
  relayAddress: string;
  /**
   * Pipelined dials only (options.pipeline): resolves once the relay's hello
   * (the same address as its certificate proved) and its verdict on ours
   * have been read off the socket, rejects when either fails. Nothing else
   * may be read from the socket before it resolves; writing may go on.
   */
  verified?: Promise<void>;
  /** The relay's IP and port as this connection reached it, and our end's address: data connections go the same way. */
  endpoint: { host: string; port: number; localAddress?: string };
}

/**
 * TCP + TLS 1.3 + hello to one relay. The relay's certificate is
 * self-signed: its identity is the address proven in its hello, which the
 * caller may pin (expectRelay).
 */
export interface DialRelayOptions {
  /** Our role in the hello: `agent` (default), or `relay` for a relay-to-relay link (the peer must say `relay` too). */
  role?: 'agent' | 'relay';
  /** ms for TCP, TLS and both hellos together. */
  timeoutMs?: number;
  /**
   * Resolve as soon as TLS is up when the relay's certificate is bound to its
   * address (protocol/cert-binding.ts), after writing our hello and our
   * verdict: the caller's first frames then travel with our TLS Finished, one
   * round trip before the relay's hello could arrive. The caller must read
   * nothing before `verified` resolves (MuxSession's readAfter).
   */
  pipeline?: boolean;
  /** Aborts the dial (the agent is stopping): the socket is destroyed and the promise rejects at once. */
  signal?: AbortSignal;
}

export function dialRelay(target: HostPort, identity: Identity, expectRelay?: string, options: DialRelayOptions = {}): Promise<RelayConnection> {
  const timeoutMs = options.timeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    // TCP first, TLS only once it is up: a refused, reset or unanswered try costs no TLS state.
    // (A fleet retrying a relay that is full, or just restarted, makes thousands of those.)
    const tcp = netConnect({ host: target.host, port: target.port });
    let socket: TLSSocket | undefined;
    const timer = setTimeout(() => fail(new DiodeError('ETIMEDOUT', `no TLS handshake and hello within ${timeoutMs} ms`)), timeoutMs);
    // A path that drops packets answers no SYN: give up on this try early (SYN retries back off
    // 1, 2, 4 s, so a path that came back would wait for the next one) and let the caller retry.
    const connectMs = Math.min(RELAY_CONNECT_TIMEOUT_MS, timeoutMs);
    const connectTimer = setTimeout(() => fail(new DiodeError('ETIMEDOUT', `${formatHostPort(target)}: no TCP connection within ${connectMs} ms`)), connectMs);
    const fail = (err: Error) => {
      clearTimeout(timer);
      clearTimeout(connectTimer);
      options.signal?.removeEventListener('abort', onAbort);
      socket?.destroy();
      tcp.destroy();
      reject(err);
    };
    // A stopping agent does not wait out a silent relay's handshake deadline (10 s) before it exits.
    const onAbort = () => fail(new DiodeError('EABORTED', `${formatHostPort(target)}: dial stopped`));
    if (options.signal?.aborted) return onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const settled = () => options.signal?.removeEventListener('abort', onAbort);
    let secured = false;
    // Stays on: once TLS wraps the socket its errors surface there (a reset may reach this one first),
    // but any left here must not crash the process.
    tcp.once('error', (err) => fail(socket ? tlsError(target, err, secured) : connectError(err)));
    tcp.once('connect', () => {
      clearTimeout(connectTimer);
      tcp.setNoDelay(true);
      tcp.setKeepAlive(true, TCP_KEEPALIVE_MS);
      const tls = connect({
        socket: tcp,
        secureContext: relayClientContext(),
        rejectUnauthorized: false,
        servername: isIp(target.host) ? undefined : target.host,
      });
      socket = tls;
      // Stays on after the hello: an error before the caller's own handlers are on destroys the socket, not the process.
      tls.once('error', (err) => fail(tlsError(target, err, secured)));
      tls.once('secureConnect', () => {
        secured = true;
        const endpoint = { host: tcp.remoteAddress ?? target.host, port: tcp.remotePort ?? target.port, localAddress: tcp.localAddress };
        const bound = options.pipeline ? boundAddress(tls) : undefined;
        if (bound !== undefined) {
          // The relay is known from its certificate: a wrong one is refused before anything of ours is sent.
          if (expectRelay && bound !== expectRelay) return fail(pinRefusal(bound, expectRelay));
          clearTimeout(timer);
          settled();
          const verified = pipelinedHello(tls, identity, options.role ?? 'agent', bound, timeoutMs).catch((err: Error) => {
            tls.destroy();
            throw tlsError(target, err, true);
          });
          verified.catch(() => {}); // the caller's session handles it
          resolve({ socket: tls, relayAddress: bound, verified, endpoint });
          return;
        }
        exchangeHelloAccepting(tls, identity, options.role ?? 'agent', ['relay'], timeoutMs).then(
          ({ address: relayAddress }) => {
            clearTimeout(timer);
            settled();
            if (expectRelay && relayAddress !== expectRelay) {
              tls.destroy();
              reject(pinRefusal(relayAddress, expectRelay));
              return;
            }
            resolve({ socket: tls, relayAddress, endpoint });
          },
          fail,
        );
      });
    });
  });
}

function pinRefusal(proved: string, pinned: string): DiodeError {
  return new DiodeError('EPINNED', `relay proved address ${proved}, but it is pinned to ${pinned}; refused`);
}

/** The address the relay's TLS certificate is bound to, if it carries a binding that verifies. */
function boundAddress(tls: TLSSocket): string | undefined {
  const cert = tls.getPeerX509Certificate();
  return cert ? certBoundAddress(cert) : undefined;
}

let clientContext: SecureContext | undefined;

/**
 * The TLS client context for relays, made once per process: Node builds a
 * new OpenSSL context for every tls.connect that is not handed one (≈ 0.1 ms
 * and an allocation storm each), which a fleet retrying a busy relay paid
 * on every refused try. The relay's certificate is self-signed (its proof
 * is the hello), so the context holds only the version and suite order.
 */
function relayClientContext(): SecureContext {
  clientContext ??= createSecureContext({ minVersion: 'TLSv1.3', ciphers: tls13Ciphers() });
  return clientContext;
}

/** Node's codes for a relay that cannot be reached, in words a person acts on (the code stays, for searching). */
const CONNECT_FAILURES: Readonly<Record<string, string>> = {
  ENOTFOUND: 'the name does not resolve (ENOTFOUND): check its spelling',
  EAI_NONAME: 'the name does not resolve (EAI_NONAME): check its spelling',
  EAI_FAIL: 'the name does not resolve (EAI_FAIL): check its spelling',
  EAI_AGAIN: 'the name could not be resolved (EAI_AGAIN): no DNS answer, or a misspelt name',
  ECONNREFUSED: 'connection refused (ECONNREFUSED): nothing listens on that port',
  EHOSTUNREACH: 'no route to the host (EHOSTUNREACH): is the network up?',
  ENETUNREACH: 'no route to the network (ENETUNREACH): is the network up?',
  ECONNRESET: 'connection reset (ECONNRESET) before TLS',
};

/** A failure before TCP is up (DNS, refused, no route) in words (the link puts the relay before them); others pass through. */
export function connectError(err: Error): Error {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const words = CONNECT_FAILURES[code];
  return words ? new DiodeError(code, words) : err;
}

/** OpenSSL's reasons when the peer's first bytes are not a TLS record at all (an sshd's banner, an HTTP reply). */
const NOT_TLS = /wrong version number|packet length too long|unknown protocol|http request|record layer failure/i;

/**
 * A failure on the TLS socket before the hello is done, as one line: a peer that
 * does not talk TLS is named as such, never OpenSSL's dump, nor Node's words for a
 * peer that hung up on the ClientHello or reset the connection (`read ECONNRESET`).
 * `secured`: the TLS handshake had completed. Other errors (timeouts) pass
 * through unchanged. The caller retries every one of them alike.
 */
export function tlsError(target: HostPort, err: Error, secured = false): Error {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  // Node's "Client network socket disconnected before secure TLS connection was established": the peer
  // closed on our ClientHello, as a service that is not TLS often does (and a relay that is full, by a reset).
  if (code === 'ECONNRESET' && /before secure TLS connection/i.test(err.message)) {
    return new DiodeError('ENOTRELAY', `${formatHostPort(target)} closed the connection before TLS was set up (not a diode relay, or a relay that is full or restarting)`);
  }
  // A reset (or a write into one) once TLS is under way: Node says only "read ECONNRESET" / "write EPIPE".
  if (code === 'ECONNRESET' || code === 'EPIPE') {
    const during = secured ? 'before the diode hello was done' : 'during the TLS handshake';
    return new DiodeError('ENOTRELAY', `${formatHostPort(target)} closed the connection ${during} (not a diode relay, or a relay that is full or restarting)`);
  }
  if (!code.startsWith('ERR_SSL_')) return err;
  const reason = (err as Error & { reason?: string }).reason ?? code.replace(/^ERR_SSL_/, '').toLowerCase().replace(/_/g, ' ');
  const what = NOT_TLS.test(reason) || NOT_TLS.test(code.replace(/_/g, ' ')) ? 'no TLS' : `TLS handshake failed: ${reason}`;
  return new DiodeError('ENOTRELAY', `${formatHostPort(target)} does not speak the diode relay protocol (${what})`);
}

/** TLS 1.3 suites, fastest first, for a CPU without AES instructions (Raspberry Pi up to the Pi 4). */
const CHACHA_FIRST = 'TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384';

/**
 * The suite order this agent offers; the relay follows the client's order.
 * With AES instructions (x86 "aes" flag, ARM "aes" feature) Node's default
 * order (AES-GCM first) is as fast as ChaCha20 here; without them
 * ChaCha20-Poly1305 is several times faster, so it goes first. Undefined =
 * Node's default. `cpuinfo` is /proc/cpuinfo's text ('' when unreadable; a
 * parameter for tests).
 */
export function tls13Ciphers(cpuinfo: string = readCpuinfo()): string | undefined {
  const flags = cpuinfo.match(/^(?:flags|Features)\s*:.*$/gm);
  if (!flags) return undefined;
  return flags.some((line) => /\baes\b/.test(line)) ? undefined : CHACHA_FIRST;
}

let cpuinfoCache: string | undefined;

function readCpuinfo(): string {
  if (cpuinfoCache === undefined) {
    try {
      cpuinfoCache = readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      cpuinfoCache = '';
    }
  }
  return cpuinfoCache;
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}
