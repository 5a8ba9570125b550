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
    if (!accept.includes(peer.role)) throw new FrameError('EPROTO', `peer says it is ${withArticle(peer.role)}, expected ${accept.map(withArticle).join(' or ')}`);
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

/**
 * Our side of the hello once the relay's TLS certificate has proven it is
 * `expected` (protocol/cert-binding.ts): our hello and our verdict on the
 * relay (ok: its certificate proved it) go out at once, so that whatever the
 * caller writes next travels with them. Then the relay's hello is read, and
 * must prove `expected` on this very session, and its verdict on ours. Any
 * failure rejects; the caller closes the connection (what it pipelined is
 * then lost with it, as it would be with a relay that refuses us).
 */
export async function pipelinedHello(socket: TLSSocket, identity: Identity, role: LinkRole, expected: string, timeoutMs: number): Promise<void> {
  const ekm = socket.exportKeyingMaterial(EKM_LENGTH, EKM_LABEL, EKM_CONTEXT);
  const hello: Hello = { t: 'hello', v: PROTOCOL_VERSION, role, ...identity.signAuth(role, ekm) };
  writeFrame(socket, hello);
  writeFrame(socket, { t: 'ok' });
  const first = await readFrame(socket, MAX_HELLO_BYTES, timeoutMs);
  if (first.t === 'error') throw refusedBy(first);
  const peer = parseHello(first);
  if (peer.role !== 'relay') throw new FrameError('EPROTO', `peer says it is a ${peer.role}, expected a relay`);
  let address: string;
  try {
    address = verifyAuth(peer.role, ekm, peer);
  } catch {
    throw new FrameError('EAUTH', 'hello signature does not verify for this TLS session');
  }
  if (address !== expected) throw new FrameError('EAUTH', `the relay's hello proves ${address}, but its certificate is bound to ${expected}`);
  const verdict = await readFrame(socket, MAX_HELLO_BYTES, timeoutMs);
  if (verdict.t !== 'ok') throw refusedBy(verdict);
}

/** `an agent`, `a relay`: a role as the reasons name it. */
export function withArticle(role: HelloRole): string {
  return `${role === 'agent' ? 'an' : 'a'} ${role}`;
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
