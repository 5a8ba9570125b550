import { connect } from 'node:net';
import { userInfo } from 'node:os';
import type { PortMapping } from './port-spec.ts';
import { formatHostPort } from '../util/hostport.ts';
import { errorMessage } from '../util/errors.ts';

/** ms publish waits for a local target to accept a test connection at start. */
export const LOCAL_PROBE_TIMEOUT_MS = 2_000;
/** The port clients ask for when they write plain `ssh host`. */
const SSH_PORT = 22;
/** Below this uid an account is a system or service account, not the one a person logs in with. */
const FIRST_PERSON_UID = 1000;

/** `2022→22 (public)`, `192.168.1.20:80→8080 (private, 2 addresses)`: what each published port forwards to. */
export function describeMappings(mappings: PortMapping[]): string {
  return mappings
    .map((m) => {
      const local = m.host === '127.0.0.1' ? String(m.localPort) : `${formatHostPort({ host: m.host, port: m.localPort })}`;
      const who = m.mode === 'private' ? `private, ${m.allow.length} address${m.allow.length === 1 ? '' : 'es'}` : m.mode;
      return `${local}\u2192${m.remotePort} (${who})`;
    })
    .join(', ');
}

/**
 * The ssh line another machine (running `diode socksd`) uses to reach this
 * device's sshd, when one of the published ports is ssh (remote or local 22).
 */
export function sshLine(mappings: PortMapping[], address: string, user = loginUser()): string | undefined {
  const ssh = mappings.find((m) => m.remotePort === SSH_PORT) ?? mappings.find((m) => m.localPort === SSH_PORT);
  if (!ssh) return undefined;
  const port = ssh.remotePort === SSH_PORT ? '' : `-p ${ssh.remotePort} `;
  return `ssh ${port}-o "ProxyCommand=nc -X 5 -x localhost:1080 %h %p" ${user}@${address.toLowerCase()}.diode`;
}

function loginUser(): string {
  try {
    const info = userInfo();
    return info.uid >= FIRST_PERSON_UID ? info.username : '<user>';
  } catch {
    return '<user>';
  }
}

/** Why a local target did not take a test connection, or undefined when it did. */
export function probeLocalTarget(host: string, port: number, timeoutMs = LOCAL_PROBE_TIMEOUT_MS): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (problem: string | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(problem);
    };
    const timer = setTimeout(() => done(`does not answer within ${timeoutMs} ms`), timeoutMs);
    // Close as a polite client does: read what the service says and half-close, so it sees an
    // orderly end (FIN), never a reset from a destroy with its greeting still unread.
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.on('error', () => {});
      socket.resume();
      socket.end();
      socket.once('close', () => resolve(undefined));
      setTimeout(() => socket.destroy(), timeoutMs).unref();
    });
    socket.once('error', (err: NodeJS.ErrnoException) =>
      done(err.code === 'ECONNREFUSED' ? 'refuses connections (nothing listens there)' : err.code === 'ENOTFOUND' ? 'cannot be resolved' : errorMessage(err)),
    );
  });
}

/** Warns, once at start, about every local target that does not accept a connection; never blocks publishing. */
export async function warnUnreachableTargets(mappings: PortMapping[], warn: (line: string) => void): Promise<void> {
  await Promise.all(
    mappings.map(async (m) => {
      const problem = await probeLocalTarget(m.host, m.localPort);
      if (problem) warn(`local target ${formatHostPort({ host: m.host, port: m.localPort })} of port ${m.remotePort} ${problem}; its streams are refused until it accepts connections`);
    }),
  );
}
