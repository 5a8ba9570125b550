import { createServer, connect, type Server, type Socket } from 'node:net';
import { chmodSync, closeSync, constants, fchmodSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../util/log.ts';
import { errorMessage } from '../util/errors.ts';
import { AGENT_ROLES, type AgentRole, type AgentStatus } from './status.ts';
import { STREAM_SOCKET_NAME } from './stream-protocol.ts';

// Each running agent serves its status on a Unix socket in the state
// directory: <home>/run/<role>-<pid>.sock, mode 0600 in a 0700 directory, so
// only the owner (and root) may connect. The protocol is one JSON line: the
// server writes its AgentStatus on connect and ends; it reads nothing.

export const CONTROL_DIR = 'run';
/** bytes: largest status a reader accepts (a relay with many counters stays far below). */
export const MAX_STATUS_BYTES = 1024 * 1024;
/** ms a reader waits for an agent's answer before treating its socket as dead. */
export const STATUS_TIMEOUT_MS = 2_000;
const SOCKET_NAME = /^([a-z]+)-(\d+)\.sock$/;

export function controlDir(home: string): string {
  return join(home, CONTROL_DIR);
}

export function controlSocketPath(home: string, role: AgentRole, pid = process.pid): string {
  return join(controlDir(home), `${role}-${pid}.sock`);
}

export type ControlSocket = LocalSocket;

/**
 * Serves `report()` on this agent's control socket. Failing to create it
 * (a read-only home, a path over the 107-byte limit of Unix sockets) is
 * logged and never stops the agent.
 */
export async function startControlSocket(home: string, role: AgentRole, report: () => AgentStatus, log: Logger): Promise<ControlSocket | undefined> {
  const server: Server = createServer((socket) => {
    socket.on('error', () => {});
    let body: string;
    try {
      body = JSON.stringify(report());
    } catch (err) {
      body = JSON.stringify({ error: errorMessage(err) });
    }
    socket.end(body + '\n');
  });
  return serveOwnerOnly(home, controlSocketPath(home, role), server, log, { name: 'control socket', without: `diode status will not see this ${role}`, prepare: () => removeStaleSockets(home) });
}

/** A Unix socket an agent serves in its run directory. */
export interface LocalSocket {
  path: string;
  /** Removes the socket file, destroys the connections in `live` and closes the server. */
  close(): Promise<void>;
}

/**
 * Serves `server` on the Unix socket `path` in `home`'s run directory
 * (openRunDir; the socket 0600), once a file an earlier process with our
 * pid left there is removed (`prepare` runs first, in the directory). The
 * server keeps no process alive. Any failure is one warning naming the
 * socket and what the agent goes without, and undefined: a socket never
 * stops an agent (a read-only home, a path over the 107-byte limit).
 */
export async function serveOwnerOnly(home: string, path: string, server: Server, log: Logger, what: { name: string; without: string; prepare?: () => void; live?: Set<Socket> }): Promise<LocalSocket | undefined> {
  try {
    openRunDir(controlDir(home));
    what.prepare?.();
    try {
      unlinkSync(path); // a previous process with our pid (after a reboot) left it
    } catch {}
    await listenOwnerOnly(server, path);
  } catch (err) {
    log.warn(`no ${what.name} at ${path} (${what.without}): ${errorMessage(err)}`);
    return undefined;
  }
  server.unref();
  let closed: Promise<void> | undefined;
  return {
    path,
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        try {
          unlinkSync(path);
        } catch {}
        for (const s of what.live ?? []) s.destroy();
        server.close(() => resolve());
      })),
  };
}

/**
 * Listens on the Unix socket `path` and makes it 0600 (in the 0700 run dir:
 * only the owner, and root, may connect). On failure the server is closed
 * and the error thrown.
 */
export async function listenOwnerOnly(server: Server, path: string): Promise<void> {
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(path, 0o600);
  } catch (err) {
    server.close();
    throw err;
  }
}

/**
 * Makes `dir` (0700) or takes the one there, without following a link: a
 * symbolic link or a directory of another user is refused, so an agent run
 * as root in a directory another user can write to never chmods, nor puts
 * its socket in, a place that user chose. The mode is set through a
 * descriptor opened with O_NOFOLLOW, on the directory that was checked.
 */
