import { Socket } from 'node:net';
import { connect, TLSSocket } from 'node:tls';
import { abort } from '../util/pump.ts';
import type { Duplex } from 'node:stream';
import { verifyAuth, type AuthProof, type Identity } from '../identity/index.ts';
import { readFrame, writeFrame } from '../protocol/frames.ts';
import { withArticle } from '../protocol/handshake.ts';
import { parseHello, parseReply, PROTOCOL_VERSION, type Hello, type Reply } from '../protocol/messages.ts';
import { E2E_HANDSHAKE_TIMEOUT_MS, E2E_SILENT_CLIENT_TIMEOUT_MS, MAX_HELLO_BYTES, MAX_STREAM_HEADER_BYTES } from '../protocol/limits.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { certHash, e2eCredentials } from './cert.ts';
import { setBounded } from '../util/bounded-map.ts';

/**
 * The end-to-end layer of a data stream (every stream between two agents).
 *
 * After the relay's `ok {e2e:true}`, client and device run mutual TLS 1.3
 * over the stream's bytes (the relay only sees ciphertext), each with the
 * ephemeral Ed25519 certificate of its process (cert.ts). Each then sends a
 * hello: its secp256k1 key and a signature over the sha256 of *its own*
 * certificate (DER), `diode-e2e/v3 <role> 0x<hash>`. The receiver checks
 * that hash against the certificate the TLS handshake just authenticated,
 * so the hello proves "the holder of this secp256k1 key holds the key of
 * the certificate that signed this handshake". A relay that terminates TLS
 * itself can replay a hello, but not present the certificate it names
 * without that certificate's private key. The device then sends one verdict
 * frame inside TLS: `ok`, or `error` (denied, refused, bad-request).
 *
 * Cost per stream: one TLS 1.3 handshake (X25519 and two Ed25519
 * signatures); no secp256k1 work once a peer's hello was verified (the
 * result is cached by key, signature and certificate), and our own hello is
 * signed once per process.
 */
export class E2EError extends DiodeError {
  constructor(code: 'EE2E_AUTH' | 'EE2E_PROTO' | 'EE2E_SILENT', message: string) {
    super(code, message);
    this.name = 'E2EError';
  }
}

/** One side of an established end-to-end session. */
export interface E2ESession {
  /** Cleartext side: the port's bytes go through here. */
  socket: TLSSocket;
  /** The peer's address, proven inside this session. */
  peer: string;
  /** The stream the session runs over. */
  stream: Duplex;
}

type E2ERole = 'client' | 'device';

/** Verified hellos: `role pub sig hash` → address. Entries: peers' processes seen lately. */
const VERIFIED_HELLOS_MAX = 4096;
const verified = new Map<string, string>();
/** Our own hello per identity: signed once per process. */
const ownHellos = new WeakMap<Identity, Partial<Record<E2ERole, Hello>>>();

function ownHello(identity: Identity, role: E2ERole): Hello {
  let byRole = ownHellos.get(identity);
  if (!byRole) ownHellos.set(identity, (byRole = {}));
  return (byRole[role] ??= { t: 'hello', v: PROTOCOL_VERSION, role, ...identity.signAuth(role, e2eCredentials().certHash, 'diode-e2e') });
}

/** The address a peer's hello proves for the certificate its TLS handshake used. */
function verifyPeer(socket: TLSSocket, hello: Hello, expectRole: E2ERole): string {
  if (hello.role !== expectRole) throw new E2EError('EE2E_AUTH', `peer says it is ${withArticle(hello.role)}, expected ${withArticle(expectRole)}`);
  const cert = socket.getPeerX509Certificate();
  if (!cert) throw new E2EError('EE2E_AUTH', 'peer presented no TLS certificate');
  const hash = certHash(cert);
  const key = `${hello.role} ${hello.pub} ${hello.sig} ${hash.toString('hex')}`;
  const known = verified.get(key);
  if (known) return known;
  let address: string;
  try {
    address = verifyAuth(hello.role, hash, hello as AuthProof, 'diode-e2e');
  } catch (err) {
    throw new E2EError('EE2E_AUTH', `peer hello does not prove its key for this TLS session: ${errorMessage(err)}`);
  }
  setBounded(verified, key, address, VERIFIED_HELLOS_MAX);
  return address;
}

/**
 * During the handshake the stream's frames wait one more round of
 * immediates (MuxStream.lateFlush): Node writes each TLS record after the
 * previous one in an immediate of its own, and the records of one flight
 * (tickets and hello, hello and verdict) should leave in one write.
 */
