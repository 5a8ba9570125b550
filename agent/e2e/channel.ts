import { connect, TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Identity } from '../identity/index.ts';
import { exchangeHello, E2E_EKM_LABEL } from '../protocol/handshake.ts';
import { readFrame, writeFrame } from '../protocol/frames.ts';
import { parseReply, type Reply } from '../protocol/messages.ts';
import { E2E_HANDSHAKE_TIMEOUT_MS, E2E_SILENT_CLIENT_TIMEOUT_MS, MAX_STREAM_HEADER_BYTES } from '../protocol/limits.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { deviceTlsContext } from './cert.ts';

/**
 * The end-to-end layer of a data stream (private and protected ports).
 *
 * After the device's `ok {e2e:true}`, client and device run TLS 1.3 over the
 * stream's bytes (the relay only sees ciphertext), then each sends a hello
 * signing exportKeyingMaterial(32, "diode-e2e") of that inner session with
 * its secp256k1 key (roles "client" and "device"). The device then sends one
 * verdict frame inside TLS: `ok`, or `error` (denied, refused). A relay that
 * terminates TLS itself cannot produce either side's signature over the
 * other side's keying material, so it can impersonate neither.
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
}

/** Device side: TLS server over the stream, then the hellos. The caller decides and sends the verdict. */
export async function acceptE2E(stream: Duplex, identity: Identity): Promise<E2ESession> {
  const secureContext = await deviceTlsContext();
  const socket = new TLSSocket(stream, { isServer: true, secureContext });
  // A client that says nothing is dropped fast: it holds one of the device's stream slots.
  const silent = setTimeout(
    () => socket.destroy(new E2EError('EE2E_PROTO', `the client sent no end-to-end handshake within ${E2E_SILENT_CLIENT_TIMEOUT_MS} ms`)),
    E2E_SILENT_CLIENT_TIMEOUT_MS,
  );
  const heard = () => clearTimeout(silent);
  stream.once('data', heard);
  socket.once('close', heard);
  return handshake(stream, socket, 'secure', identity, 'device');
}

/**
 * Client side: TLS client over the stream, the hellos, then the device's
 * verdict. Resolves with the cleartext socket once the device said ok.
 * Throws E2EError if the peer is not `expectDevice`, and returns the
 * device's refusal as `{ refused }` so the caller can map its code.
 */
export async function connectE2E(stream: Duplex, identity: Identity, expectDevice: string): Promise<{ socket: TLSSocket } | { refused: Extract<Reply, { t: 'error' }> }> {
  const socket = connect({ socket: stream, minVersion: 'TLSv1.3', rejectUnauthorized: false });
  const session = await handshake(stream, socket, 'secureConnect', identity, 'client');
  try {
    if (session.peer !== expectDevice) {
      throw new E2EError('EE2E_AUTH', `end-to-end check failed: the peer proved address ${session.peer}, not the dialled ${expectDevice} (a relay in the middle?)`);
    }
    const verdict = parseReply(await readFrame(socket, MAX_STREAM_HEADER_BYTES, E2E_HANDSHAKE_TIMEOUT_MS));
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
  if (verdict.t === 'error') session.socket.end();
}

function handshake(stream: Duplex, socket: TLSSocket, event: 'secure' | 'secureConnect', identity: Identity, role: 'client' | 'device'): Promise<E2ESession> {
  // Tearing down the TLS socket early must also free the stream under it.
  socket.once('close', () => {
    if (!stream.writableEnded) stream.destroy();
  });
  return new Promise<E2ESession>((resolve, reject) => {
    const timer = setTimeout(() => fail(new E2EError('EE2E_PROTO', `no end-to-end handshake within ${E2E_HANDSHAKE_TIMEOUT_MS} ms`)), E2E_HANDSHAKE_TIMEOUT_MS);
    const fail = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err instanceof DiodeError ? err : new E2EError('EE2E_PROTO', `end-to-end TLS: ${errorMessage(err)}`));
    };
    socket.once('error', fail);
    socket.once(event, () => {
      exchangeHello(socket, identity, role, E2E_HANDSHAKE_TIMEOUT_MS, E2E_EKM_LABEL).then(
        (peer) => {
          clearTimeout(timer);
          socket.off('error', fail);
          socket.on('error', () => {});
          resolve({ socket, peer });
        },
        (err) => fail(err instanceof DiodeError && err.code === 'EAUTH' ? new E2EError('EE2E_AUTH', errorMessage(err)) : err),
      );
    });
  });
}
