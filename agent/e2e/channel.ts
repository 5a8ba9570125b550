import { connect, TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { verifyAuth, type AuthProof, type Identity } from '../identity/index.ts';
import { readFrame, writeFrame } from '../protocol/frames.ts';
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
  constructor(code: 'EE2E_AUTH' | 'EE2E_PROTO', message: string) {
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
  if (hello.role !== expectRole) throw new E2EError('EE2E_AUTH', `peer says it is a ${hello.role}, expected a ${expectRole}`);
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

/** Device side: TLS server over the stream, then the hellos. The caller decides and sends the verdict. */
export function acceptE2E(stream: Duplex, identity: Identity): Promise<E2ESession> {
  holdFlights(stream, true);
  const socket = new TLSSocket(stream, { isServer: true, secureContext: e2eCredentials().server, requestCert: true, rejectUnauthorized: false });
  // A client that says nothing is dropped fast: it holds one of the device's stream slots.
  const silent = setTimeout(
    () => socket.destroy(new E2EError('EE2E_PROTO', `the client sent no end-to-end handshake within ${E2E_SILENT_CLIENT_TIMEOUT_MS} ms`)),
    E2E_SILENT_CLIENT_TIMEOUT_MS,
  );
  const heard = () => clearTimeout(silent);
  stream.once('data', heard);
  socket.once('close', heard);
  socket.once('close', () => holdFlights(stream, false));
  return handshake(stream, socket, 'secure', undefined, async () => {
    writeFrame(socket, ownHello(identity, 'device'));
    let peer: string;
    try {
      peer = verifyPeer(socket, parseHello(await readFrame(socket, MAX_HELLO_BYTES, E2E_HANDSHAKE_TIMEOUT_MS)), 'client');
    } catch (err) {
      // One line back before the close, so the client can say why.
      if (!socket.destroyed) {
        writeFrame(socket, { t: 'error', code: 'bad-request', message: `end-to-end hello refused: ${errorMessage(err)}` });
        socket.end();
      }
      throw err;
    }
    return { socket, peer, stream };
  });
}

/**
 * Client side: TLS client over the stream, the hellos, then the device's
 * verdict. Resolves with the cleartext socket once the device said ok.
 * Throws E2EError if the peer is not `expectDevice`, and returns the
 * device's refusal as `{ refused }` so the caller can map its code.
 */
export async function connectE2E(stream: Duplex, identity: Identity, expectDevice: string, answered?: Promise<unknown>): Promise<{ socket: TLSSocket } | { refused: Extract<Reply, { t: 'error' }> }> {
  holdFlights(stream, true);
  const socket = connect({ socket: stream, secureContext: e2eCredentials().client, rejectUnauthorized: false });
  socket.once('close', () => holdFlights(stream, false));
  const session = await handshake(stream, socket, 'secureConnect', answered, async () => {
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

/** Device side: the verdict frame, inside TLS. A refusal ends the session. */
export function sendVerdict(session: E2ESession, verdict: Reply): void {
  if (session.socket.destroyed) return;
  writeFrame(session.socket, verdict);
  // The verdict still joins the hello's write; what follows goes out at the end of each turn again.
  setImmediate(() => holdFlights(session.stream, false));
  if (verdict.t === 'error') session.socket.end();
}

/**
 * The TLS handshake and the hellos, within E2E_HANDSHAKE_TIMEOUT_MS of
 * `armed` (the relay's answer, when the client started its handshake right
 * behind its `connect`) or of now.
 */
function handshake(stream: Duplex, socket: TLSSocket, event: 'secure' | 'secureConnect', armed: Promise<unknown> | undefined, hellos: () => Promise<E2ESession>): Promise<E2ESession> {
  // Tearing down the TLS socket early must also free the stream under it, as an abort (RST).
  // A clean close (both close_notify alerts passed) is left to Node, which destroys the stream
  // after ending it: a mux stream then lingers for the peer's FIN instead of resetting it.
  socket.once('close', () => {
    if (socket.readableEnded && socket.writableFinished && !socket.errored) return;
    const under = stream as Duplex & { reset?: () => void };
    if (typeof under.reset === 'function') under.reset();
    else if (!stream.writableEnded) stream.destroy();
  });
  return new Promise<E2ESession>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let over = false;
    const arm = () => {
      if (!over) timer = setTimeout(() => fail(new E2EError('EE2E_PROTO', `no end-to-end handshake within ${E2E_HANDSHAKE_TIMEOUT_MS} ms`)), E2E_HANDSHAKE_TIMEOUT_MS);
    };
    if (armed) armed.then(arm, () => {});
    else arm();
    const fail = (err: Error) => {
      over = true;
      clearTimeout(timer);
      if (!socket.writableEnded) socket.destroy();
      reject(err instanceof DiodeError ? err : new E2EError('EE2E_PROTO', `end-to-end TLS: ${errorMessage(err)}`));
    };
    socket.once('error', fail);
    socket.once(event, () => {
      hellos().then(
        (session) => {
          over = true;
          clearTimeout(timer);
          socket.off('error', fail);
          socket.on('error', () => {});
          resolve(session);
        },
        fail,
      );
    });
  });
}