function holdFlights(stream: Duplex, on: boolean): void {
  const mux = stream as Duplex & { lateFlush?: boolean };
  if (typeof mux.lateFlush === 'boolean') mux.lateFlush = on;
}

/** ms a side that refused (a hello, or with its verdict) keeps its end of the session open so that its reason arrives. */
const REFUSAL_LINGER_MS = 1_000;

/** TLS sockets whose close after our close_notify is an orderly one, not an abort (they refused, and said why). */
const refusing = new WeakSet<TLSSocket>();

/**
 * Ends a session after a refusal: close_notify and FIN go out behind the
 * reason, the peer gets REFUSAL_LINGER_MS to read it and close, then our
 * side closes without a reset (a reset can discard the reason unread).
 */
function refuseAndClose(socket: TLSSocket): void {
  refusing.add(socket);
  socket.end();
  setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
}

/**
 * Device side: TLS server over the stream (a mux stream, or a data
 * connection's socket: native TLS on its TCP handle), then the hellos. The
 * caller decides and sends the verdict.
 */
export async function acceptE2E(stream: Duplex, identity: Identity): Promise<E2ESession> {
  // A client that says nothing is dropped fast: it holds one of the device's stream slots.
  let silent: NodeJS.Timeout | undefined;
  const tooSilent = () => new E2EError('EE2E_PROTO', `the client sent no end-to-end handshake within ${E2E_SILENT_CLIENT_TIMEOUT_MS} ms`);
  if (stream instanceof Socket) {
    // Wrapped once its first byte is there (TLS takes over the TCP handle and picks up what the
    // socket holds already), so that the silence is timed on the socket itself.
    await firstBytes(stream, E2E_SILENT_CLIENT_TIMEOUT_MS, tooSilent);
  } else {
    silent = setTimeout(() => socket.destroy(tooSilent()), E2E_SILENT_CLIENT_TIMEOUT_MS);
  }
  holdFlights(stream, true);
  const socket = new TLSSocket(stream, { isServer: true, secureContext: e2eCredentials().server, requestCert: true, rejectUnauthorized: false });
  const heard = () => clearTimeout(silent);
  if (silent !== undefined) stream.once('data', heard);
  socket.once('close', heard);
  socket.once('close', () => holdFlights(stream, false));
  return handshake({ stream, socket, event: 'secure' }, async () => {
    writeFrame(socket, ownHello(identity, 'device'));
    let peer: string;
    try {
      peer = verifyPeer(socket, parseHello(await readFrame(socket, MAX_HELLO_BYTES, E2E_HANDSHAKE_TIMEOUT_MS)), 'client');
    } catch (err) {
      // One line back before the close (close_notify and FIN, no reset), so the client can say why.
      if (!socket.destroyed) {
        writeFrame(socket, { t: 'error', code: 'bad-request', message: `end-to-end hello refused: ${errorMessage(err)}` });
        refuseAndClose(socket);
      }
      throw err;
    }
    return { socket, peer, stream };
  });
}

/** Resolves once `socket` has a byte to read; rejects if it ends, fails or stays silent for `ms`. */
function firstBytes(socket: Socket, ms: number, silent: () => Error): Promise<void> {
  if (socket.readableLength > 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('close', onClose);
      socket.off('error', done);
      if (err) {
        abort(socket);
        reject(err);
      } else resolve();
    };
    const onReadable = () => {
      if (socket.readableLength > 0) done();
      else if (socket.read() === null && socket.readableEnded) done(new E2EError('EE2E_PROTO', 'the client closed before its end-to-end handshake'));
    };
    const onClose = () => done(new E2EError('EE2E_PROTO', 'the client closed before its end-to-end handshake'));
    const timer = setTimeout(() => done(silent()), ms);
    socket.on('readable', onReadable);
    socket.once('close', onClose);
    socket.once('error', done);
  });
}

/**
 * Client side: TLS client over the stream, the hellos, then the device's
 * verdict. Resolves with the cleartext socket once the device said ok.
 * Throws E2EError if the peer is not `expectDevice`, and returns the
 * device's refusal as `{ refused }` so the caller can map its code.
 */
export interface ConnectE2EOptions {
  /** The relay's answer: the handshake's deadlines count from it (the ClientHello went out before it). */
  answered?: Promise<unknown>;
  /**
   * ms after the answer by which the device's TLS server flight must have
   * arrived (it leaves the device with its ok), else E2EError `EE2E_SILENT`:
   * the connection under the session carries nothing (a data connection
   * that died without a word), and the caller may try another way.
   */
  flightTimeoutMs?: number;
}

