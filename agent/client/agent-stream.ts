import { connect, type Socket } from 'node:net';
import { lstatSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { DiodeError } from '../util/errors.ts';
import { CONTROL_DIR, processExists } from '../ops/control.ts';
import { MAX_STREAM_ANSWER_BYTES, STREAM_ANSWER_TIMEOUT_MS, STREAM_ROLES, STREAM_SOCKET_NAME, type StreamRequest } from '../ops/stream-protocol.ts';

// `diode proxy`'s side of the stream socket (protocol: ops/stream-protocol.ts).
// Loaded on every ssh connection before anything else of the proxy: node's
// net and fs only, no TLS, no crypto, no config.

/** A stream a running agent opened for us, and which agent. */
export interface AgentStream {
  socket: Socket;
  role: string;
  pid: number;
  /** How the stream ended, from its watch: why it broke, or undefined for an end (or no word). */
  broke: Promise<string | undefined>;
}

type Outcome = AgentStream | 'next';

/**
 * A stream from a running socksd or bind of this user with this state
 * directory, or undefined when there is none that takes it (none runs, a
 * stale socket, it refused): the caller then opens its own relay session.
 * Rejects with the agent's DiodeError when the agent took the request and
 * the dial failed (the line the caller's own dial would have printed).
 * Only sockets in a run directory this user owns, that this user owns, are
 * tried (root could connect to another user's: that user's key is not ours).
 */
export async function streamFromAgent(home: string, request: StreamRequest, notice: (line: string) => void): Promise<AgentStream | undefined> {
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined;
  if (uid === undefined) return undefined;
  const dir = join(home, CONTROL_DIR);
  let names: string[];
  try {
    const st = lstatSync(dir);
    if (!st.isDirectory() || st.uid !== uid) return undefined;
    names = readdirSync(dir);
  } catch {
    return undefined;
  }
  const found: Array<{ name: string; role: string; pid: number }> = [];
  for (const name of names) {
    const m = STREAM_SOCKET_NAME.exec(name);
    if (m && (STREAM_ROLES as readonly string[]).includes(m[1])) found.push({ name, role: m[1], pid: Number(m[2]) });
  }
  // socksd before bind; the newest of a role first.
  found.sort((a, b) => STREAM_ROLES.indexOf(a.role as never) - STREAM_ROLES.indexOf(b.role as never) || b.pid - a.pid);
  for (const agent of found) {
    const path = join(dir, agent.name);
    try {
      const st = lstatSync(path);
      if (!st.isSocket() || st.uid !== uid) continue;
    } catch {
      continue;
    }
    const outcome = await ask(path, request, notice, agent);
    if (outcome !== 'next') return outcome;
  }
  return undefined;
}

/** One agent: its stream, 'next' (stale, refused, silent, or gone before answering), or its dial's failure. */
function ask(path: string, request: StreamRequest, notice: (line: string) => void, agent: { role: string; pid: number }): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path, allowHalfOpen: true });
    let buffer: Buffer = Buffer.alloc(0);
    let taken = false;
    let settled = false;
    const settle = (outcome: Outcome | DiodeError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('data', onData);
      if (outcome instanceof DiodeError) {
        socket.destroy();
        reject(outcome);
      } else if (outcome === 'next') {
        socket.destroy();
        resolve('next');
      } else resolve(outcome);
    };
    const timer = setTimeout(() => settle('next'), STREAM_ANSWER_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      for (;;) {
        const nl = buffer.indexOf(0x0a);
        if (nl < 0) {
          if (buffer.length > MAX_STREAM_ANSWER_BYTES) settle('next');
          return;
        }
        const text = buffer.subarray(0, nl).toString('utf8');
        buffer = buffer.subarray(nl + 1);
        let answer: Record<string, unknown>;
        try {
          answer = JSON.parse(text) as Record<string, unknown>;
        } catch {
          return settle('next');
        }
        if (!taken) {
          if (answer.taken !== true) return settle('next');
          taken = true;
          clearTimeout(timer);
        } else if (typeof answer.notice === 'string') notice(answer.notice);
        else if (answer.ok === true) {
          socket.pause();
          // The device's first bytes may have come with the "ok".
          if (buffer.length > 0) socket.unshift(buffer);
          const broke = typeof answer.watch === 'string' ? watch(path, answer.watch) : Promise.resolve(undefined);
          return settle({ socket, ...agent, broke });
        } else if (answer.error && typeof answer.error === 'object') {
          const { code, message } = answer.error as Record<string, unknown>;
          return settle(new DiodeError(typeof code === 'string' ? code : 'EDIAL', typeof message === 'string' ? message : 'the dial failed'));
        } else return settle('next');
      }
    };
    socket.on('data', onData);
    // A stale socket (ECONNREFUSED: its agent is gone): removed when its process is, so the next proxy skips it.
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (!taken && err.code === 'ECONNREFUSED' && !processExists(agent.pid)) {
        try {
          unlinkSync(path);
        } catch {}
      }
      settle('next');
    });
    socket.once('end', () => settle('next'));
    socket.write(JSON.stringify(request) + '\n');
  });
}

/** The stream's verdict on a second connection (stream-protocol.ts, "watch"): why it broke, or undefined. */
function watch(path: string, token: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connect(path);
    let text = '';
    const done = (why: string | undefined) => {
      socket.destroy();
      resolve(why);
    };
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      const nl = text.indexOf('\n');
      if (nl < 0) {
        if (text.length > MAX_STREAM_ANSWER_BYTES) done(undefined);
        return;
      }
      try {
        const verdict = JSON.parse(text.slice(0, nl)) as Record<string, unknown>;
        done(typeof verdict.broke === 'string' ? verdict.broke : undefined);
      } catch {
        done(undefined);
      }
    });
    socket.once('end', () => done(undefined));
    socket.once('error', () => done(undefined));
    socket.write(JSON.stringify({ watch: token }) + '\n');
  });
}