export function openRunDir(dir: string): void {
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  if (lstatSync(dir).isSymbolicLink()) throw new Error(`${dir} is a symbolic link; not following it (remove it, and let the agent make the directory)`);
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    const st = fstatSync(fd);
    const uid = typeof process.getuid === 'function' ? process.getuid() : st.uid;
    if (st.uid !== uid) throw new Error(`${dir} belongs to uid ${st.uid}, not to this user (uid ${uid}); give this agent a state directory of its own (--home DIR)`);
    fchmodSync(fd, 0o700);
  } finally {
    closeSync(fd);
  }
}

/** Control and stream sockets of processes that no longer exist (killed with SIGKILL, power cut): removed. */
export function removeStaleSockets(home: string): void {
  const stale = listSockets(home).sockets.filter(({ pid }) => !processExists(pid)).map(({ path }) => path);
  try {
    for (const name of readdirSync(controlDir(home))) {
      const m = STREAM_SOCKET_NAME.exec(name);
      if (m && !processExists(Number(m[2]))) stale.push(join(controlDir(home), name));
    }
  } catch {}
  for (const path of stale) {
    try {
      unlinkSync(path);
    } catch {}
  }
}

/** EACCES, EPERM: this user may not read it (another user's agent: its user or root may). */
function isDenied(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EACCES' || code === 'EPERM';
}

type SocketFile = { path: string; role: AgentRole; pid: number };

/** The control sockets in home's run directory; `denied` when this user may not list it. */
function listSockets(home: string): { sockets: SocketFile[]; denied: boolean } {
  let names: string[];
  try {
    names = readdirSync(controlDir(home));
  } catch (err) {
    return { sockets: [], denied: isDenied(err) };
  }
  const out: SocketFile[] = [];
  for (const name of names) {
    const m = SOCKET_NAME.exec(name);
    if (!m || !AGENT_ROLES.includes(m[1] as AgentRole)) continue;
    out.push({ path: join(controlDir(home), name), role: m[1] as AgentRole, pid: Number(m[2]) });
  }
  return { sockets: out.sort((a, b) => AGENT_ROLES.indexOf(a.role) - AGENT_ROLES.indexOf(b.role) || a.pid - b.pid), denied: false };
}

/** Whether process `pid` exists (EPERM: it does, under another user). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, under another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Asks one control socket for its status; undefined when nobody answers (a
 * stale socket), 'denied' when this user may not connect to it.
 */
export function readStatus(path: string, timeoutMs = STATUS_TIMEOUT_MS): Promise<AgentStatus | 'denied' | undefined> {
  return new Promise((resolve) => {
    const socket = connect(path);
    let text = '';
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    const finish = (value: AgentStatus | 'denied' | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(value);
    };
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (text.length > MAX_STATUS_BYTES) finish(undefined);
    });
    socket.once('end', () => {
      try {
        const parsed = JSON.parse(text) as AgentStatus;
        finish(parsed && typeof parsed === 'object' && typeof parsed.role === 'string' ? parsed : undefined);
      } catch {
        finish(undefined);
      }
    });
    socket.once('error', (err) => finish(isDenied(err) ? 'denied' : undefined));
  });
}

export interface StatusReport {
  statuses: AgentStatus[];
  /** The run directory or sockets this user may not read: agents of another user, state unknown. */
  denied: string[];
}

/**
 * The status of every agent running with this home. A socket whose process
 * is gone, or that refuses connections, is removed on the way.
 */
export async function readAllStatuses(home: string): Promise<StatusReport> {
  const { sockets, denied: dirDenied } = listSockets(home);
  if (dirDenied) return { statuses: [], denied: [controlDir(home)] };
  const denied: string[] = [];
  const results = await Promise.all(
    sockets.map(async (s) => {
      const status = await readStatus(s.path);
      if (status === 'denied') {
        denied.push(s.path);
        return undefined;
      }
      if (!status && !processExists(s.pid)) {
        try {
          unlinkSync(s.path);
        } catch {}
      }
      return status;
    }),
  );
  return { statuses: results.filter((s): s is AgentStatus => s !== undefined), denied: denied.sort() };
}