export async function connectE2E(stream: Duplex, identity: Identity, expectDevice: string, options: ConnectE2EOptions = {}): Promise<{ socket: TLSSocket } | { refused: Extract<Reply, { t: 'error' }> }> {
  holdFlights(stream, true);
  const socket = connect({ socket: stream, secureContext: e2eCredentials().client, rejectUnauthorized: false });
  socket.once('close', () => holdFlights(stream, false));
  const session = await handshake({ stream, socket, event: 'secureConnect', armed: options.answered, flightTimeoutMs: options.flightTimeoutMs }, async () => {
    writeFrame(socket, ownHello(identity, 'client'));
    const peer = verifyPeer(socket, parseHello(await readFrame(socket, MAX_HELLO_BYTES, E2E_HANDSHAKE_TIMEOUT_MS)), 'device');
    return { socket, peer, stream };
  });
  try {
    if (session.peer !== expectDevice) {
      throw new E2EError('EE2E_AUTH', `end-to-end check failed: the peer proved address ${session.peer}, not the dialled ${expectDevice} (a relay in the middle?)`);
    }
    const verdict = parseReply(await readFrame(socket, MAX_STREAM_HEADER_BYTES, E2E_HANDSHAKE_TIMEOUT_MS));
    holdFlights(stream, false);
    if (verdict.t === 'error') {
      socket.destroy();
      return { refused: verdict };
    }
    return { socket };
  } catch (err) {
    socket.destroy();
    throw err instanceof DiodeError ? err : new E2EError('EE2E_PROTO', `end-to-end verdict: ${errorMessage(err)}`);
  }
}

/** Device side: the verdict frame, inside TLS. A refusal ends the session (orderly: the client reads why). */
export function sendVerdict(session: E2ESession, verdict: Reply): void {
  if (session.socket.destroyed) return;
  writeFrame(session.socket, verdict);
  // The verdict still joins the hello's write; what follows goes out at the end of each turn again.
  setImmediate(() => holdFlights(session.stream, false));
  if (verdict.t === 'error') refuseAndClose(session.socket);
}

/**
 * The TLS handshake and the hellos, within E2E_HANDSHAKE_TIMEOUT_MS of
 * `armed` (the relay's answer, when the client started its handshake right
 * behind its `connect`) or of now.
 */
function handshake(
  h: { stream: Duplex; socket: TLSSocket; event: 'secure' | 'secureConnect'; armed?: Promise<unknown>; flightTimeoutMs?: number },
  hellos: () => Promise<E2ESession>,
): Promise<E2ESession> {
  const { stream, socket, event, armed } = h;
  // Tearing down the TLS socket early must also free the stream under it, as an abort (RST: a
  // mux stream is reset, a data connection's TCP socket too). A clean close (both close_notify
  // alerts passed, or ours after a refusal, whose reason must not be discarded by a reset) is
  // left to Node, which ends and destroys the stream: a mux stream then lingers for the peer's
  // FIN instead of resetting it.
  socket.once('close', () => {
    if (!socket.errored && socket.writableFinished && (socket.readableEnded || refusing.has(socket))) {
      if (!stream.destroyed) stream.destroy();
      return;
    }
    abort(stream);
  });
  return new Promise<E2ESession>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let flight: NodeJS.Timeout | undefined;
    let over = false;
    /** The TLS handshake is done (the device's flight arrived, perhaps before the relay's answer was read). */
    let secured = false;
    const arm = () => {
      if (over) return;
      timer = setTimeout(() => fail(new E2EError('EE2E_PROTO', `no end-to-end handshake within ${E2E_HANDSHAKE_TIMEOUT_MS} ms`)), E2E_HANDSHAKE_TIMEOUT_MS);
      const ms = h.flightTimeoutMs;
      if (ms !== undefined && !secured) flight = setTimeout(() => fail(new E2EError('EE2E_SILENT', `no TLS answer from the device within ${ms} ms of the relay's ok`)), ms);
    };
    if (armed) armed.then(arm, () => {});
    else arm();
    const fail = (err: Error) => {
      if (over) return;
      over = true;
      clearTimeout(timer);
      clearTimeout(flight);
      if (!socket.writableEnded) abort(socket);
      reject(err instanceof DiodeError ? err : new E2EError('EE2E_PROTO', `end-to-end TLS: ${errorMessage(err)}`));
    };
    socket.once('error', fail);
    socket.once(event, () => {
      secured = true;
      clearTimeout(flight);
      hellos().then(
        (session) => {
          over = true;
          clearTimeout(timer);
          clearTimeout(flight);
          socket.off('error', fail);
          socket.on('error', () => {});
          resolve(session);
        },
        fail,
      );
    });
  });
}
