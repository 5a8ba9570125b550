import type { TLSSocket } from 'node:tls';
import { recoverAuth, type Identity } from '../identity/index.ts';
import { readFrame, writeFrame, FrameError } from './frames.ts';
import { parseHello, PROTOCOL_VERSION, type Hello } from './messages.ts';
import { MAX_HELLO_BYTES } from './limits.ts';

/** Label and length of the TLS exporter value each side signs (RFC 8446 §7.5). */
export const EKM_LABEL = 'diode-auth';
export const EKM_LENGTH = 32;
/** No exporter context: the label alone names the purpose. */
const EKM_CONTEXT = Buffer.alloc(0);

export type LinkRole = Hello['role'];

/**
 * Proves our identity on this TLS session and learns the peer's: both send a
 * hello signing the session's exported keying material, then recover the
 * other's address from its signature. A signature made on another session
 * (a replay, or a man in the middle relaying hellos) does not verify, since
 * each TLS session has its own keying material.
 */
export async function exchangeHello(socket: TLSSocket, identity: Identity, role: LinkRole, timeoutMs: number): Promise<string> {
  const ekm = socket.exportKeyingMaterial(EKM_LENGTH, EKM_LABEL, EKM_CONTEXT);
  const hello: Hello = { t: 'hello', v: PROTOCOL_VERSION, role, sig: identity.signAuth(role, ekm) };
  writeFrame(socket, hello);
  const peer = parseHello(await readFrame(socket, MAX_HELLO_BYTES, timeoutMs));
  const expected: LinkRole = role === 'agent' ? 'relay' : 'agent';
  if (peer.role !== expected) throw new FrameError('EPROTO', `peer says it is a ${peer.role}, expected a ${expected}`);
  try {
    return recoverAuth(peer.role, ekm, peer.sig);
  } catch {
    throw new FrameError('EAUTH', 'peer hello signature does not verify');
  }
}
