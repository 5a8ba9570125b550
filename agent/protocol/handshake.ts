import type { TLSSocket } from 'node:tls';
import { verifyAuth, type Identity } from '../identity/index.ts';
import { readFrame, writeFrame, FrameError } from './frames.ts';
import { parseHello, PROTOCOL_VERSION, type Hello, type HelloRole } from './messages.ts';
import { MAX_HELLO_BYTES } from './limits.ts';

/** Label and length of the TLS exporter value each side signs (RFC 8446 §7.5). */
export const EKM_LABEL = 'diode-auth';
export const EKM_LENGTH = 32;
/** Label of the exporter value signed inside a data stream's end-to-end TLS session. */
export const E2E_EKM_LABEL = 'diode-e2e';
/** No exporter context: the label alone names the purpose. */
const EKM_CONTEXT = Buffer.alloc(0);

export type LinkRole = Hello['role'];

/** Who must answer whom: an agent talks to a relay, a client to a device, and back. */
const PEER_ROLE: Readonly<Record<HelloRole, HelloRole>> = Object.freeze({ agent: 'relay', relay: 'agent', client: 'device', device: 'client' });

/**
 * Proves our identity on this TLS session and learns the peer's: both send a
 * hello with its public key and a signature over the session's exported
 * keying material, then verify the other's and take its address from the
 * key. A signature made on another session (a replay, or a man in the
 * middle relaying hellos) does not verify, since each TLS session has its
 * own keying material. The role is part of the signed text, so a proof
 * cannot be reflected back as the other role's.
 * Used on the agent ↔ relay link (label "diode-auth") and inside data
 * streams between client and device (label "diode-e2e").
 */
export async function exchangeHello(socket: TLSSocket, identity: Identity, role: LinkRole, timeoutMs: number, label = EKM_LABEL): Promise<string> {
  const ekm = socket.exportKeyingMaterial(EKM_LENGTH, label, EKM_CONTEXT);
  const hello: Hello = { t: 'hello', v: PROTOCOL_VERSION, role, ...identity.signAuth(role, ekm) };
  writeFrame(socket, hello);
  const peer = parseHello(await readFrame(socket, MAX_HELLO_BYTES, timeoutMs));
  const expected = PEER_ROLE[role];
  if (peer.role !== expected) throw new FrameError('EPROTO', `peer says it is a ${peer.role}, expected a ${expected}`);
  try {
    return verifyAuth(peer.role, ekm, peer);
  } catch {
    throw new FrameError('EAUTH', 'peer hello signature does not verify');
  }
}
