import type { TLSSocket } from 'node:tls';
import { verifyAuth, type Identity } from '../identity/index.ts';
import { readFrame, writeFrame, FrameError } from './frames.ts';
import { parseHello, parseReply, PROTOCOL_VERSION, type Hello, type HelloRole } from './messages.ts';
import { MAX_HELLO_BYTES } from './limits.ts';
import { errorMessage } from '../util/errors.ts';

/** Label and length of the TLS exporter value each side signs (RFC 8446 §7.5). */
export const EKM_LABEL = 'diode-auth';
export const EKM_LENGTH = 32;
/** No exporter context: the label alone names the purpose. */
const EKM_CONTEXT = Buffer.alloc(0);

export type LinkRole = 'agent' | 'relay';

/** Who must answer whom on a relay link. */
const PEER_ROLE: Readonly<Record<LinkRole, HelloRole>> = Object.freeze({ agent: 'relay', relay: 'agent' });

/**
 * Proves our identity on this TLS session and learns the peer's: both send a
 * hello with its public key and a signature over the session's exported
 * keying material, then verify the other's and take its address from the
 * key; then each answers the other's hello with a verdict frame, `ok` or
 * `error` (code `bad-request`, a one-line reason: version, role,
 * signature), and reads the peer's before anything else is sent, so a
 * refused side learns why instead of seeing its connection just close.
 * A signature made on another session (a replay, or a man in the middle
 * relaying hellos) does not verify, since each TLS session has its own
 * keying material. The role is part of the signed text, so a proof cannot
 * be reflected back as the other role's.
 */
export async function exchangeHello(socket: TLSSocket, identity: Identity, role: LinkRole, timeoutMs: number): Promise<string> {
  return (await exchangeHelloAccepting(socket, identity, role, [PEER_ROLE[role]], timeoutMs)).address;
}

/** A peer's proven address and the role its hello claimed (one of those accepted). */
export interface PeerProof {
  address: string;
  role: HelloRole;
}

/**
 * exchangeHello with the peer roles given, and an admission check on the
 * proven peer (a reason to refuse it, or undefined) that runs before our
 * verdict, so a refused peer reads why. A relay of a cluster accepts
 * `agent` and `relay`, and relay-to-relay links say `relay` on both sides.
 * Both sides of such a link sign the same text, so a peer could reflect our
 * own hello back to us: it proves our own address, which is why a relay
 * never admits itself as a peer.
 */
export async function exchangeHelloAccepting(
  socket: TLSSocket,
  identity: Identity,
  role: LinkRole,
  accept: readonly HelloRole[],
  timeoutMs: number,
  admit?: (peer: PeerProof) => string | undefined,
): Promise<PeerProof> {
  const ekm = socket.exportKeyingMaterial(EKM_LENGTH, EKM_LABEL, EKM_CONTEXT);
  const hello: Hello = { t: 'hello', v: PROTOCOL_VERSION, role, ...identity.signAuth(role, ekm) };
  writeFrame(socket, hello);
  let proof: PeerProof;
  try {
    const first = await readFrame(socket, MAX_HELLO_BYTES, timeoutMs);
    if (first.t === 'error') {
      socket.destroy();
      throw refusedBy(first);
    }
    const peer = parseHello(first);
    if (!accept.includes(peer.role)) throw new FrameError('EPROTO', `peer says it is a ${peer.role}, expected a ${accept.join(' or a ')}`);
    try {
      proof = { address: verifyAuth(peer.role, ekm, peer), role: peer.role };
    } catch {
      throw new FrameError('EAUTH', 'hello signature does not verify for this TLS session');
    }
    const refusal = admit?.(proof);
    if (refusal) throw new FrameError('EADMIT', refusal);
  } catch (err) {
    // The one-line reason goes back before the close.
    if (!socket.destroyed && socket.writable) {
      writeFrame(socket, { t: 'error', code: 'bad-request', message: `hello refused: ${errorMessage(err)}` });
      socket.end();
    }
    throw err;
  }
  writeFrame(socket, { t: 'ok' });
  const verdict = await readFrame(socket, MAX_HELLO_BYTES, timeoutMs);
  if (verdict.t !== 'ok') throw refusedBy(verdict);
  return proof;
}

function refusedBy(frame: Record<string, unknown>): FrameError {
  let message: string;
  try {
    const reply = parseReply(frame);
    message = reply.t === 'error' ? reply.message || reply.code : 'unexpected ok';
  } catch {
    message = 'a malformed answer to our hello';
  }
  return new FrameError('EREFUSED', `the peer refused our hello: ${message}`);
}
